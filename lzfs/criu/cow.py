"""Which pages images CRIU reads one page at a time on restore, so that lzfs serves them
through the page cache instead of with direct_io.

A forked worker's private mappings that it still shares copy-on-write with its parent (CRIU
calls them inherited: same start and end, both private, the same anonymous and grows-down
flags, the same file, and both tasks run the same executable) are restored by reading the
child's pages one 4 KiB ``pread`` at a time and comparing each with the parent's page, so
that equal pages stay shared. Through a direct_io open every such pread is a FUSE round trip:
a parent with two forked workers sharing 512 MiB took 283,000 READs and 3.3x the plain
restore. Through the page cache, the kernel's readahead turns them into 128 KiB READs and the
restore is as fast as plain. CRIU's usual path, large forward ``preadv`` calls, is the
other way round: 1.65 s with direct_io against 3.58 s through the page cache for 2 GiB.

So lzfs decides per pages image, at open: the page cache when at least PAGE_CACHE_SHARE of
its pages lie in inherited mappings. Break-even, from the two measurements: page by page
costs about 4 s per GiB more with direct_io, large reads about 1 s per GiB more through the
page cache, so the page cache wins from about a fifth of the image on.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from lzfs.criu.images import (
    VMA_ANON_PRIVATE,
    VMA_AREA_REGULAR,
    VMA_FILE_PRIVATE,
    Pagemap,
    Vma,
    pagemap_pages_id,
    parse_mm_task,
    parse_pagemap,
    parse_pstree,
)
from lzfs.errors import ImageFormatError

PAGE_CACHE_SHARE = 0.2
HEAD_BYTES = 4096  # a pagemap's head entry (its pages id) is in its first few bytes
_PAGES = re.compile(rb"pages-(\d+)\.img")

_MAP_GROWSDOWN = 0x100
_MAP_ANONYMOUS = 0x20
_MAP_HUGETLB = 0x40000


def task_of_pages(pstree: list[tuple[int, int]], pages_ids: dict[int, int],
                  pages_id: int) -> tuple[int, int] | None:
    """(pid, parent pid) of the task whose pagemap names pages-``pages_id``.img (``pages_ids``
    maps pid -> the pages id its pagemap names), if that task has its parent in the dump (only
    then can it share pages with it)."""
    parents = dict(pstree)
    for pid, pid_pages in pages_ids.items():
        if pid_pages == pages_id and pid in parents:
            ppid = parents[pid]
            return (pid, ppid) if ppid in parents else None
    return None


def _private(v: Vma) -> bool:
    return bool(v.status & VMA_AREA_REGULAR and v.status & (VMA_ANON_PRIVATE | VMA_FILE_PRIVATE))


def _cow_pair(child: Vma, parent: Vma) -> bool:
    if child.start != parent.start or child.end != parent.end:
        return False
    if not (_private(child) and _private(parent)):
        return False
    if (child.flags | parent.flags) & _MAP_HUGETLB:
        return False
    if (child.flags ^ parent.flags) & (_MAP_GROWSDOWN | _MAP_ANONYMOUS):
        return False
    return bool(child.flags & _MAP_ANONYMOUS) or child.shmid == parent.shmid


def inherited_share(child: tuple[int, list[Vma]], parent: tuple[int, list[Vma]],
                    pagemap: Pagemap) -> float:
    """The fraction of the child's stored pages that lie in mappings it inherited from its
    parent (each argument from images.parse_mm_task / parse_pagemap)."""
    (exe, vmas), (pexe, pvmas) = child, parent
    if exe != pexe:  # exec'd since the fork: nothing is shared
        return 0.0
    by_start = {v.start: v for v in pvmas}
    ranges = sorted((v.start, v.end) for v in vmas
                    if v.start in by_start and _cow_pair(v, by_start[v.start]))
    runs = sorted((vaddr, vaddr + length) for vaddr, _, length in pagemap.page_runs())
    total = sum(hi - lo for lo, hi in runs)
    inside, i = 0, 0
    for lo, hi in runs:  # both sorted, mappings never overlap: one sweep
        while i < len(ranges) and ranges[i][1] <= lo:
            i += 1
        j = i
        while j < len(ranges) and ranges[j][0] < hi:
            inside += min(hi, ranges[j][1]) - max(lo, ranges[j][0])
            j += 1
    return inside / total if total else 0.0


async def read_page_by_page(name: bytes,
                            read: Callable[..., Awaitable[bytes | None]]) -> bool:
    """Whether CRIU will read enough of the image ``name`` one page at a time that lzfs should
    serve it through the page cache. ``read(name, limit=None)`` gives (a prefix of) a sibling
    image's bytes, None if there is none. Anything missing or malformed means no: direct_io
    is the default. Only the heads of the other tasks' pagemaps are read, and one task's
    pagemap and two mm images are parsed whole, so a restore of many tasks stays cheap."""
    m = _PAGES.fullmatch(name)
    if m is None:
        return False
    try:
        data = await read("pstree.img")
        if data is None:
            return False
        tree = parse_pstree(data, "pstree.img")
        pages_ids = {}
        for pid, _ in tree:
            head = await read(f"pagemap-{pid}.img", HEAD_BYTES)
            if head is not None:
                pages_ids[pid] = pagemap_pages_id(head, f"pagemap-{pid}.img")
        task = task_of_pages(tree, pages_ids, int(m[1]))
        if task is None:
            return False
        pid, ppid = task
        pm, child, parent = (await read(f"pagemap-{pid}.img"), await read(f"mm-{pid}.img"),
                             await read(f"mm-{ppid}.img"))
        if pm is None or child is None or parent is None:
            return False
        share = inherited_share(parse_mm_task(child, f"mm-{pid}.img"),
                                parse_mm_task(parent, f"mm-{ppid}.img"),
                                parse_pagemap(pm, f"pagemap-{pid}.img"))
    except ImageFormatError:
        return False
    return share >= PAGE_CACHE_SHARE
