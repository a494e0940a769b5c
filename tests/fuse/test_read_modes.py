"""How a read-only open is served: direct_io (CRIU's large forward preadv arrive whole), or
the page cache for a pages image CRIU will read page by page (lzfs/criu/cow.py). Observed
from outside, through the READ sizes the daemon counts in .lzfs/stats.json."""

from __future__ import annotations

import json
import os

from tests.unit.test_cow import FORKED, _images


def _reads(mounted) -> dict[str, int]:
    js = json.loads((mounted.mnt / ".lzfs" / "stats.json").read_text())
    return {k: n for k, n in js["requests"].items() if k.startswith("read")}


def _read_one_page(mounted, path) -> dict[str, int]:
    """READ requests (size bucket -> count) that one 4 KiB pread at offset 0 caused."""
    before = _reads(mounted)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert len(os.pread(fd, 4096, 0)) == 4096
    finally:
        os.close(fd)
    after = _reads(mounted)
    return {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}


def test_a_forked_workers_pages_image_is_read_through_the_page_cache(mounted):
    snap = mounted.mnt / "snap"
    snap.mkdir()
    for name, data in _images(FORKED).items():  # pid 10 (pages-1) and its fork 11 (pages-2)
        (snap / name).write_bytes(data)
    for n in (1, 2):
        (snap / f"pages-{n}.img").write_bytes(os.urandom(1 << 20))
    mounted.settle()  # staged files are the kernel's to read (passthrough): settled ones not
    parent = _read_one_page(mounted, snap / "pages-1.img")
    assert parent == {"read<=4096": 1}, parent  # direct_io: the pread arrives as it is
    child = _read_one_page(mounted, snap / "pages-2.img")
    assert child and all(int(k[6:]) > 4096 for k in child), child  # readahead: larger READs


def test_without_criu_images_around_reads_stay_direct(mounted):
    (mounted.mnt / "pages-2.img").write_bytes(os.urandom(1 << 20))
    mounted.settle()
    assert _read_one_page(mounted, mounted.mnt / "pages-2.img") == {"read<=4096": 1}
    (mounted.mnt / "pstree.img").write_bytes(b"not an image at all")
    mounted.settle()
    assert _read_one_page(mounted, mounted.mnt / "pages-2.img") == {"read<=4096": 1}
