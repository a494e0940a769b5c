"""Ranged GETs of pack segments straight into a caller's buffer, over presigned URLs.

Why not boto3's ``get_object`` for these: a cold-node restore fetches half a GiB per GiB it
restores, and boto3 hands each 4 MiB range back as a new ``bytes`` that urllib3 assembled from
fresh allocations. On this kind of VM a fresh anonymous page costs microseconds to fault in, so
the GET threads spent about 1.3 CPU-s per GiB fetched, twice what ``readinto`` a reused buffer
costs (0.65, measured side by side on SeaweedFS; docs/benchmarks.md). Those are CPU-seconds taken
from the restore on a two-core node.

boto3 still signs: a presigned URL (SigV4, computed locally) is made once per object and reused
for a few minutes, so credentials, regions and endpoints stay boto3's business. The request
itself is a plain HTTP/1.1 GET on a keep-alive connection per thread. What this path does not
handle it leaves to boto3 (the caller falls back to ``get``): proxies, and any answer other
than the bytes, the end of the object, or a transient failure, so that error messages stay the
ones ``S3Backend`` maps.
"""

from __future__ import annotations

import http.client
import os
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable
from urllib.parse import urlsplit

from lzfs.objectstore.protocol import fill

URL_LIFETIME = 900   # seconds a presigned URL is valid
URL_REUSE = 300      # seconds one is used for: well inside its lifetime, whatever the clock
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 60.0
ATTEMPTS = 3         # as boto3's "standard" retry mode: the first try and two more
BACKOFF = 0.2        # seconds before the second try, doubled before the third


class Unsupported(Exception):
    """This request is boto3's to make (a proxy, or a status this path does not map)."""


class Unreachable(Exception):
    """Every attempt failed on the connection or with a 5xx/429 (the message of the last)."""


class RangedGetter:
    """``get_into(key, offset, buf)`` for one bucket; thread-safe, one connection per thread
    and host."""

    def __init__(self, presign: Callable[[str], str]) -> None:
        self._presign = presign  # object key -> a presigned GET URL for it
        self._urls: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._ssl: ssl.SSLContext | None = None

    def get_into(self, key: str, offset: int, buf: memoryview) -> int:
        """Fill ``buf`` with the object's bytes from ``offset``; the count (less than
        ``len(buf)`` at the end of the object, 0 past it)."""
        if not len(buf):
            return 0
        last = ""
        for attempt in range(ATTEMPTS):
            if attempt:
                time.sleep(BACKOFF * 2 ** (attempt - 1))
            try:
                return self._once(key, offset, buf)
            except (OSError, http.client.HTTPException, _Retry) as exc:
                self._drop_connection()
                last = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise Unreachable(last)

    # ---- one request -------------------------------------------------------------------------

    def _once(self, key: str, offset: int, buf: memoryview) -> int:
        scheme, host, port, target = self._url(key)
        conn = self._connection(scheme, host, port)
        conn.request("GET", target,
                     headers={"Range": f"bytes={offset}-{offset + len(buf) - 1}"})
        resp = conn.getresponse()
        if resp.status in (200, 206):  # 200: a server that ignored Range sends it all
            got = _read_body(resp, buf, skip=offset if resp.status == 200 else 0)
            if not resp.isclosed():  # the rest of a body we do not want: not on this connection
                self._drop_connection()
            return got
        body = resp.read()
        if resp.status == 416:  # the range starts at or past the end of the object
            return 0
        if resp.status >= 500 or resp.status == 429:
            raise _Retry(f"HTTP {resp.status}: {_code(body)}")
        if resp.status == 403:  # perhaps the URL expired (a clock that jumped): a fresh one
            with self._lock:    # next time, and boto3 maps this answer now
                self._urls.pop(key, None)
        raise Unsupported(f"HTTP {resp.status}")

    def _url(self, key: str) -> tuple[str, str, int, str]:
        now = time.monotonic()
        with self._lock:
            made, url = self._urls.get(key, (0.0, ""))
        if not url or now - made > URL_REUSE:
            url = self._presign(key)
            with self._lock:
                if len(self._urls) > 4096:  # keys of a long-gone restore
                    self._urls.clear()
                self._urls[key] = (now, url)
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise Unsupported(f"presigned URL scheme {u.scheme}")
        port = u.port or (443 if u.scheme == "https" else 80)
        if _proxied(u.scheme, u.hostname):
            raise Unsupported("a proxy is configured")
        return u.scheme, u.hostname, port, f"{u.path}?{u.query}"

    def _connection(self, scheme: str, host: str, port: int) -> http.client.HTTPConnection:
        """This thread's keep-alive connection (a getter serves one bucket: one host)."""
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "addr", None) == (scheme, host, port):
            return conn
        self._drop_connection()
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE"))
            conn = http.client.HTTPSConnection(host, port, timeout=CONNECT_TIMEOUT,
                                               context=self._ssl)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=CONNECT_TIMEOUT)
        conn.connect()
        assert conn.sock is not None
        conn.sock.settimeout(READ_TIMEOUT)
        self._local.conn, self._local.addr = conn, (scheme, host, port)
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()


class _Retry(Exception):
    """A transient answer (5xx, 429) or a body cut short: worth another attempt."""


def _read_body(resp: http.client.HTTPResponse, buf: memoryview, skip: int) -> int:
    """Read the response body into ``buf`` after discarding ``skip`` bytes of it; the count.
    A body that ends before its Content-Length is a transient failure; one longer than ``buf``
    (a server that ignored the range's end) is read only as far as ``buf`` holds, and the
    response is left open (the caller drops the connection)."""
    while skip:  # only for a 200 answer to a ranged GET: reuse buf as scratch
        k = resp.readinto(buf[:min(skip, len(buf))])
        if not k:
            return 0  # the object ends before the offset
        skip -= k
    got = fill(resp.readinto, buf)
    if got < len(buf) and resp.length:  # bytes the server announced and did not send
        raise _Retry(f"the body ended {resp.length} bytes early")
    return got


def _code(body: bytes) -> str:
    """The <Code> of an S3 error body, for a one-line message."""
    start = body.find(b"<Code>")
    end = body.find(b"</Code>", start)
    return body[start + 6:end].decode(errors="replace") if 0 <= start < end else "no error code"


def _proxied(scheme: str, host: str) -> bool:
    proxies = urllib.request.getproxies()
    return scheme in proxies and not urllib.request.proxy_bypass(host)
