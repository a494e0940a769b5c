"""READs answered inside pyfuse3 from the frame cache (fast reads, core/readmap.py) on a real
mount: most of a sequential read never reaches the Python handler, every byte read is the
file's, and a change (write, truncate, punch) is never answered from the map before it;
-o nofast_reads answers every READ in the handler."""

from __future__ import annotations

import json
import mmap
import os

import pytest

from lzfs.core.backing import punch_hole
from lzfs.fuse.fastread import PATCHED
from tests.conftest import Mounted, _mounted

pytestmark = pytest.mark.skipif(not PATCHED, reason="pyfuse3 without fast reads "
                                "(scripts/setup builds it: third_party/build-fuse.sh)")
MiB = 1 << 20


def _fast(m: Mounted) -> dict:
    return json.loads((m.mnt / ".lzfs" / "stats.json").read_text())["fast_reads"]


def _direct_read(path, off: int = 0, size: int | None = None) -> bytes:
    """O_DIRECT reads of 1 MiB (aligned buffer): every byte is a READ the daemon answers,
    none comes from the kernel's page cache."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        end = os.fstat(fd).st_size if size is None else off + size
        buf = mmap.mmap(-1, MiB)
        out = bytearray()
        pos = off
        while pos < end:
            n = os.preadv(fd, [buf], pos)
            if n <= 0:
                break
            out += buf[:n]
            pos += n
        return bytes(out[:end - off])
    finally:
        os.close(fd)


def _content() -> bytearray:
    rnd = os.urandom
    parts = []
    for i in range(96):  # 24 MiB: random, zero, text and repeated pages
        parts.append([rnd(MiB // 4), bytes(MiB // 4), b"fast read %d " % i * 20_000,
                      rnd(4096) * 64][i % 4][:MiB // 4])
    return bytearray(b"".join(parts))


def _write_settled(m: Mounted, data: bytes) -> None:
    with open(m.mnt / "f", "wb") as f:
        f.write(data)
    m.settle()


def test_sequential_reads_are_answered_without_the_handler_and_are_right(mounted):
    m = mounted
    data = _content()
    _write_settled(m, data)
    before = _fast(m)
    assert _direct_read(m.mnt / "f") == data
    assert _direct_read(m.mnt / "f") == data  # again: the frames are cached now
    after = _fast(m)
    answered = after["answered"] - before["answered"]
    assert answered > 2 * len(data) // MiB // 2, after  # most of the 48 READs
    assert after["bytes"] - before["bytes"] >= len(data)


def test_a_change_is_never_answered_from_the_map_made_before_it(mounted):
    m = mounted
    data = _content()
    _write_settled(m, data)
    p = m.mnt / "f"
    assert _direct_read(p) == data  # mapped, and every frame in the cache
    # an overwrite inside the mapped, cached range
    with open(p, "r+b") as f:
        f.seek(5 * MiB + 123)
        f.write(b"X" * 70_000)
    data[5 * MiB + 123:5 * MiB + 123 + 70_000] = b"X" * 70_000
    assert _direct_read(p, 5 * MiB, 2 * MiB) == bytes(data[5 * MiB:7 * MiB])
    assert _direct_read(p) == data
    # shorter, then longer again: the tail reads as zeros
    os.truncate(p, 9 * MiB + 5)
    os.truncate(p, 12 * MiB)
    data[9 * MiB + 5:] = bytes(len(data) - 9 * MiB - 5)
    del data[12 * MiB:]
    assert _direct_read(p, 8 * MiB, 4 * MiB) == bytes(data[8 * MiB:12 * MiB])
    assert _direct_read(p) == data
    # a hole punched
    fd = os.open(p, os.O_RDWR)
    try:
        punch_hole(fd, MiB + 17, 3 * MiB)
    finally:
        os.close(fd)
    data[MiB + 17:4 * MiB + 17] = bytes(3 * MiB)
    assert _direct_read(p, 0, 6 * MiB) == bytes(data[:6 * MiB])
    # appended to
    with open(p, "ab") as f:
        f.write(b"tail" * 1000)
    data += b"tail" * 1000
    assert _direct_read(p) == data
    assert _fast(m)["answered"] > 0
    m.remount()
    assert _direct_read(p) == data


def test_without_fast_reads_the_handler_answers_every_read(tmp_path):
    m = _mounted(tmp_path, ("-o", "nofast_reads"))
    try:
        data = _content()
        _write_settled(m, data)
        assert _direct_read(m.mnt / "f") == data
        assert _fast(m)["answered"] == 0
    finally:
        m.umount()
