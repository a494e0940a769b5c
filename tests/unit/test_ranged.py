"""The ranged GET path against a small HTTP server that misbehaves on purpose: what a real S3
server does only when it is overloaded, behind an odd proxy, or cut off mid-body."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from lzfs.objectstore import ranged
from lzfs.objectstore.ranged import RangedGetter, Unreachable, Unsupported

BODY = bytes(range(256)) * 64  # 16 KiB


class _Server(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: list[str] = []  # what the next requests get; "ok" once it runs out
        self.requests = 0


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: object) -> None:
        pass  # quiet, as pytest shows stderr of failures only anyway

    def do_GET(self) -> None:
        self.server.requests += 1
        how = self.server.script.pop(0) if self.server.script else "ok"
        first, last = (int(x) for x in self.headers["Range"][6:].split("-"))
        part = BODY[first:last + 1]
        if how == "503":
            self._send(503, b"<Error><Code>SlowDown</Code></Error>")
        elif how == "403":
            self._send(403, b"<Error><Code>AccessDenied</Code></Error>")
        elif how == "416" or first >= len(BODY):
            self._send(416, b"<Error><Code>InvalidRange</Code></Error>")
        elif how == "whole":  # a server that ignores Range
            self._send(200, BODY)
        elif how == "cut":  # announces the range, sends half, hangs up
            self.send_response(206)
            self.send_header("Content-Length", str(len(part)))
            self.end_headers()
            self.wfile.write(part[:len(part) // 2])
            self.close_connection = True
        else:
            self._send(206, part)

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server(monkeypatch) -> Iterator[_Server]:
    monkeypatch.setattr(ranged, "BACKOFF", 0.01)
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    srv = _Server()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def _getter(srv: _Server) -> RangedGetter:
    port = srv.server_address[1]
    return RangedGetter(lambda key: f"http://127.0.0.1:{port}/bucket/{key}?X-Amz-Signature=x")


def _get(getter: RangedGetter, offset: int, n: int) -> bytes:
    buf = bytearray(n)
    got = getter.get_into("obj", offset, memoryview(buf))
    return bytes(buf[:got])


def test_ranges_the_end_and_past_it_on_one_connection(server):
    g = _getter(server)
    assert _get(g, 100, 1000) == BODY[100:1100]
    assert _get(g, len(BODY) - 10, 1000) == BODY[-10:]  # the object ends first
    assert _get(g, len(BODY) + 5, 1000) == b""          # 416: nothing there
    assert server.requests == 3


def test_a_server_that_ignores_the_range_still_gives_the_right_bytes(server):
    g = _getter(server)
    server.script = ["whole"]
    assert _get(g, 5000, 300) == BODY[5000:5300]
    assert _get(g, 0, 10) == BODY[:10]  # and the next request is on a clean connection


def test_transient_failures_are_retried_and_then_reported(server):
    g = _getter(server)
    server.script = ["503", "cut"]
    assert _get(g, 0, 8000) == BODY[:8000]
    assert server.requests == 3
    server.script = ["503", "cut", "503"]
    with pytest.raises(Unreachable, match="SlowDown"):
        _get(g, 0, 8000)


def test_other_answers_are_left_to_boto3(server):
    g = _getter(server)
    server.script = ["403"]
    with pytest.raises(Unsupported):
        _get(g, 0, 10)
    assert _get(g, 0, 10) == BODY[:10]


def test_a_proxy_is_left_to_boto3(server, monkeypatch):
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(Unsupported, match="proxy"):
        _get(_getter(server), 0, 10)
    assert server.requests == 0


def test_nothing_listening_is_unreachable(server):
    port = server.server_address[1]
    server.shutdown()
    server.server_close()
    g = RangedGetter(lambda key: f"http://127.0.0.1:{port}/bucket/{key}")
    with pytest.raises(Unreachable):
        _get(g, 0, 10)
