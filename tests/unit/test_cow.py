"""Which pages images lzfs serves through the page cache: those CRIU reads page by page
(a forked worker's copy-on-write memory), decided from the images alone."""

from __future__ import annotations

import pytest
import trio

from lzfs.criu import cow
from lzfs.criu import images as I
from tests.conftest import criu_image

ANON, PRIV = 0x20 | 0x02, I.VMA_AREA_REGULAR | I.VMA_ANON_PRIVATE  # MAP_ANONYMOUS|MAP_PRIVATE
MiB = 1 << 20


def _mm(exe: int, vmas: list[tuple[int, int, int, int]]) -> bytes:
    return criu_image(I.MM_MAGIC, [("mm_entry", {"exe_file_id": exe, "vmas": [
        {"start": s, "end": e, "status": st, "flags": fl} for s, e, st, fl in vmas]})])


def _pagemap(pages_id: int, runs: list[tuple[int, int]]) -> bytes:
    return criu_image(I.PAGEMAP_MAGIC, [("pagemap_head", {"pages_id": pages_id})] + [
        ("pagemap_entry", {"vaddr": v, "nr_pages": n, "flags": I.PE_PRESENT}) for v, n in runs])


def _images(child_vmas, child_exe: int = 7) -> dict[str, bytes]:
    """A parent (pid 10, pages-1) with a 64 MiB private anonymous mapping, and a child (pid 11,
    pages-2) that stored 64 MiB at the same place and 16 MiB of its own."""
    return {
        "pstree.img": criu_image(I.PSTREE_MAGIC, [("pstree_entry", {"pid": 10, "ppid": 1}),
                                              ("pstree_entry", {"pid": 11, "ppid": 10})]),
        "pagemap-10.img": _pagemap(1, [(0x10000000, 64 * MiB // I.PAGE)]),
        "pagemap-11.img": _pagemap(2, [(0x10000000, 64 * MiB // I.PAGE),
                                       (0x40000000, 16 * MiB // I.PAGE)]),
        "mm-10.img": _mm(7, [(0x10000000, 0x10000000 + 64 * MiB, PRIV, ANON)]),
        "mm-11.img": _mm(child_exe, child_vmas),
    }


def _decide(imgs: dict[str, bytes], name: bytes) -> bool:
    async def read(n: str, limit: int | None = None) -> bytes | None:
        data = imgs.get(n)
        return data if data is None or limit is None else data[:limit]
    return trio.run(cow.read_page_by_page, name, read)


FORKED = [(0x10000000, 0x10000000 + 64 * MiB, PRIV, ANON),
          (0x40000000, 0x40000000 + 16 * MiB, PRIV, ANON)]


def test_a_forked_workers_image_is_read_page_by_page_and_its_parents_is_not() -> None:
    imgs = _images(FORKED)
    assert _decide(imgs, b"pages-2.img")  # 64 of its 80 MiB are shared with the parent
    assert not _decide(imgs, b"pages-1.img")  # the root task has no parent in the dump
    child = I.parse_mm_task(imgs["mm-11.img"])
    parent = I.parse_mm_task(imgs["mm-10.img"])
    assert cow.inherited_share(child, parent, I.parse_pagemap(imgs["pagemap-11.img"])) == 0.8


def test_no_sharing_when_the_child_exec_d_or_its_mappings_differ() -> None:
    assert not _decide(_images(FORKED, child_exe=8), b"pages-2.img")  # another executable
    moved = [(0x20000000, 0x20000000 + 64 * MiB, PRIV, ANON), FORKED[1]]
    assert not _decide(_images(moved), b"pages-2.img")
    shorter = [(0x10000000, 0x10000000 + 32 * MiB, PRIV, ANON), FORKED[1]]
    assert not _decide(_images(shorter), b"pages-2.img")  # same start, another end
    shared = [(0x10000000, 0x10000000 + 64 * MiB, I.VMA_AREA_REGULAR | I.VMA_ANON_SHARED,
               ANON), FORKED[1]]
    assert not _decide(_images(shared), b"pages-2.img")  # shared memory is not COW


FILE_PRIV = I.VMA_AREA_REGULAR | I.VMA_FILE_PRIVATE


def _parent_child(parent_vma: tuple, child_vma: tuple) -> dict[str, bytes]:
    """Like _images, with the one shared mapping given for each side."""
    imgs = _images([child_vma, FORKED[1]])
    imgs["mm-10.img"] = _mm(7, [parent_vma])
    return imgs


@pytest.mark.parametrize("parent_vma, child_vma, shared", [
    # the same private anonymous mapping: inherited
    ((0x10000000, 0x14000000, PRIV, ANON), (0x10000000, 0x14000000, PRIV, ANON), True),
    # hugetlb on either side is never COW-restored page by page
    ((0x10000000, 0x14000000, PRIV, ANON | 0x40000), (0x10000000, 0x14000000, PRIV, ANON),
     False),
    # grows-down on one side only
    ((0x10000000, 0x14000000, PRIV, ANON | 0x100), (0x10000000, 0x14000000, PRIV, ANON),
     False),
    # the parent's mapping is shared memory, not private
    ((0x10000000, 0x14000000, I.VMA_AREA_REGULAR | I.VMA_ANON_SHARED, ANON),
     (0x10000000, 0x14000000, PRIV, ANON), False),
])
def test_the_inherited_mapping_rule_is_criu_s(parent_vma, child_vma, shared) -> None:
    assert _decide(_parent_child(parent_vma, child_vma), b"pages-2.img") is shared


def test_file_backed_private_mappings_are_inherited_only_from_the_same_file() -> None:
    def vma(shmid: int) -> dict:
        return {"start": 0x10000000, "end": 0x14000000, "status": FILE_PRIV, "flags": 0x02,
                "shmid": shmid}
    imgs = _images(FORKED)
    for child_file, shared in ((5, True), (6, False)):
        imgs["mm-10.img"] = criu_image(I.MM_MAGIC, [("mm_entry", {"exe_file_id": 7,
                                                                  "vmas": [vma(5)]})])
        imgs["mm-11.img"] = criu_image(I.MM_MAGIC, [("mm_entry", {"exe_file_id": 7, "vmas": [
            vma(child_file), {"start": 0x40000000, "end": 0x41000000, "status": PRIV,
                              "flags": ANON}]})])
        assert _decide(imgs, b"pages-2.img") is shared


def test_the_share_counts_each_stored_page_once_across_runs_and_mappings() -> None:
    # inherited: [16, 32) and [48, 64) MiB; stored runs: [0, 24), [30, 50), [60, 70) MiB
    vmas = [I.Vma(a * MiB, b * MiB, PRIV, 0, ANON) for a, b in ((16, 32), (48, 64))]
    runs = [(0, 24), (30, 50), (60, 70)]
    pm = I.parse_pagemap(_pagemap(2, [(a * MiB, (b - a) * MiB // I.PAGE) for a, b in runs]))
    share = cow.inherited_share((7, vmas), (7, vmas), pm)
    assert share == (8 + 2 + 2 + 4) / (24 + 20 + 10)


def test_a_pagemap_head_is_read_from_a_prefix() -> None:
    big = _pagemap(9, [(i * 0x2000, 1) for i in range(5000)])
    assert len(big) > cow.HEAD_BYTES
    assert I.pagemap_pages_id(big[:cow.HEAD_BYTES]) == 9


def test_a_small_inherited_part_keeps_direct_io() -> None:
    imgs = _images(FORKED)
    imgs["pagemap-11.img"] = _pagemap(2, [(0x10000000, 3 * MiB // I.PAGE),
                                          (0x40000000, 16 * MiB // I.PAGE)])
    assert not _decide(imgs, b"pages-2.img")  # 3 of 19 MiB: under a fifth


def test_missing_or_broken_images_mean_direct_io() -> None:
    imgs = _images(FORKED)
    for name in ("pstree.img", "pagemap-11.img", "mm-10.img", "mm-11.img"):
        assert not _decide({k: v for k, v in imgs.items() if k != name}, b"pages-2.img")
        assert not _decide({**imgs, name: imgs[name][:11]}, b"pages-2.img")
    assert not _decide(imgs, b"pagemap-11.img") and not _decide(imgs, b"pages-x.img")
