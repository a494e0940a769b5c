"""Acknowledged writes read back through a real mount: the two corruptions found by a
property test and by a file-system exerciser, each pinned as the shortest case that showed it.
(tests/fuse/test_exerciser_mount.py runs the exerciser itself.)"""

from __future__ import annotations

import mmap
import os

PAGE = 4096


def test_a_page_of_zeros_written_over_stored_data_reads_back_as_zeros(mounted):
    f = mounted.mnt / "f"
    data = bytearray(os.urandom(2 * PAGE + 1))  # ends in a partial page
    f.write_bytes(data)
    with open(f, "r+b") as fh:
        fh.seek(PAGE)
        fh.write(bytes(PAGE))
    data[PAGE:2 * PAGE] = bytes(PAGE)
    assert f.read_bytes() == data
    mounted.remount()
    assert f.read_bytes() == data


def test_a_mapped_write_then_truncates_leave_zeros_past_the_cut(mounted):
    """A page written back from a shared mapping inside the file's last run, a truncate down
    into it, a truncate up: the bytes between the cut and the old end are zeros."""
    f = mounted.mnt / "f"
    data = bytearray(os.urandom(10 * PAGE + 1))
    f.write_bytes(data)
    page = os.urandom(PAGE)
    cut = 4 * PAGE + 1616
    fd = os.open(f, os.O_RDWR)
    try:
        with mmap.mmap(fd, len(data)) as m:
            m[4 * PAGE:5 * PAGE] = page
            m.flush()
        data[4 * PAGE:5 * PAGE] = page
        os.ftruncate(fd, cut)
        os.ftruncate(fd, len(data))
        data[cut:] = bytes(len(data) - cut)
        assert os.pread(fd, len(data), 0) == data
    finally:
        os.close(fd)
    assert f.read_bytes() == data
    mounted.remount()
    assert f.read_bytes() == data
