"""`lzfs fsck`: check every stored byte and every metadata invariant of an unmounted store.

What is checked, in order (each check trusts only what the earlier ones proved):

1. the SQLite file itself (``PRAGMA integrity_check``);
2. pack files against the pack table: missing, shorter than committed (frames past the end are
   lost), uncommitted tails and stray packs (left by a daemon that died; cut at next mount);
3. every frame: read, checksum, decompress, and every page hash recomputed in the frame's
   dedup domain, and the frame's page table (the dedup index) against its own record;
4. runs (extents) name frames that exist and stay inside them, stay inside their file and do
   not overlap; each frame's reference count equals the runs naming it; the sparse index
   names frames that exist;
5. the tree: dentries name existing inodes under existing directories, every inode has the
   link count its names give it, every directory is reachable from the root exactly once,
   orphans (unlinked while open when the daemon stopped);
6. snapshots: each CRIU images directory is complete (report.snapshot_problems).

Problems are errors (the store is inconsistent or data is lost) or notices (normal leftovers of
a crash or of deletes: orphans, uncommitted tails, unreferenced frames, incomplete dumps).
``--repair`` fixes what can be fixed without losing intact data: counts are recomputed, dangling
rows dropped, disconnected files linked under ``/lost+found``, orphans and garbage collected,
and frames that failed verification are marked lost (``frames.lost``) and leave the page index,
so no later write dedups against them (it stores a fresh copy), and getfattr
user.lzfs.damaged and later fscks name the files that hold them. Reads of damaged ranges keep
failing with EIO: lzfs never invents bytes. Exit status of the CLI: 0 clean,
1 errors found and all repaired, 4 errors left (data that was lost stays an error until the
files holding it are deleted).
"""

from __future__ import annotations

import stat
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lzfs.errors import CorruptDataError
from lzfs.report.dedup import snapshot_problems
from lzfs.store import layout
from lzfs.store.blockmap import LOST_FRAME, Coverage, FrameShape, Run
from lzfs.store.codec import decode_frame
from lzfs.store.namespace import ROOT_INODE, path_of
from lzfs.store.packs import PACK_HEADER, pack_name
from lzfs.store.pagetable import decode_table, encode_table
from lzfs.store.snapshot import load_tree
from lzfs.store.store import Store

LOST_FOUND = b"lost+found"

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


@dataclass
class Problem:
    kind: str          # a short stable name, e.g. "refcount", "frame"
    message: str
    error: bool = True  # False: a notice, not damage


@dataclass
class FsckResult:
    frames: int = 0
    frame_bytes: int = 0
    pages: int = 0
    files: int = 0
    directories: int = 0
    problems: list[Problem] = field(default_factory=list)
    damaged: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # path -> ranges
    repaired: list[str] = field(default_factory=list)
    remaining: list[Problem] = field(default_factory=list)  # errors a repair could not mend
    repair: bool = False  # whether --repair ran

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.error]

    @property
    def clean(self) -> bool:
        return not self.errors

    def to_json(self) -> dict:
        return {"schema": "lzfs-fsck/1", "clean": self.clean, "frames": self.frames,
                "frame_bytes": self.frame_bytes, "pages": self.pages, "files": self.files,
                "directories": self.directories,
                "problems": [{"kind": p.kind, "message": p.message, "error": p.error}
                             for p in self.problems],
                "damaged": {k: [list(r) for r in v] for k, v in self.damaged.items()},
                "repaired": self.repaired,
                "remaining": [{"kind": p.kind, "message": p.message} for p in self.remaining]}


def fsck(root: str | Path, repair: bool = False, progress: Progress | None = None) -> FsckResult:
    """Check (and with ``repair``, mend) the store at ``root``, which must not be mounted."""
    if repair:
        # takes the lock; pack tails are left for the repair to judge (the pack table may be
        # what is damaged: cutting to it could throw intact frames away)
        store = Store(root, recover=False)
    else:
        lock = layout.StoreLock(Path(root).resolve())
        layout.read_config(root)  # a clear error for a non-store before touching anything
        lock.acquire(record=False)
        try:
            store = Store(root, readonly=True, exclusive=True, scratch=True)
        except BaseException:
            lock.release()
            raise
    node = None
    try:
        node, unreachable = _attach_node(store)
        checker = Checker(store, progress)
        if unreachable:
            checker.problem("remote", f"the object store is unreachable ({unreachable}): frames "
                            f"kept only there are not verified", error=False)
        result = checker.run()
        result.repair = repair
        if repair and result.problems:
            if any(p.kind == "sqlite" for p in result.errors):
                # never write into a damaged B-tree: what it would do is anybody's guess
                result.remaining = result.errors
            else:
                Repairer(store, checker, result).run()
                # what is left, without reading every frame again: lost frames are marked now
                result.remaining = Checker(store, None).run(verify_frames=False).errors
        return result
    finally:
        store.close()
        if node is not None:
            node.close()
        if not repair:
            lock.release()


def _attach_node(store: Store) -> tuple[Any, str | None]:
    """A node cache of an object store (docs/cluster.md) keeps frames in pack objects: attach
    the object store so they are verified too. Returns (node or None, why it could not be)."""
    from lzfs.cluster.attach import attach_readonly
    from lzfs.errors import LzfsError

    try:
        return attach_readonly(store), None
    except (LzfsError, OSError, ValueError) as exc:
        return None, str(exc)


class Checker:
    def __init__(self, store: Store, progress: Progress | None) -> None:
        self.store = store
        self.db = store.db
        self.progress = progress
        self.result = FsckResult()
        self.bad_frames: set[int] = set()        # frames whose bytes are lost
        self.refcounts: dict[int, int] = {}      # frame id -> correct count, where wrong
        self.homeless_extents: set[int] = set()  # inodes that extents name but that do not exist
        self.frameless_extents: list[tuple[int, int]] = []  # (ino, off) naming no frame
        self.tables: dict[int, bytes] = {}       # frame id -> page table rebuilt from its record
        self.stale_hooks = 0                     # index rows naming frames that are gone
        self.dangling_dentries: list[int] = []   # dentry ids
        self.nlinks: dict[int, int] = {}         # ino -> correct nlink, where wrong
        self.disconnected: list[int] = []        # inodes with names that the root cannot reach
        self.stored: dict[int, int] = {}         # ino -> correct stored figure, where off
        self.unverified = 0                       # frames only an unreachable object store has
        self.staging_rows: list[int] = []         # listed inodes that are gone or not files
        self.staging_lost: list[int] = []         # listed inodes whose staging file is gone
        self.staging_leftover: list[Path] = []    # staging files no row names
        # packs an object store holds (a node cache, docs/cluster.md): no local file needed
        has_objects = self.db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND "
                                      "name='pack_objects'").fetchone()
        self.remote_packs: set[int] = ({r[0] for r in self.db.execute(
            "SELECT pack FROM pack_objects")} if has_objects else set())

    def problem(self, kind: str, message: str, error: bool = True) -> None:
        self.result.problems.append(Problem(kind, message, error))

    def run(self, verify_frames: bool = True) -> FsckResult:
        self.check_sqlite()
        self.check_packs()
        if verify_frames:
            self.check_frames()
        self.check_extents()
        self.check_staging()
        self.check_tree()
        self.check_snapshots()
        self.check_garbage()
        self.locate_damage()
        return self.result

    # ---- 1. the database file ----------------------------------------------------------------

    def check_sqlite(self) -> None:
        rows = [r[0] for r in self.db.execute("PRAGMA integrity_check")]
        if rows != ["ok"]:
            self.problem("sqlite", "metadata database: " + "; ".join(rows[:5]))

    # ---- 2. pack files -----------------------------------------------------------------------

    def check_packs(self) -> None:  # noqa: C901 - one pass, each invariant in turn
        committed = dict(self.db.execute("SELECT id, size FROM packs"))
        self.frame_ends = dict(self.db.execute(
            "SELECT pack, MAX(off + rlen) FROM frames GROUP BY pack"))
        self.on_disk: dict[int, int] = {}
        on_disk = self.on_disk
        for entry in (self.store.root / layout.PACKS).iterdir():
            name = entry.name
            if name.endswith(".pack") and name[:-5].isdigit() and entry.is_file():
                on_disk[int(name[:-5])] = entry.stat().st_size
        for pid, size in sorted(committed.items()):
            have, end = on_disk.get(pid), self.frame_ends.get(pid, 0)
            if have is None and pid in self.remote_packs:
                continue  # read from its object
            if have is None:
                if end:
                    self.problem("pack", f"{pack_name(pid)} is missing ({size} bytes committed)")
                else:
                    self.problem("pack", f"{pack_name(pid)} is missing but no frame is in it",
                                 error=False)
            elif have < size:
                if end > have:
                    self.problem("pack", f"{pack_name(pid)} is {have} bytes, {size} were "
                                 f"committed: frames past the end are lost")
                else:
                    self.problem("pack", f"{pack_name(pid)} is {have} bytes, the pack table "
                                 f"says {size}; every frame in it is inside", error=False)
            elif end > size:
                self.problem("pack", f"the pack table says {pack_name(pid)} holds {size} bytes, "
                             f"but its frames reach {end}")
            elif have > size:
                self.problem("pack", f"{pack_name(pid)} has an uncommitted tail of "
                             f"{have - size} bytes (a daemon stopped before committing; cut at "
                             f"the next mount)", error=False)
        for pid in sorted(set(on_disk) - set(committed)):
            if on_disk[pid] <= PACK_HEADER.size and pid not in self.frame_ends:
                continue  # started by a daemon that then wrote nothing into it: normal
            if pid in self.frame_ends:
                self.problem("pack", f"{pack_name(pid)} holds frames but is not in the pack "
                             f"table")
            else:
                self.problem("pack", f"{pack_name(pid)} is not in the pack table (uncommitted; "
                             f"removed at the next mount)", error=False)

    # ---- 3. frames ---------------------------------------------------------------------------

    def check_frames(self) -> None:
        frames = self.db.execute(
            "SELECT id, pack, off, rlen, stored, raw, codec, seed, refs, lost, pages FROM frames "
            "ORDER BY pack, off").fetchall()
        total = sum(f[3] for f in frames)
        done = 0
        self.result.frames = len(frames)
        self.result.frame_bytes = total
        for fid, pack, off, rlen, stored, raw_len, codec, seed, refs, lost, pages in frames:
            where = f"frame {fid} ({pack_name(pack)} at {off})"
            if lost:  # marked by an earlier repair: counted with the damage, not again
                self.bad_frames.add(fid)
                continue
            why, table = self._check_frame(pack, off, rlen, stored, raw_len, codec, seed)
            if why:
                self.bad_frames.add(fid)
                if refs > 0:
                    self.problem("frame", f"{where}: {why}")
                else:
                    self.problem("frame", f"{where}, which no file uses any more: {why} "
                                 f"('lzfs gc' drops it)", error=False)
            elif table is not None:
                self.result.pages += len(table)
                if any(table.get(foff, (0, b""))[1] != h for foff, h in decode_table(pages)):
                    self.tables[fid] = encode_table((foff, h) for foff, (_, h) in sorted(
                        table.items()))
                    self.problem("index", f"the page table of {where} disagrees with its "
                                 f"record (dedup could name wrong pages)")
            done += rlen
            if self.progress:
                self.progress(done, total)
        if self.unverified:
            self.problem("remote", f"{self.unverified} frames are kept only in the object store "
                         f"and were not verified", error=False)

    def _check_frame(self, pack: int, off: int, rlen: int, stored: int, raw_len: int,
                     codec: int, seed: int
                     ) -> tuple[str | None, dict[int, tuple[int, bytes]] | None]:
        """(why the frame record is bad or None, its page table by offset or None when it
        was not read: bad, or kept only in an object store that is not attached)."""
        if pack not in self.on_disk and pack in self.remote_packs:
            if self.store.packs.remote is None:
                self.unverified += 1
                return None, None
        elif off + rlen > self.on_disk.get(pack, 0):
            return ("its pack ends before it" if pack in self.on_disk
                    else "its pack is missing"), None
        try:
            record = self.store.packs.read(pack, off, rlen)
            try:
                head, _ = decode_frame(record, seed)
            except CorruptDataError:  # punched here since its upload? (Store.read_frame)
                again = self.store.packs.read_object(pack, off, rlen)
                if again is None:
                    raise
                head, _ = decode_frame(again, seed)
        except (CorruptDataError, OSError) as exc:
            return str(exc), None
        if (head.stored_len, head.raw_len, head.codec) != (stored, raw_len, codec):
            return "its header disagrees with the frame table", None
        table, pos = {}, 0
        for n, h in head.blocks:
            table[pos] = (n, h)
            pos += n
        return None, table

    # ---- 4. runs, reference counts, the index -----------------------------------------------

    def check_extents(self) -> None:  # noqa: C901 - one pass, each invariant in turn
        q = self.db.execute
        modes = dict(q("SELECT id, mode FROM inodes"))
        sizes = dict(q("SELECT id, size FROM inodes"))
        shapes = {f: (raw, lost) for f, raw, lost in q("SELECT id, raw, lost FROM frames")}
        uses: Counter[int] = Counter()
        last: dict[int, int] = {}
        for ino, (off, n, frame, foff) in self.store.maps.all_runs():
            if ino not in modes:
                if ino not in self.homeless_extents:
                    self.problem("extent", f"inode {ino} has data but no inode row")
                self.homeless_extents.add(ino)
                continue
            if frame not in shapes:
                if frame != LOST_FRAME:
                    self.problem("extent", f"inode {ino} at {off}: frame {frame} does not exist")
                    self.frameless_extents.append((ino, off))
                continue
            uses[frame] += 1
            if not stat.S_ISREG(modes[ino]):
                self.problem("extent", f"inode {ino} is not a regular file but has data")
            if n <= 0 or foff < 0 or foff + n > shapes[frame][0]:
                self.problem("extent", f"inode {ino} at {off}: a run of {n} bytes at {foff} "
                             f"does not fit in frame {frame} ({shapes[frame][0]} bytes)")
            if off < last.get(ino, 0):
                self.problem("extent", f"inode {ino}: extents overlap at {off}")
            if off + n > sizes[ino]:
                self.problem("extent", f"inode {ino}: extent at {off} ends past the file size "
                             f"{sizes[ino]}")
            last[ino] = off + n
        for fid, refs in q("SELECT id, refs FROM frames"):
            if refs != uses.get(fid, 0):
                self.refcounts[fid] = uses.get(fid, 0)
        if self.refcounts:
            sample = ", ".join(f"frame {f}" for f in list(self.refcounts)[:3])
            self.problem("refcount", f"{len(self.refcounts)} frames have a wrong reference "
                         f"count ({sample}...)")
        self.stale_hooks = q("SELECT COUNT(*) FROM hooks WHERE frame NOT IN "
                             "(SELECT id FROM frames WHERE lost = 0)").fetchone()[0]
        if self.stale_hooks:
            self.problem("index", f"{self.stale_hooks} page index rows name frames that are "
                         f"gone (ignored by writes; --repair drops them)", error=False)
        self._check_stored_figures()

    def _check_stored_figures(self) -> None:
        """The stored figure an inode row keeps for st_blocks, recomputed from its runs."""
        shapes = {f: FrameShape(rlen, raw) for f, rlen, raw in self.db.execute(
            "SELECT id, rlen, raw FROM frames WHERE lost = 0")}
        runs: dict[int, list[Run]] = defaultdict(list)
        for ino, run in self.store.maps.all_runs():
            runs[ino].append(run)
        staged = set(self.store.staging.inodes())
        for ino, mode, have in self.db.execute("SELECT id, mode, stored FROM inodes"):
            if not stat.S_ISREG(mode) or ino in staged:
                continue
            cov = Coverage(shapes.get)
            cov.add(runs.get(ino, []))
            if abs(have - cov.stored) > 1:
                self.stored[ino] = int(cov.stored)
        if self.stored:
            self.problem("figures", f"{len(self.stored)} files show a stale stored size "
                         f"(du, st_blocks)", error=False)

    def check_staging(self) -> None:
        """Files a dump wrote through passthrough (store/staging.py): every listed inode is a
        file with a staging file and no runs; every staging file is listed."""
        modes = dict(self.db.execute("SELECT id, mode FROM inodes"))
        with_runs = {ino for ino, _ in self.store.maps.all_runs()}
        listed = self.store.staging.inodes()
        for ino in listed:
            if not stat.S_ISREG(modes.get(ino, 0)) or ino in with_runs:
                why = ("it has runs as well" if ino in with_runs else "it is not a file"
                       if ino in modes else "the inode is gone")
                self.problem("staging", f"inode {ino} is listed as staged, but {why}")
                self.staging_rows.append(ino)
            elif not self.store.staging.path(ino).is_file():
                self.problem("staging", f"{path_of(self.db, ino)}: its staging file is missing: "
                             f"its bytes are lost")
                self.staging_lost.append(ino)
        if self.store.staging.dir.is_dir():
            self.staging_leftover = [e for e in self.store.staging.dir.iterdir()
                                     if not e.name.isdigit() or int(e.name) not in listed]
        if self.staging_leftover:
            self.problem("staging", f"{len(self.staging_leftover)} staging files no inode "
                         f"names (left by a crash; the next mount removes them)", error=False)

    # ---- 5. the tree -------------------------------------------------------------------------

    def check_tree(self) -> None:  # noqa: C901 - one pass, each invariant in turn
        q = self.db.execute
        inodes = {i: (m, n) for i, m, n in q("SELECT id, mode, nlink FROM inodes")}
        if ROOT_INODE not in inodes or not stat.S_ISDIR(inodes[ROOT_INODE][0]):
            self.problem("tree", "the root directory is missing")
            return
        names: Counter[int] = Counter()
        subdirs: Counter[int] = Counter()
        children: dict[int, list[int]] = defaultdict(list)
        for did, parent, name, ino in q("SELECT id, parent, name, ino FROM dentries"):
            pm = inodes.get(parent)
            if (ino not in inodes or ino == ROOT_INODE or pm is None
                    or not stat.S_ISDIR(pm[0])):
                why = ("it names the root directory" if ino == ROOT_INODE else
                       "its directory is missing" if pm is None else
                       "its directory is not a directory" if ino in inodes else
                       f"inode {ino} is missing")
                self.problem("dentry", f"entry {name!r} under inode {parent}: {why}")
                self.dangling_dentries.append(did)
                continue
            names[ino] += 1
            children[parent].append(ino)
            if stat.S_ISDIR(inodes[ino][0]):
                subdirs[parent] += 1
        for ino, (mode, nlink) in inodes.items():
            if stat.S_ISDIR(mode):
                if ino != ROOT_INODE and names[ino] > 1:
                    self.problem("tree", f"directory {ino} has {names[ino]} names")
                want = (2 + subdirs[ino]) if (names[ino] or ino == ROOT_INODE) else 0
            else:
                want = names[ino]
            if nlink == 0 and want == 0:
                continue  # an orphan: counted below
            if nlink != want:
                self.nlinks[ino] = want
        if self.nlinks:
            self.problem("nlink", f"{len(self.nlinks)} inodes have a wrong link count")
        orphans = [i for i, (_, n) in inodes.items() if n == 0 and names[i] == 0]
        if orphans:
            self.problem("orphan", f"{len(orphans)} orphan inodes (deleted while open when the "
                         f"daemon stopped; removed at the next mount)", error=False)
        reached = {ROOT_INODE}
        stack = [ROOT_INODE]
        while stack:
            for kid in children.get(stack.pop(), []):
                if kid not in reached:
                    reached.add(kid)
                    if stat.S_ISDIR(inodes[kid][0]):
                        stack.append(kid)
        self.disconnected = sorted(i for i in inodes if i not in reached and names[i] > 0)
        if self.disconnected:
            self.problem("tree", f"{len(self.disconnected)} inodes are not reachable from the "
                         f"root (a directory cycle or a lost parent)")
        lost = [i for i in inodes if i not in reached and names[i] == 0 and inodes[i][1] > 0
                and i != ROOT_INODE]
        if lost:
            self.disconnected.extend(lost)
            self.problem("tree", f"{len(lost)} inodes have links but no names")
        self.result.files = sum(1 for m, _ in inodes.values() if stat.S_ISREG(m))
        self.result.directories = sum(1 for m, _ in inodes.values() if stat.S_ISDIR(m))

    # ---- 6. snapshots ------------------------------------------------------------------------

    def check_snapshots(self) -> None:
        tree = load_tree(self.store.ns)
        for snap in sorted(tree.snapshots):
            for why in snapshot_problems(self.store, tree, snap):
                self.problem("snapshot", f"snapshot {snap} is incomplete: {why}", error=False)

    def check_garbage(self) -> None:
        n, raw = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(raw), 0) FROM frames WHERE refs <= 0").fetchone()
        if n:
            self.problem("garbage", f"{n} unreferenced frames ({raw} bytes before compression; "
                         f"'lzfs gc' gives their space back)", error=False)

    # ---- damage, by file ---------------------------------------------------------------------

    def locate_damage(self) -> None:
        """Which files (and byte ranges) the bad frames, found now or marked before, and runs
        in no frame hit."""
        ranges: dict[int, list[tuple[int, int]]] = defaultdict(list)
        bad = self.bad_frames | {r[0] for r in self.db.execute(
            "SELECT id FROM frames WHERE lost = 1")}
        known = {r[0] for r in self.db.execute("SELECT id FROM frames")}
        for ino, r in self.store.maps.all_runs():
            if r.frame in bad or r.frame not in known:
                ranges[ino].append((r.off, r.len))
        for ino, rs in sorted(ranges.items()):
            self.result.damaged[path_of(self.db, ino)] = _merge(rs)
        if ranges:
            self.problem("damaged", f"{len(ranges)} files hold damaged ranges (reads there fail "
                         f"with EIO; delete or re-dump them)")


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for off, n in sorted(set(ranges)):
        if out and off <= out[-1][0] + out[-1][1]:
            start = out[-1][0]
            out[-1] = (start, max(out[-1][1], off + n - start))
        else:
            out.append((off, n))
    return out


class Repairer:
    """Mends what a Checker found, in one transaction, then collects garbage."""

    def __init__(self, store: Store, checker: Checker, result: FsckResult) -> None:
        self.store = store
        self.db = store.db
        self.c = checker
        self.result = result

    def did(self, what: str) -> None:
        self.result.repaired.append(what)

    def run(self) -> None:  # noqa: C901 - the repairs in the order they must happen
        q = self.db.execute
        if q("SELECT 1 FROM inodes WHERE id=?", (ROOT_INODE,)).fetchone() is None:
            self.store.ns.ensure_root()  # an empty root; what hung below it is relinked
            self.did("recreated the root directory")
        self._fix_packs()
        self._fix_staging()
        self._recreate_inodes()
        now = Checker(self.store, None)  # what the tree and block maps are after that
        now.check_extents()
        now.check_tree()
        if now.frameless_extents:
            self._placeholders(now.frameless_extents)
        if now.dangling_dentries:
            self.db.executemany("DELETE FROM dentries WHERE id=?",
                                [(d,) for d in now.dangling_dentries])
            self.did(f"dropped {len(now.dangling_dentries)} directory entries naming nothing")
        self._mark_damage()
        now = Checker(self.store, None)
        now.check_tree()
        if now.disconnected:
            self._relink(now.disconnected)
        # counts last: the steps above change them
        fresh = Checker(self.store, None)
        fresh.check_extents()
        fresh.check_tree()
        if fresh.refcounts:
            self.store.maps.set_refs(fresh.refcounts)
            self.did(f"set {len(fresh.refcounts)} reference counts")
        if self.c.tables:
            self.db.executemany("UPDATE frames SET pages=? WHERE id=?",
                                [(t, f) for f, t in self.c.tables.items()])
            self.did(f"rebuilt the page tables of {len(self.c.tables)} frames from their "
                     f"records")
        if fresh.stale_hooks:
            self.db.execute("DELETE FROM hooks WHERE frame NOT IN "
                            "(SELECT id FROM frames WHERE lost = 0)")
            self.did(f"dropped {fresh.stale_hooks} page index rows naming frames that are gone")
        if fresh.nlinks:
            self.db.executemany("UPDATE inodes SET nlink=? WHERE id=?",
                                [(n, i) for i, n in fresh.nlinks.items()])
            self.did(f"set {len(fresh.nlinks)} link counts")
        if fresh.stored:
            self.db.executemany("UPDATE inodes SET stored=? WHERE id=?",
                                [(n, i) for i, n in fresh.stored.items()])
            self.did(f"recomputed the stored size of {len(fresh.stored)} files")
        orphans = [r[0] for r in q("SELECT id FROM inodes WHERE nlink=0")]
        if orphans:
            for ino in orphans:
                self.store.maps.purge(ino)
                if self.store.staging.has(ino):
                    self.store.staging.remove(ino)
                q("DELETE FROM inodes WHERE id=?", (ino,))
            self.did(f"removed {len(orphans)} orphan inodes")
        self.store.commit()
        self.store.staging.committed()
        removed, freed = self.store.gc()
        if removed or freed:
            self.did(f"collected {removed} unreferenced frames, gave back {freed} bytes")

    def _recreate_inodes(self) -> None:
        """Give back an inode row to what entries or extents still name: a directory if
        entries sit under it, else a file as long as its extents reach (0600, root's)."""
        q = self.db.execute
        known = {r[0] for r in q("SELECT id FROM inodes")}
        parents = {r[0] for r in q("SELECT DISTINCT parent FROM dentries")} - known
        named = {r[0] for r in q("SELECT DISTINCT ino FROM dentries")} - known
        with_data: dict[int, int] = {}
        for ino, r in self.store.maps.all_runs():
            with_data[ino] = max(with_data.get(ino, 0), r.end)
        t = time.time_ns()
        made = 0
        for ino in sorted(parents | named | (set(with_data) - known)):
            if ino in parents:
                mode, size = stat.S_IFDIR | 0o700, 0
            elif ino in with_data:
                mode, size = stat.S_IFREG | 0o600, with_data[ino]
            else:
                continue  # a name for nothing we know of: dropped as dangling
            q("INSERT INTO inodes(id, mode, uid, gid, nlink, size, atime_ns, mtime_ns, "
              "ctime_ns) VALUES (?,?,0,0,1,?,?,?,?)", (ino, mode, size, t, t, t))
            made += 1
        if made:
            self.did(f"recreated {made} inodes that entries or data still named (as root's "
                      f"0600 files or 0700 directories)")

    def _fix_staging(self) -> None:
        """A row naming no file goes; a file whose staging file is gone keeps its size as a
        run marked lost (reads fail with EIO, never zeros); unnamed staging files go."""
        c, staging = self.c, self.store.staging
        for ino in c.staging_rows:
            staging.remove(ino)
        for ino in c.staging_lost:
            size = self.db.execute("SELECT size FROM inodes WHERE id=?", (ino,)).fetchone()[0]
            staging.remove(ino)
            if size:
                self.store.maps.insert(ino, [Run(0, size, LOST_FRAME, 0)])
        for path in c.staging_leftover:
            path.unlink(missing_ok=True)
        if c.staging_rows or c.staging_lost or c.staging_leftover:
            self.did(f"staging: dropped {len(c.staging_rows)} rows naming no file, marked "
                     f"{len(c.staging_lost)} files whose staging file is gone as lost, removed "
                     f"{len(c.staging_leftover)} unnamed staging files")

    def _placeholders(self, extents: list[tuple[int, int]]) -> None:
        """Runs whose frame row is gone keep their place, marked lost (frame -1): reads
        there fail with EIO, as lost data must, never read zeros."""
        self.store.maps.mark_lost(extents)
        self.did(f"{len(extents)} runs named missing frames: they are now marked lost (reads "
                 f"there fail with EIO)")

    def _fix_packs(self) -> None:
        """Make the pack table agree with what the frames need and the files hold, then cut
        what no frame uses (as a mount's recovery would, but only now that the table can be
        trusted)."""
        c = self.c
        committed = dict(self.db.execute("SELECT id, size FROM packs"))
        for pid, end in sorted(c.frame_ends.items()):
            have = c.on_disk.get(pid)
            if have is None:
                continue  # its frames are damaged: marked lost below
            want = max(committed.get(pid, 0), min(end, have))
            if pid not in committed or want > committed[pid]:
                self.db.execute("INSERT OR REPLACE INTO packs(id, size) VALUES (?, ?)",
                                (pid, want))
                self.did(f"{pack_name(pid)}: the pack table now says {want} bytes (it said "
                         f"{committed.get(pid, 'nothing')}; its frames reach {end})")
                committed[pid] = want
        for pid, size in sorted(committed.items()):
            have = c.on_disk.get(pid)
            if have is not None and have < size and c.frame_ends.get(pid, 0) <= have:
                self.db.execute("UPDATE packs SET size=? WHERE id=?", (have, pid))
                self.did(f"{pack_name(pid)}: the pack table now says {have} bytes, its real size")
                committed[pid] = have
        self.store.commit()
        for action in self.store.packs.recover(committed):
            self.did(action)

    def _mark_damage(self) -> None:
        """Mark frames that failed verification lost and take them out of the page index,
        so that new writes store fresh copies of their pages."""
        bad = sorted(self.c.bad_frames)
        n = 0
        for f in bad:
            n += self.db.execute("UPDATE frames SET lost=1, pages=NULL WHERE id=? AND lost=0",
                                 (f,)).rowcount
            self.db.execute("DELETE FROM hooks WHERE frame=?", (f,))
        self.store.index.clear()
        if n:
            self.did(f"marked {n} frames that failed verification as lost (in "
                     f"{len(self.result.damaged)} files); new writes will not dedup against them")

    def _relink(self, inos: list[int]) -> None:
        """Give unreachable inodes a name under /lost+found, keeping their subtrees: only the
        top of each lost part moves (for a directory cycle, one directory of it), then
        reachability is worked out again."""
        ns = self.store.ns
        ns.ensure_root()
        name, n = LOST_FOUND, 0
        while True:  # /lost+found, or /lost+found.N where that name holds something else
            row = self.db.execute("SELECT d.ino, i.mode FROM dentries d JOIN inodes i ON "
                                  "i.id = d.ino WHERE d.parent=? AND d.name=?",
                                  (ROOT_INODE, name)).fetchone()
            if row is None:
                lf = ns.create(ROOT_INODE, name, stat.S_IFDIR | 0o700, 0, 0).id
                break
            if stat.S_ISDIR(row[1]):
                lf = row[0]
                break
            n += 1
            name = b"%s.%d" % (LOST_FOUND, n)
        moved = 0
        lost = set(inos)
        while lost:
            parents = defaultdict(set)
            for parent, ino in self.db.execute("SELECT parent, ino FROM dentries"):
                parents[ino].add(parent)
            tops = [i for i in sorted(lost) if not parents[i] & lost] or [min(lost)]
            for ino in tops:
                self.db.execute("DELETE FROM dentries WHERE ino=?", (ino,))
                self.db.execute("INSERT INTO dentries(parent, name, ino) VALUES (?,?,?)",
                                (lf, b"#%d" % ino, ino))
                moved += 1
            check = Checker(self.store, None)
            check.check_tree()
            lost = set(check.disconnected)
        self.did(f"linked {moved} unreachable inodes under /lost+found")
