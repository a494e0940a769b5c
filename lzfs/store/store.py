"""The block store: content-addressed blocks in compressed frames, with reference counts.

Writing a run of file data takes four steps, split so the expensive ones run off the trio
thread and the database is touched only from it:

1. ``prepare`` (any thread): cut into blocks at page-granular content-defined points, hash each;
2. ``resolve`` (DB thread): which hashes the store already holds;
3. ``pack_new`` (any thread): compress the new blocks into frames and append them to a pack;
4. ``register`` (DB thread): record frames and blocks.

The caller then records extents and counts references (``incref``). ``ingest_sync`` runs all
four in the calling thread, for tools and tests.
"""

from __future__ import annotations

import logging
import os
import stat
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from ..chunker import Chunker
from ..codec import FRAME_MAX, FrameHeader, block_hash, decode_frame, encode_frame_parts
from ..errors import CorruptDataError
from . import layout
from .db import MetaDB
from .packs import REMOTE_BASE, PackSet

log = logging.getLogger(__name__)
_S_IFMT = 0o170000
# fsck --repair renames a block that failed verification to DAMAGED_PREFIX + its id (24 bytes,
# never a 16-byte content hash): no later write dedups against it, and its files can be named.
DAMAGED_PREFIX = b"\0damaged"


class Cut(NamedTuple):
    """One piece of prepared data: a block (hash set) or a run of zero pages (hash None)."""
    start: int  # offset in the prepared buffer
    length: int
    hash: bytes | None


class BlockRef(NamedTuple):
    id: int
    frame: int
    foff: int  # offset of the block in its frame's raw data


class FrameWrite(NamedTuple):
    header: FrameHeader
    pack: int
    off: int
    rlen: int


class FrameLoc(NamedTuple):
    pack: int
    off: int
    rlen: int
    stored: int
    raw: int
    seed: int = 0  # the dedup domain its block hashes were computed in


@dataclass
class StoreStats:
    files: int
    directories: int
    logical: int          # sum of file sizes
    referenced: int       # bytes of block data the files reference (with repeats)
    unique: int           # bytes of distinct live blocks
    stored: int           # compressed bytes of the frames holding live blocks
    zero: int             # logical bytes not backed by any block (zero pages, holes)
    blocks: int
    frames: int
    garbage_blocks: int   # blocks no extent references (gc removes them)
    pack_bytes: int       # bytes the pack files occupy on disk


class Store:
    def __init__(self, root: str | os.PathLike, *, domain: str | None = None,
                 readonly: bool = False, lock_wait: float = 0.0, exclusive: bool = False,
                 recover: bool = True, upgradable: bool = False) -> None:
        """Open a store. ``readonly`` opens it beside a running daemon (for stats and
        reports): no lock, no recovery, nothing written; with ``exclusive`` the caller holds
        the store's lock itself (fsck), so nobody writes meanwhile. ``recover`` False leaves
        pack tails past the committed sizes alone (fsck --repair decides what they are).
        ``domain`` names the dedup domain new blocks are hashed in: blocks only ever dedup
        against blocks of the same domain."""
        self.root = Path(root).resolve()
        self.config = layout.read_config(self.root)
        self.readonly = readonly
        self.lock = layout.StoreLock(self.root)
        db_path = self.root / layout.DB
        # Nobody writes it and no committed transaction waits in the WAL (a daemon that died
        # leaves one): SQLite may read meta.db alone and create no -wal/-shm beside it. A
        # daemon that starts meanwhile can at worst make this read fail as damaged.
        quiet = ((exclusive or not self.lock.held())
                 and _empty(db_path.with_name(db_path.name + "-wal")))
        if readonly:
            # upgradable: a look before a mount, which will upgrade an older schema
            self.db = MetaDB(db_path, readonly=True, immutable=quiet, upgradable=upgradable)
        elif quiet:
            # look before taking the lock: a store that cannot be opened is left as it was
            MetaDB(db_path, readonly=True, immutable=True, upgradable=True).conn.close()
        if not readonly:
            self.lock.acquire(wait=lock_wait)
        try:
            if not readonly:
                self.db = MetaDB(db_path)
            self.chunker = Chunker(self.config.avg_pages, self.config.max_pages)
            self.domain = domain or ""
            self.seed = domain_seed(domain)
            self.packs = PackSet(self.root / layout.PACKS)
            committed = dict(self.db.execute("SELECT id, size FROM packs").fetchall())
            self.recovered: list[str] = []  # what opening cut off (fsck --repair reports it)
            if not readonly and recover:
                self.recovered = self.packs.recover(committed)
                for action in self.recovered:
                    log.warning("recovery: %s", action)
                self.packs.start(committed)
            self._frame_locs: OrderedDict[int, FrameLoc] = OrderedDict()
            self._pins: Counter[int] = Counter()  # blocks resolved by writes not yet recorded
            self.garbage = False  # set when a reference count drops: gc has work
        except BaseException:
            self.lock.release()
            raise

    # ---- writing ---------------------------------------------------------------------------

    def prepare(self, buf: bytes, base: int, final: bool) -> tuple[list[Cut], int]:
        pieces, consumed = self.chunker.cut(buf, base, final)
        view = memoryview(buf)
        seed = self.seed
        cuts = [Cut(p.start, p.length,
                    None if p.zero else block_hash(view[p.start:p.start + p.length], seed))
                for p in pieces]
        return cuts, consumed

    def resolve(self, hashes: list[bytes]) -> dict[bytes, BlockRef]:
        """The blocks the store already holds, of those named."""
        found: dict[bytes, BlockRef] = {}
        uniq = list(dict.fromkeys(hashes))
        for i in range(0, len(uniq), 500):
            part = uniq[i:i + 500]
            for h, *ref in self.db.execute(
                    "SELECT hash, id, frame, foff FROM blocks WHERE hash IN "
                    f"({','.join('?' * len(part))})", part):
                found[h] = BlockRef(*ref)
        return found

    def pack_new(self, buf: bytes, blocks: list[Cut]) -> list[FrameWrite]:
        """Compress ``blocks`` (pieces of ``buf``, in order) into frames of at most FRAME_MAX
        raw bytes, and append them to a pack. A frame whose blocks lie back to back in
        ``buf`` (the usual case: new data arrives in file order) is compressed from a view
        of it, without joining them first."""
        view = memoryview(buf)
        frames: list[tuple[list[tuple[int, bytes]], list[list[int]]]] = []  # (table, spans)
        size = FRAME_MAX + 1
        for c in blocks:
            if size + c.length > FRAME_MAX:
                frames.append(([], []))
                size = 0
            table, spans = frames[-1]
            table.append((c.length, c.hash))
            if spans and spans[-1][1] == c.start:
                spans[-1][1] += c.length
            else:
                spans.append([c.start, c.start + c.length])
            size += c.length
        encoded = []
        for table, spans in frames:
            raw = (view[spans[0][0]:spans[0][1]] if len(spans) == 1
                   else b"".join(view[lo:hi] for lo, hi in spans))
            encoded.append(encode_frame_parts(raw, table))
        places = self.packs.append([parts for _, parts in encoded])
        return [FrameWrite(head, pack, off, head.record_len)
                for (head, _), (pack, off) in zip(encoded, places)]

    def register(self, frames: list[FrameWrite]) -> dict[bytes, BlockRef]:
        """Record new frames and their blocks (refs 0). Returns hash -> block.

        Two files written at once can both pack the same new block; the second insert is
        ignored and its copy in the frame is dead weight that gc reclaims with the frame."""
        refs: dict[bytes, BlockRef] = {}
        for fw in frames:
            cur = self.db.execute(
                "INSERT INTO frames(pack, off, rlen, stored, raw, codec, seed) "
                "VALUES (?,?,?,?,?,?,?)",
                (fw.pack, fw.off, fw.rlen, fw.header.stored_len, fw.header.raw_len,
                 fw.header.codec, self.seed))
            frame_id = cur.lastrowid
            foff = 0
            for n, h in fw.header.blocks:
                cur = self.db.execute(
                    "INSERT OR IGNORE INTO blocks(hash, frame, foff, len, refs) "
                    "VALUES (?,?,?,?,0)", (h, frame_id, foff, n))
                if cur.rowcount:
                    refs[h] = BlockRef(cur.lastrowid, frame_id, foff)
                else:
                    refs[h] = BlockRef(*self.db.execute(
                        "SELECT id, frame, foff FROM blocks WHERE hash=?", (h,)).fetchone())
                foff += n
        if frames:
            self.db.executemany("INSERT OR REPLACE INTO packs(id, size) VALUES (?,?)",
                                list(self.packs.sizes().items()))
        return refs

    def incref(self, block_ids: list[int]) -> None:
        self.db.executemany("UPDATE blocks SET refs = refs + 1 WHERE id = ?",
                            [(b,) for b in block_ids])

    def decref(self, block_ids: list[int]) -> None:
        self.garbage = True
        self.db.executemany("UPDATE blocks SET refs = refs - 1 WHERE id = ?",
                            [(b,) for b in block_ids])

    def ingest_sync(self, buf: bytes, base: int, final: bool = True
                    ) -> tuple[list[tuple[int, int, BlockRef]], int]:
        """All four steps in this thread. Returns ([(offset, length, block)], consumed) for the
        data blocks (zero runs are left out), offsets absolute; references are not counted."""
        cuts, consumed = self.prepare(buf, base, final)
        refs = self.resolve([c.hash for c in cuts if c.hash])
        refs.update(self.register(self.pack_new(buf, self.new_blocks(cuts, refs))))
        return [(base + c.start, c.length, refs[c.hash]) for c in cuts if c.hash], consumed

    @staticmethod
    def new_blocks(cuts: list[Cut], known: dict[bytes, BlockRef]) -> list[Cut]:
        """The blocks of ``cuts`` the store lacks, each once, in file order."""
        new: dict[bytes, Cut] = {}
        for c in cuts:
            if c.hash and c.hash not in known and c.hash not in new:
                new[c.hash] = c
        return list(new.values())

    # ---- reading ---------------------------------------------------------------------------

    def frame_loc(self, frame_id: int) -> FrameLoc:
        loc = self._frame_locs.get(frame_id)
        if loc is None:
            row = self.db.execute("SELECT pack, off, rlen, stored, raw, seed FROM frames "
                                  "WHERE id=?", (frame_id,)).fetchone()
            if row is None:
                raise CorruptDataError(f"frame {frame_id} is not in the frame table")
            loc = FrameLoc(*row)
            self._frame_locs[frame_id] = loc
            if len(self._frame_locs) > 200_000:
                self._frame_locs.popitem(last=False)
        return loc

    def read_frame(self, loc: FrameLoc) -> bytes:
        """Read, verify and decompress one frame (any thread)."""
        record = self.packs.read(loc.pack, loc.off, loc.rlen)
        head, raw = decode_frame(record, loc.seed)
        if head.raw_len != loc.raw or head.stored_len != loc.stored:
            raise CorruptDataError("frame header disagrees with the frame table")
        return raw

    # ---- durability ------------------------------------------------------------------------

    def sync_packs(self) -> None:
        """fsync pack data (any thread). Must precede `commit_meta` for the same changes."""
        self.packs.sync()

    def commit_meta(self) -> None:
        self.db.commit()

    def commit(self) -> None:
        self.sync_packs()
        self.commit_meta()

    def close(self, commit: bool = True) -> None:
        """Close; with ``commit`` False, drop every change since the last commit (what a
        daemon whose commit failed does: the next open recovers packs to match)."""
        if self.readonly:
            self.db.conn.close()
            self.packs.close()
            return
        try:
            if commit:
                self.packs.sync()
            self.db.close(commit=commit)
            self.packs.close()
        finally:
            self.lock.release()

    # ---- accounting ------------------------------------------------------------------------

    def stats(self) -> StoreStats:
        q = self.db.execute
        files, logical = q("SELECT COUNT(*), COALESCE(SUM(size),0) FROM inodes "
                           f"WHERE (mode & {_S_IFMT}) = {stat.S_IFREG}").fetchone()
        dirs = q(f"SELECT COUNT(*) FROM inodes WHERE (mode & {_S_IFMT}) = {stat.S_IFDIR}").fetchone()[0]
        referenced = q("SELECT COALESCE(SUM(len * refs),0) FROM blocks WHERE refs > 0").fetchone()[0]
        blocks, unique = q("SELECT COUNT(*), COALESCE(SUM(len),0) FROM blocks "
                           "WHERE refs > 0").fetchone()
        garbage = q("SELECT COUNT(*) FROM blocks WHERE refs <= 0").fetchone()[0]
        frames, stored = q(
            "SELECT COUNT(*), COALESCE(SUM(rlen),0) FROM frames WHERE id IN "
            "(SELECT frame FROM blocks WHERE refs > 0)").fetchone()
        pack_bytes = 0
        for entry in (self.root / layout.PACKS).iterdir():
            try:
                pack_bytes += entry.stat().st_blocks * 512
            except OSError:
                pass
        return StoreStats(files, dirs, logical, referenced, unique, stored,
                          logical - referenced, blocks, frames, garbage, pack_bytes)

    def collect_garbage(self) -> tuple[int, list[tuple[int, int, int, int]]]:
        """Drop blocks no extent references (except pinned ones, which a write in flight has
        just resolved) and the frames left with no block. Returns (blocks removed, frames to
        punch); punch them only after the next commit, when no committed row names them.
        Frames still holding a live block stay whole: their dead bytes are reported as
        garbage until those blocks die too."""
        pinned = [b for b, n in self._pins.items() if n > 0]
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS pinned(id INTEGER PRIMARY KEY)")
        self.db.execute("DELETE FROM pinned")
        self.db.executemany("INSERT INTO pinned VALUES (?)", [(b,) for b in pinned])
        removed = self.db.execute(
            "DELETE FROM blocks WHERE refs <= 0 AND id NOT IN (SELECT id FROM pinned)").rowcount
        dead = self.db.execute(
            "SELECT id, pack, off, rlen FROM frames WHERE NOT EXISTS "
            "(SELECT 1 FROM blocks WHERE blocks.frame = frames.id)").fetchall()
        self.db.executemany("DELETE FROM frames WHERE id = ?", [(f[0],) for f in dead])
        for frame_id, *_ in dead:
            self._frame_locs.pop(frame_id, None)
        self.garbage = False
        return removed, dead

    def punch(self, frames: list[tuple[int, int, int, int]]) -> int:
        """Give back the space of collected frames (any thread). Returns bytes freed."""
        freed = 0
        for _, pack, off, rlen in frames:
            if pack >= REMOTE_BASE:  # an object: immutable; lzfs gc on the bucket removes it
                continue
            self.packs.punch(pack, off, rlen)
            freed += rlen
        return freed

    def gc(self) -> tuple[int, int]:
        """Offline gc: collect, commit, punch. Returns (blocks removed, bytes given back)."""
        removed, frames = self.collect_garbage()
        self.commit()
        return removed, self.punch(frames)

    def pin(self, block_ids) -> None:
        for b in block_ids:
            self._pins[b] += 1

    def unpin(self, block_ids) -> None:
        for b in block_ids:
            self._pins[b] -= 1
            if self._pins[b] <= 0:
                del self._pins[b]

    def file_figures(self, ino: int, size: int) -> dict[str, float]:
        """Per-file figures for getfattr: what it holds, stores, and alone stores."""
        referenced, = self.db.execute(
            "SELECT COALESCE(SUM(len), 0) FROM extents WHERE ino=?", (ino,)).fetchone()
        blocks = stored = unique = damaged = 0.0
        for n, refs, mine, fstored, fraw, lost in self.db.execute(
                "SELECT b.len, b.refs, COUNT(*), f.rlen, f.raw, substr(b.hash, 1, ?) = ? "
                "FROM extents e JOIN blocks b ON b.id = e.block "
                "LEFT JOIN frames f ON f.id = b.frame "
                "WHERE e.ino=? GROUP BY b.id", (len(DAMAGED_PREFIX), DAMAGED_PREFIX, ino)):
            share = n * fstored / fraw if fraw else 0.0
            blocks += 1
            stored += share
            if refs <= mine:
                unique += share
            if lost:
                damaged += n * mine
        return {"logical": size, "referenced": referenced, "zero": size - referenced,
                "blocks": blocks, "stored": stored, "unique": unique, "damaged": damaged,
                "ratio": size / stored if stored else 0.0}


def _empty(path: Path) -> bool:
    try:
        return os.stat(path).st_size == 0
    except FileNotFoundError:
        return True


def domain_seed(domain: str | None) -> int:
    """The XXH3 seed of a dedup domain: 0 for the default one. Seeds are stored per frame
    (reads must verify each block in the domain it was hashed in); the 63-bit range keeps
    them SQLite integers."""
    if not domain:
        return 0
    import xxhash

    return (xxhash.xxh3_64_intdigest(b"lzfs-domain\0" + domain.encode()) >> 1) or 1
