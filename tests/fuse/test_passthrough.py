"""Dumps through FUSE passthrough on a real mount: a file created (or truncated to empty) for
writing goes to a staging file, and the kernel writes it there without a WRITE reaching the
daemon; reads, mmap, truncate, fsync and fallocate behave as on any file; the settler stores
it as frames once nobody has it open; -o nopassthrough sends every byte through the daemon."""

from __future__ import annotations

import ctypes
import errno
import json
import mmap
import os

import pytest

from lzfs.core.backing import punch_hole
from lzfs.fuse.passthrough import PATCHED
from tests.conftest import Mounted, _mounted, lzfs_cmd

pytestmark = pytest.mark.skipif(not PATCHED, reason="pyfuse3 without passthrough "
                                "(scripts/setup builds it: third_party/build-fuse.sh)")


def _stats(m: Mounted) -> dict:
    return json.loads((m.mnt / ".lzfs" / "stats.json").read_text())


def _writes(m: Mounted) -> int:
    return sum(n for k, n in _stats(m)["requests"].items() if k.startswith("write"))


def test_a_new_file_is_written_by_the_kernel_to_a_staging_file_then_settled(mounted):
    m = mounted
    assert _stats(m)["passthrough"] == "on"
    (m.mnt / "snap").mkdir()
    data = os.urandom(8 << 20) + b"restore me " * 400_000
    with open(m.mnt / "snap" / "pages-1.img", "wb") as f:
        f.write(data[:1 << 20])
        assert os.fstat(f.fileno()).st_size == 1 << 20  # sizes are right while it is written
        f.write(data[1 << 20:])
        f.flush()
        os.fsync(f.fileno())
    assert _writes(m) == 0  # not one WRITE came to the daemon
    assert len(list((m.store / "staging").iterdir())) == 1
    assert (m.mnt / "snap" / "pages-1.img").read_bytes() == data
    m.settle()
    assert not list((m.store / "staging").iterdir())
    st = os.stat(m.mnt / "snap" / "pages-1.img")
    assert st.st_size == len(data) and st.st_blocks * 512 < len(data)  # compressed now
    m.umount()
    assert "store is clean" in lzfs_cmd("fsck", str(m.store)).stdout
    m.mount()
    assert (m.mnt / "snap" / "pages-1.img").read_bytes() == data


def test_mmap_truncate_and_punching_holes_work_on_staged_and_settled_files(mounted):
    m = mounted
    p = m.mnt / "f"
    data = bytearray(os.urandom(6 * 4096 + 100))
    fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        with mmap.mmap(fd, len(data)) as mm:
            mm[4096:8192] = b"m" * 4096
            mm.flush()
        data[4096:8192] = b"m" * 4096
        punch_hole(fd, 8192, 4096)  # CRIU's --auto-dedup
        data[8192:12288] = bytes(4096)
        os.ftruncate(fd, 5 * 4096 + 7)
        del data[5 * 4096 + 7:]
        assert os.pread(fd, len(data) + 10, 0) == data
    finally:
        os.close(fd)
    m.settle()
    fd = os.open(p, os.O_RDWR)
    try:
        punch_hole(fd, 100, 5000)  # a settled file: runs give their pages back
        data[100:5100] = bytes(5000)
        assert os.pread(fd, len(data), 0) == data
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.fallocate(fd, 0, 0, 1 << 20) != 0  # other modes: refused, not ignored
        assert ctypes.get_errno() == errno.EOPNOTSUPP
    finally:
        os.close(fd)
    m.remount()
    assert p.read_bytes() == data


def test_without_passthrough_every_byte_goes_through_the_daemon(tmp_path):
    m = _mounted(tmp_path, ("-o", "nopassthrough"))
    try:
        assert _stats(m)["passthrough"] == "off: --no-passthrough"
        (m.mnt / "f").write_bytes(os.urandom(3 << 20))
        assert _writes(m) > 0
        assert not (m.store / "staging").exists() or not list((m.store / "staging").iterdir())
    finally:
        m.umount()
