"""Ranged GETs into a buffer (the segment cache's path) against a real S3 server: the same bytes
as boto3's ``get``, the same errors, and a clear one when the server is gone."""

from __future__ import annotations

import random
import time

import pytest

from lzfs.objectstore.backend import open_backend
from lzfs.objectstore.protocol import NoSuchObject, RemoteError


def _into(backend, key: str, offset: int, n: int) -> bytes:
    buf = bytearray(n)
    got = backend.get_into(key, offset, memoryview(buf))
    return bytes(buf[:got])


def test_get_into_gives_what_get_gives(seaweed, bucket):
    backend = open_backend(bucket, seaweed.endpoint)
    blob = random.Random(5).randbytes(3 * (1 << 20) + 17)
    backend.put("packs/x.pack", blob)
    for off, n in [(0, 1 << 20), (12345, 2 << 20), (len(blob) - 100, 4 << 20)]:
        assert _into(backend, "packs/x.pack", off, n) == blob[off:off + n] \
            == backend.get("packs/x.pack", off, min(n, len(blob) - off))
    assert _into(backend, "packs/x.pack", len(blob), 10) == b""  # past the end: nothing
    with pytest.raises(NoSuchObject):
        _into(backend, "packs/none.pack", 0, 10)


def test_get_into_a_dead_server_is_a_clear_error_and_works_again(seaweed, bucket):
    backend = open_backend(bucket, seaweed.endpoint)
    backend.put("packs/y.pack", b"y" * 1000)
    assert _into(backend, "packs/y.pack", 0, 10) == b"y" * 10  # a connection to reuse
    seaweed.kill()
    try:
        t0 = time.monotonic()
        with pytest.raises(RemoteError, match="cannot reach the object store"):
            _into(backend, "packs/y.pack", 0, 10)
        assert time.monotonic() - t0 < 10
    finally:
        seaweed.start()
    assert _into(backend, "packs/y.pack", 990, 100) == b"y" * 10


def test_the_gets_bench_fetches_every_byte_three_ways(seaweed, capsys):
    """`scripts/bench --profile gets` (its own SeaweedFS): one row per way, and a table."""
    from lzfs.testing import bench_gets

    rows = bench_gets.main(8 << 20, rounds=1)
    assert [r["way"] for r in rows] == list(bench_gets.WAYS)
    assert all(r["cpu_s_per_gib"] > 0 and r["wall_s_per_gib"] > 0 for r in rows)
    assert "reused" in capsys.readouterr().out
