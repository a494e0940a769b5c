"""How a read-only open is served (lzfs/criu/opener.py): CRIU restoring with direct_io (its
large forward preadv arrive whole), the page cache for a pages image CRIU will read page by
page (lzfs/criu/cow.py), and the page cache, kept across opens, for everyone else (a second
read costs no FUSE round trip). Observed from outside, through the READ sizes the daemon
counts in .lzfs/stats.json; the CRIU opener is a process whose program is named `criu`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.unit.test_cow import FORKED, _images

READ_ONE_PAGE = ("import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); "
                 "assert len(os.pread(fd, 4096, 0)) == 4096")


@pytest.fixture
def as_criu(tmp_path):
    """A command line that runs Python under a program name `criu`, as CRIU's are."""
    link = tmp_path / "bin" / "criu"
    link.parent.mkdir()
    link.symlink_to(sys.executable)
    return [str(link), "-c"]


def _reads(mounted) -> dict[str, int]:
    js = json.loads((mounted.mnt / ".lzfs" / "stats.json").read_text())
    return {k: n for k, n in js["requests"].items() if k.startswith("read")}


def _read_one_page(mounted, path, runner: list[str] | None = None) -> dict[str, int]:
    """READ requests (size bucket -> count) that one 4 KiB pread at offset 0 caused."""
    before = _reads(mounted)
    subprocess.run([*(runner or [sys.executable, "-c"]), READ_ONE_PAGE, str(path)],
                   check=True)
    after = _reads(mounted)
    return {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}


def test_a_forked_workers_pages_image_is_read_through_the_page_cache(mounted, as_criu):
    snap = mounted.mnt / "snap"
    snap.mkdir()
    for name, data in _images(FORKED).items():  # pid 10 (pages-1) and its fork 11 (pages-2)
        (snap / name).write_bytes(data)
    for n in (1, 2):
        (snap / f"pages-{n}.img").write_bytes(os.urandom(1 << 20))
    mounted.settle()  # staged files are the kernel's to read (passthrough): settled ones not
    parent = _read_one_page(mounted, snap / "pages-1.img", as_criu)
    assert parent == {"read<=4096": 1}, parent  # direct_io: the pread arrives as it is
    child = _read_one_page(mounted, snap / "pages-2.img", as_criu)
    assert child and all(int(k[6:]) > 4096 for k in child), child  # readahead: larger READs


def test_criu_reads_directly_and_anyone_else_through_the_page_cache_it_keeps(mounted, as_criu):
    (mounted.mnt / "pages-2.img").write_bytes(os.urandom(1 << 20))
    (mounted.mnt / "pstree.img").write_bytes(b"not an image at all")
    mounted.settle()
    assert _read_one_page(mounted, mounted.mnt / "pages-2.img", as_criu) == {"read<=4096": 1}
    first = _read_one_page(mounted, mounted.mnt / "pages-2.img")
    assert first and all(int(k[6:]) > 4096 for k in first), first  # readahead
    assert _read_one_page(mounted, mounted.mnt / "pages-2.img") == {}  # kept: no READ at all


def test_a_file_rewritten_through_passthrough_is_not_read_from_a_stale_cache(mounted):
    p = mounted.mnt / "f"
    p.write_bytes(b"a" * 65536)
    mounted.settle()
    assert p.read_bytes() == b"a" * 65536  # now in the kernel's page cache
    p.write_bytes(b"b" * 65536)  # O_TRUNC: empty, so written through passthrough
    mounted.settle()
    assert p.read_bytes() == b"b" * 65536
