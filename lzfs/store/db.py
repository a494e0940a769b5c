"""The metadata database. `create_tables` is the canonical reference for the schema.

One connection, used from one thread (the daemon's trio thread). A transaction is always open:
every change since the last `commit()` is one unit, so a crash rolls the store back to the
last commit, never to a state in between (packs are truncated to match, see packs.py).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from pathlib import Path
from urllib.parse import quote

from lzfs.errors import CorruptDataError, NotAStoreError

SCHEMA_VERSION = 4


def create_tables(db: sqlite3.Connection) -> None:
    """Create the schema in one transaction (executescript runs outside the open one)."""
    db.executescript(f"BEGIN; {_SCHEMA}; INSERT INTO meta VALUES ('schema_version', "
                     f"{SCHEMA_VERSION}); COMMIT;")


_SCHEMA = """
        CREATE TABLE meta (
            key   TEXT PRIMARY KEY,
            value
        );
        -- One row per file, directory or symlink. nlink = 0 marks an orphan: unlinked while
        -- still open or looked up; removed at forget/release, or at the next mount.
        CREATE TABLE inodes (
            id        INTEGER PRIMARY KEY,
            mode      INTEGER NOT NULL,
            uid       INTEGER NOT NULL,
            gid       INTEGER NOT NULL,
            rdev      INTEGER NOT NULL DEFAULT 0,
            nlink     INTEGER NOT NULL,
            size      INTEGER NOT NULL DEFAULT 0,  -- logical size; bytes no extent covers are 0
            stored    INTEGER NOT NULL DEFAULT 0,  -- compressed bytes of its extents (st_blocks)
            atime_ns  INTEGER NOT NULL,
            mtime_ns  INTEGER NOT NULL,
            ctime_ns  INTEGER NOT NULL,
            target    BLOB                         -- symlink target, else NULL
        );
        -- Directory entries. id orders readdir and is its offset: stable under insert/delete.
        CREATE TABLE dentries (
            id      INTEGER PRIMARY KEY AUTOINCREMENT,
            parent  INTEGER NOT NULL REFERENCES inodes(id),
            name    BLOB NOT NULL,
            ino     INTEGER NOT NULL REFERENCES inodes(id),
            UNIQUE (parent, name)
        );
        CREATE INDEX dentries_ino ON dentries(ino);
        -- A file's block map, as runs: file bytes [off, off+len) are raw bytes
        -- [foff, foff+len) of frame `frame`. A run never spans two frames. Gaps are zeros
        -- (holes and all-zero pages are never stored). A frame that does not exist (or is
        -- marked lost) reads as EIO, never as zeros. store/blockmap.py is the only writer.
        CREATE TABLE extents (
            ino    INTEGER NOT NULL,
            off    INTEGER NOT NULL,
            len    INTEGER NOT NULL,
            frame  INTEGER NOT NULL,
            foff   INTEGER NOT NULL,
            PRIMARY KEY (ino, off)
        ) WITHOUT ROWID;
        -- Compressed frames: the record (header, block table, payload) at pack/off, rlen bytes.
        -- AUTOINCREMENT: an id gc freed is never given to another frame, so nothing that
        -- remembers a frame by id (the decoded-frame cache, the page index) can meet different
        -- bytes under it.
        CREATE TABLE frames (
            id      INTEGER PRIMARY KEY AUTOINCREMENT,
            pack    INTEGER NOT NULL REFERENCES packs(id),
            off     INTEGER NOT NULL,
            rlen    INTEGER NOT NULL,   -- whole record length in the pack
            stored  INTEGER NOT NULL,   -- payload length
            raw     INTEGER NOT NULL,   -- decompressed length
            codec   INTEGER NOT NULL,
            seed    INTEGER NOT NULL DEFAULT 0,  -- dedup domain its hashes are keyed by
            refs    INTEGER NOT NULL DEFAULT 0,  -- extents naming it; 0: gc removes it
            lost    INTEGER NOT NULL DEFAULT 0,  -- 1: fsck --repair found it damaged
            pages   BLOB,  -- dedup table: (u32 foff, 16-byte hash) per indexed page; NULL: none
            staged  INTEGER NOT NULL DEFAULT 0  -- 1: written raw and not deduplicated while a
                                                -- dump outran the encoder; settled when idle
        );
        -- What gc looks at: only frames nobody references are in it.
        CREATE INDEX frames_dead ON frames(id) WHERE refs <= 0;
        -- What the settler looks at: frames a dump wrote raw (store/store.py, stage).
        CREATE INDEX frames_staged ON frames(id) WHERE staged = 1;
        -- The sparse page index (store/index.py): a sample of page hashes (1 in 8, chosen by
        -- the hash itself) -> the newest frame holding that page. A hit loads the frame's whole
        -- page table. key is the hash's first 8 bytes >> 1; rows naming a frame that is gone
        -- are ignored (ids are never reused) and removed by gc.
        CREATE TABLE hooks (
            key    INTEGER PRIMARY KEY,
            frame  INTEGER NOT NULL
        );
        -- Pack files and how far each is committed: bytes past `size` are an uncommitted tail,
        -- cut off at the next open.
        CREATE TABLE packs (
            id    INTEGER PRIMARY KEY,
            size  INTEGER NOT NULL
        );
        -- Files whose bytes are in a staging file of their own, STORE/staging/<ino>, written by
        -- a dump through FUSE passthrough and not yet stored as frames (store/staging.py): such
        -- a file has no extents; its bytes are the staging file's, up to the inode's size.
        CREATE TABLE staging (
            ino   INTEGER PRIMARY KEY
        );
"""


# Upgrades from each older schema version to the next, run in one transaction at a writable
# open. A read-only open of an older schema asks for a mount instead: it never writes.
_UPGRADES = {
    1: """CREATE TABLE frames2 (
              id INTEGER PRIMARY KEY AUTOINCREMENT, pack INTEGER NOT NULL REFERENCES packs(id),
              off INTEGER NOT NULL, rlen INTEGER NOT NULL, stored INTEGER NOT NULL,
              raw INTEGER NOT NULL, codec INTEGER NOT NULL, seed INTEGER NOT NULL DEFAULT 0);
          INSERT INTO frames2(id, pack, off, rlen, stored, raw, codec)
              SELECT id, pack, off, rlen, stored, raw, codec FROM frames;
          DROP TABLE frames;
          ALTER TABLE frames2 RENAME TO frames;
       """,
    # 2 -> 3: content-defined blocks with a row each become runs of frames (docs/format.md).
    # Extents keep their bytes: a block's place in its frame becomes the run's. A placeholder
    # block of a repair (frame -1) stays a run in no frame (EIO); frames holding a block a
    # repair marked lost are marked lost. Page tables are filled in by _index_old_blocks.
    2: """CREATE TABLE extents3 (
              ino INTEGER NOT NULL, off INTEGER NOT NULL, len INTEGER NOT NULL,
              frame INTEGER NOT NULL, foff INTEGER NOT NULL,
              PRIMARY KEY (ino, off)) WITHOUT ROWID;
          INSERT INTO extents3 SELECT e.ino, e.off, e.len, COALESCE(b.frame, -1),
              COALESCE(b.foff, 0) FROM extents e LEFT JOIN blocks b ON b.id = e.block;
          DROP TABLE extents;
          ALTER TABLE extents3 RENAME TO extents;
          ALTER TABLE frames ADD COLUMN refs INTEGER NOT NULL DEFAULT 0;
          ALTER TABLE frames ADD COLUMN lost INTEGER NOT NULL DEFAULT 0;
          ALTER TABLE frames ADD COLUMN pages BLOB;
          ALTER TABLE frames ADD COLUMN staged INTEGER NOT NULL DEFAULT 0;
          CREATE TEMP TABLE upgrade_refs (frame INTEGER PRIMARY KEY, n INTEGER);
          INSERT INTO upgrade_refs SELECT frame, COUNT(*) FROM extents GROUP BY frame;
          UPDATE frames SET refs = (SELECT n FROM upgrade_refs WHERE frame = frames.id)
              WHERE id IN (SELECT frame FROM upgrade_refs);
          DROP TABLE upgrade_refs;
          UPDATE frames SET lost = 1 WHERE id IN
              (SELECT frame FROM blocks WHERE length(hash) != 16);
          CREATE TABLE hooks (key INTEGER PRIMARY KEY, frame INTEGER NOT NULL);
          CREATE INDEX frames_dead ON frames(id) WHERE refs <= 0;
          CREATE INDEX frames_staged ON frames(id) WHERE staged = 1;
       """,
}


def _index_old_blocks(conn: sqlite3.Connection) -> None:
    """Schema 2 -> 3, after the SQL: a block of format 1 that is one page is a page of the
    new index (same hash, same seed), so it goes into its frame's page table; multi-page
    blocks stay readable but are no dedup candidates for new writes."""
    from lzfs.store.pagetable import encode_table, hook_rows

    tables: dict[int, list[tuple[int, bytes]]] = {}
    for frame, foff, h in conn.execute(
            "SELECT b.frame, b.foff, b.hash FROM blocks b JOIN frames f ON f.id = b.frame "
            "WHERE b.len = 4096 AND length(b.hash) = 16 AND f.lost = 0 ORDER BY b.frame, b.foff"):
        tables.setdefault(frame, []).append((foff, bytes(h)))
    conn.executemany("UPDATE frames SET pages=? WHERE id=?",
                     [(encode_table(t), f) for f, t in tables.items()])
    conn.executemany("INSERT OR REPLACE INTO hooks(key, frame) VALUES (?,?)",
                     [r for f, t in tables.items() for r in hook_rows(f, t)])
    conn.execute("DROP TABLE blocks")


_UPGRADES[3] = "CREATE TABLE staging (ino INTEGER PRIMARY KEY)"
_PY_UPGRADES = {2: _index_old_blocks}


def _statements(script: str) -> list[str]:
    """The statements of an upgrade script (no string literals hold a ';' in them)."""
    return [st.strip() for st in script.split(";") if st.strip()]


class MetaDB:
    """``create`` makes a new database (mkfs only); otherwise the file must exist and is never
    created, converted or repaired by opening it. ``readonly`` opens it for reading only;
    ``immutable`` (with readonly, when no daemon holds the store) also promises SQLite that
    nobody writes it meanwhile, so not even the -wal and -shm files appear."""

    def __init__(self, path: Path, *, create: bool = False, readonly: bool = False,
                 immutable: bool = False, upgradable: bool = False,
                 scratch: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self.upgradable = upgradable  # a look before a writable open: an older schema is fine
        # read-only, and an older schema is upgraded in a private in-memory copy (what a
        # check-only fsck reads: it writes nothing, and checks old stores as they will be)
        self.scratch = scratch
        try:
            if create:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            elif not stat.S_ISREG(os.stat(path).st_mode):
                raise NotAStoreError(f"{path} is not a regular file")
        except FileNotFoundError:
            raise NotAStoreError(f"{path} is missing: this is not a whole lzfs store") from None
        except OSError as exc:
            raise NotAStoreError(f"{path}: {exc.strerror}") from None
        if readonly:
            uri = f"file:{quote(str(path))}?mode=ro" + ("&immutable=1" if immutable else "")
        else:
            uri = f"file:{quote(str(path))}?mode=rw"
        try:
            self.conn = sqlite3.connect(uri, uri=True, isolation_level=None,
                                        check_same_thread=False)
            if create:
                self.conn.execute("PRAGMA journal_mode=WAL")  # kept in the file from now on
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute("PRAGMA foreign_keys=OFF")
            self.conn.execute("PRAGMA cache_size=-65536")
            if create:
                create_tables(self.conn)
            self.conn.execute("BEGIN")
            self._check(wal=not readonly)  # immutable opens do not see the journal mode
        except sqlite3.DatabaseError as exc:
            self._close_quietly()
            raise CorruptDataError(f"{path}: metadata database is damaged: {exc}; "
                                   f"run 'lzfs fsck' on the store") from None
        except BaseException:
            self._close_quietly()
            raise

    def _close_quietly(self) -> None:
        conn = getattr(self, "conn", None)
        if conn is not None:
            conn.close()

    def _check(self, wal: bool) -> None:
        try:
            row = self.conn.execute(
                "SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise CorruptDataError(f"{self.path}: not an lzfs metadata database ({exc})") from None
        version = row[0] if row else None
        if not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
            raise CorruptDataError(f"{self.path}: unexpected schema version {version}")
        mode = self.conn.execute("PRAGMA journal_mode").fetchone()[0] if wal else "wal"
        if mode != "wal":
            raise CorruptDataError(f"{self.path}: journal mode is {mode}, not wal")
        if version == SCHEMA_VERSION or (self.readonly and self.upgradable):
            return
        if self.readonly and self.scratch:
            self.conn.execute("COMMIT")
            mem = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            self.conn.backup(mem)
            self.conn.close()
            self.conn = mem
        elif self.readonly:
            raise CorruptDataError(f"{self.path}: written by an older lzfs (schema {version}); "
                                   f"mount the store once to upgrade it")
        # executescript commits the (empty) open transaction first; the upgrade is one unit
        self.conn.executescript("BEGIN;")
        try:
            for v in range(version, SCHEMA_VERSION):
                for stmt in _statements(_UPGRADES[v]):
                    self.conn.execute(stmt)
                if v in _PY_UPGRADES:
                    _PY_UPGRADES[v](self.conn)
            self.conn.execute("UPDATE meta SET value=? WHERE key='schema_version'",
                              (SCHEMA_VERSION,))
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("BEGIN")

    # SQLITE_FULL, SQLITE_IOERR (and NOMEM, BUSY) may roll the whole open transaction back on
    # their own and leave the connection in autocommit, where every later statement would be
    # durable at once, half of a change without the rest. So after any failed statement or
    # commit the connection is put back into a transaction and marked broken: nothing from
    # then on can ever commit, and closing rolls it back. The store stays at its last commit.
    broken: BaseException | None = None

    def _guard(self, exc: sqlite3.Error) -> None:
        # A constraint error is the caller's business; an operational one (full, I/O, a
        # damaged page) leaves the transaction holding half of a change: never commit it.
        if isinstance(exc, sqlite3.OperationalError) or not self.conn.in_transaction:
            self.broken = self.broken or exc
        if not self.conn.in_transaction:
            self.conn.execute("BEGIN")

    def execute(self, sql: str, args: tuple | list = ()) -> sqlite3.Cursor:
        try:
            return self.conn.execute(sql, args)
        except sqlite3.Error as exc:
            self._guard(exc)
            raise

    def executemany(self, sql: str, rows) -> sqlite3.Cursor:
        try:
            return self.conn.executemany(sql, rows)
        except sqlite3.Error as exc:
            self._guard(exc)
            raise

    def commit(self) -> None:
        if self.broken is not None:
            raise sqlite3.OperationalError(
                f"not committing: an earlier statement failed ({self.broken}) and SQLite may "
                f"have rolled back part of this transaction")
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self.broken = exc
            if not self.conn.in_transaction:
                self.conn.execute("BEGIN")
            raise
        self.conn.execute("BEGIN")

    def close(self, commit: bool = True) -> None:
        if commit and self.broken is None:
            self.conn.execute("COMMIT")
        elif self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        with contextlib.suppress(sqlite3.DatabaseError):
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.close()
