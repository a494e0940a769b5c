"""Dedup accounting: what each snapshot (or file, or memory region) costs and shares.

Every stored page (a 4 KiB slot of a frame) that a group references lands in exactly one
bucket per group: unique to it, or shared with the others named; so unique + shared adds up to
what the group references, and the unique figures of all groups plus the shared pages add up
to the store (the model of `borg analyze`). Byte figures come in two currencies:

* ``*_raw``: uncompressed bytes of distinct pages (exact, independent of compression);
* stored bytes: each page's share of its frame record in the pack (``len * record / raw``),
  headers included, so the shares of all live pages add up to what the packs hold.

A snapshot is a directory that directly holds CRIU images (inventory.img, pagemap-*.img or
pages-*.img); it is complete when inventory.img is there (CRIU writes it last).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field

from lzfs.criu import images
from lzfs.errors import CorruptDataError, ImageFormatError
from lzfs.store.blockmap import Run
from lzfs.store.codec import PAGE
from lzfs.store.snapshot import OUTSIDE, Tree, load_tree
from lzfs.store.store import Store

# a page more groups than this share counts as shared, under WIDELY instead of pair by pair:
# thousands of replicas of one model would otherwise cost thousands squared per page
WIDE = 32
WIDELY = f"(pages shared by more than {WIDE})"


@dataclass
class Figures:
    name: str
    files: int = 0
    logical: int = 0
    zero: int = 0
    referenced: int = 0       # bytes backed by blocks, repeats included
    distinct_raw: int = 0     # distinct block bytes it references
    stored: float = 0.0       # compressed bytes of those blocks
    unique_raw: int = 0       # distinct block bytes no other group references
    unique: float = 0.0       # their compressed bytes: what deleting it frees
    shared: float = 0.0       # stored - unique
    shared_with: dict[str, float] = field(default_factory=dict)      # stored bytes
    shared_with_raw: dict[str, int] = field(default_factory=dict)    # block bytes
    complete: bool | None = None
    created: float | None = None  # snapshots: when written (seconds since the epoch)
    problems: list[str] = field(default_factory=list)  # why it is not complete

    @property
    def compression_ratio(self) -> float:
        return self.distinct_raw / self.stored if self.stored else 1.0

    @property
    def dedup_ratio(self) -> float:
        return self.referenced / self.distinct_raw if self.distinct_raw else 1.0

    def to_json(self) -> dict:
        d = asdict(self)
        for k in ("stored", "unique", "shared"):
            d[k] = round(d[k])
        d["shared_with"] = {k: round(v) for k, v in self.shared_with.items()}
        d["compression_ratio"] = round(self.compression_ratio, 3)
        d["dedup_ratio"] = round(self.dedup_ratio, 3)
        return d


def _slot_groups(store: Store, group_of: dict[int, str]
                 ) -> tuple[dict[int, dict[int, set[str]]], dict[str, int]]:
    """frame -> slot -> the groups referencing that 4 KiB slot; and the bytes each group
    references (repeats included). Runs are few (one per frame stretch), so this is one pass
    over the extents table."""
    slots: dict[int, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
    referenced: dict[str, int] = defaultdict(int)
    for ino, (_, n, frame, foff) in store.maps.all_runs():
        g = group_of.get(ino)
        if g is None or n <= 0:
            continue
        referenced[g] += n
        fs = slots[frame]
        for slot in range(foff // PAGE, (foff + n - 1) // PAGE + 1):
            fs[slot].add(g)
    return slots, referenced


def _shapes(store: Store) -> dict[int, tuple[int, int]]:
    """frame -> (record bytes, raw bytes) of frames that hold data (not lost)."""
    return store.frames.shapes()


def account(store: Store, group_of: dict[int, str], tree: Tree) -> dict[str, Figures]:
    """Figures per group, for any grouping of file inodes (snapshot, file)."""
    figs: dict[str, Figures] = {}
    for ino, g in group_of.items():
        f = figs.setdefault(g, Figures(g))
        f.files += 1
        f.logical += tree.size.get(ino, 0)
    slots, referenced = _slot_groups(store, group_of)
    for g, n in referenced.items():
        figs[g].referenced += n
    shapes = _shapes(store)
    for frame, by_slot in slots.items():
        shape = shapes.get(frame)
        if shape is None or not shape[1]:
            continue
        rlen, raw_len = shape
        for slot, groups in by_slot.items():
            raw = min(PAGE, raw_len - slot * PAGE)
            if raw <= 0:
                continue
            share = raw * rlen / raw_len
            for g in groups:
                f = figs[g]
                f.distinct_raw += raw
                f.stored += share
                if len(groups) == 1:
                    f.unique_raw += raw
                    f.unique += share
                else:
                    f.shared += share
                    for other in (groups if len(groups) <= WIDE else (WIDELY,)):
                        if other != g:
                            f.shared_with[other] = f.shared_with.get(other, 0.0) + share
                            f.shared_with_raw[other] = f.shared_with_raw.get(other, 0) + raw
    for f in figs.values():
        f.zero = f.logical - f.referenced
    return figs


def snapshot_report(store: Store) -> dict:
    tree = load_tree(store.ns)
    from lzfs.report.archives import find_archives  # checkpoint tars are
    archives = find_archives(store, tree)        # snapshots (lzfs/report_archives.py)
    figs = account(store, tree.snapshot_of, tree)
    for name, f in figs.items():
        if name in tree.snapshots:
            f.problems = snapshot_problems(store, tree, name)
            f.complete = not f.problems
            f.created = tree.created(name)
        elif name in archives:
            f.problems = archives[name].problems(name)
            f.complete = not f.problems
            f.created = tree.mtime_ns.get(archives[name].ino, 0) / 1e9
    st = store.stats()
    names = sorted(n for n in figs if n != OUTSIDE) + ([OUTSIDE] if OUTSIDE in figs else [])
    return {
        "schema": "lzfs-report/1",
        "by": "snapshot",
        "store": str(store.root),
        "totals": {
            "logical": st.logical, "zero": st.zero, "referenced": st.referenced,
            "unique_raw": st.unique, "stored": st.stored, "pack_bytes": st.pack_bytes,
            "garbage_frames": st.garbage_frames,
            "dedup_ratio": round(st.referenced / st.unique, 3) if st.unique else 1.0,
            "compression_ratio": round(st.unique / st.stored, 3) if st.stored else 1.0,
            "overall_ratio": round(st.logical / st.stored, 3) if st.stored else 1.0,
        },
        "groups": [figs[n].to_json() for n in names],
        # pairs that share nothing are left out: thousands of snapshots make millions of pairs
        "matrix": {n: {m: round(v) for m, v in figs[n].shared_with.items() if m != WIDELY}
                   for n in names},
    }


def file_report(store: Store) -> dict:
    tree = load_tree(store.ns)
    group_of = {ino: tree.path[ino] for ino in tree.snapshot_of}
    figs = account(store, group_of, tree)
    return {"schema": "lzfs-report/1", "by": "file", "store": str(store.root),
            "groups": [figs[n].to_json() for n in sorted(figs)]}


def _image(store: Store, tree: Tree, what: str, ino: int) -> bytes:
    """A protobuf image of a snapshot (``what`` names it in errors), read whole: refused past
    images.IMAGE_LIMIT (pagemaps, mm and files images are kilobytes; a larger one is not what its
    name says)."""
    size = tree.size.get(ino, 0)
    if size > images.IMAGE_LIMIT:
        raise ImageFormatError(f"{what}: {size} bytes is too large for this image")
    return store.read_file(ino, size)


def snapshot_problems(store: Store, tree: Tree, snap: str) -> list[str]:
    """Why a snapshot would not restore as dumped; empty when it is whole. CRIU writes
    inventory.img last, so a dump that died (CRIU, or the daemon under it) lacks it, or has
    it without its entry (created, not yet written); and every page a pagemap maps must be
    in its pages file."""
    kids = {name: ino for name, ino in tree.children.get(tree.snapshots[snap], [])}
    problems = []
    if b"inventory.img" not in kids:
        problems.append("no inventory.img: the dump did not finish")
    else:
        what = f"{snap}/inventory.img"
        try:
            if not images.entries(_image(store, tree, what, kids[b"inventory.img"]),
                                  images.INVENTORY_MAGIC, what):
                problems.append(f"{what} holds no entry: the dump did not finish")
        except (ImageFormatError, CorruptDataError) as exc:
            problems.append(f"{what} is unreadable: {exc}")
    for name, ino in sorted(kids.items()):
        m = re.match(rb"^pagemap-(\d+)\.img$", name)
        if not m:
            continue
        what = f"{snap}/{name.decode()}"
        try:
            pm = images.parse_pagemap(_image(store, tree, what, ino), what)
        except (ImageFormatError, CorruptDataError) as exc:
            problems.append(f"{what} is unreadable: {exc}")
            continue
        pages = kids.get(b"pages-%d.img" % pm.pages_id)
        why = images.pages_problem(what, pm, tree.size.get(pages, 0) if pages is not None
                                   else None)
        if why:
            problems.append(why)
    return problems


def region_report(store: Store) -> dict:
    """Per snapshot, per memory region (VMA name): logical, zero, unique and shared bytes of
    the pages CRIU stored for it, and which snapshots share them."""
    tree = load_tree(store.ns)
    from lzfs.report.archives import archive_regions, find_archives
    archives = find_archives(store, tree)  # checkpoint tars are snapshots of their own
    slots, _ = _slot_groups(store, {i: g for i, g in tree.snapshot_of.items() if g != OUTSIDE})
    out_snaps = []
    errors = []
    for snap, dino in sorted(tree.snapshots.items()):
        files = {name.decode(errors="replace"): ino for name, ino in tree.children.get(dino, [])}
        regions: dict[str, dict] = {}
        try:
            file_names = {}
            if "files.img" in files:
                what = f"{snap}/files.img"
                file_names = images.parse_files(_image(store, tree, what, files["files.img"]),
                                                what)
            for fname, ino in sorted(files.items()):
                m = re.match(r"^pagemap-(\d+)\.img$", fname)
                if not m:
                    continue
                pid = m.group(1)
                what = f"{snap}/{fname}"
                pm = images.parse_pagemap(_image(store, tree, what, ino), what)
                vmas = []
                if f"mm-{pid}.img" in files:
                    what = f"{snap}/mm-{pid}.img"
                    vmas = images.parse_mm(_image(store, tree, what, files[f"mm-{pid}.img"]),
                                           what)
                pages_ino = files.get(f"pages-{pm.pages_id}.img")
                exts = [] if pages_ino is None else store.maps.load(pages_ino)
                _attribute(snap, pm, vmas, file_names, exts, slots, regions)
        except (ImageFormatError, CorruptDataError) as exc:
            errors.append(str(exc))
            continue
        out_snaps.append({"snapshot": snap, "regions": [
            {"region": k, **v}
            for k, v in sorted(regions.items(), key=lambda kv: -kv[1]["logical"])]})
    out_snaps += archive_regions(store, archives, slots, _attribute, errors)
    return {"schema": "lzfs-report/1", "by": "region", "store": str(store.root),
            "snapshots": out_snaps, "errors": errors}


def _attribute(snap: str, pm: images.Pagemap, vmas: list[images.Vma], names: dict[int, str],
               exts: list[Run], slots: dict[int, dict[int, set[str]]],
               regions: dict[str, dict]) -> None:
    import bisect

    starts = [v.start for v in vmas]
    ext_offs = [e.off for e in exts]
    for vaddr, off, length in pm.page_runs():
        # split the run at VMA boundaries
        pos = 0
        while pos < length:
            va = vaddr + pos
            i = bisect.bisect_right(starts, va) - 1
            if i >= 0 and va < vmas[i].end:
                name = vmas[i].region(names)
                end = min(length, pos + vmas[i].end - va)
            else:
                name = "[unmapped]"
                end = length
            r = regions.setdefault(name, {"logical": 0, "zero": 0, "unique_raw": 0,
                                          "shared_raw": 0, "shared_with": {}})
            r["logical"] += end - pos
            lo, hi = off + pos, off + end
            covered = 0
            j = max(bisect.bisect_right(ext_offs, lo) - 1, 0)
            while j < len(exts) and exts[j].off < hi:
                e = exts[j]
                a, b = max(lo, e.off), min(hi, e.end)
                # page by page: the slots of the frame this stretch of the file is
                while a < b:
                    fpos = e.foff + a - e.off
                    n = min(b, a + PAGE - fpos % PAGE) - a
                    covered += n
                    others = slots.get(e.frame, {}).get(fpos // PAGE, set()) - {snap}
                    if others:
                        r["shared_raw"] += n
                        for o in others:
                            r["shared_with"][o] = r["shared_with"].get(o, 0) + n
                    else:
                        r["unique_raw"] += n
                    a += n
                j += 1
            r["zero"] += (end - pos) - covered
            pos = end
