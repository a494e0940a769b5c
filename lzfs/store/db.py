"""The metadata database. `create_tables` is the canonical reference for the schema.

One connection, used from one thread (the daemon's trio thread). A transaction is always open:
every change since the last `commit()` is one unit, so a crash rolls the store back to the
last commit, never to a state in between (packs are truncated to match, see packs.py).
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path
from urllib.parse import quote

from ..errors import CorruptDataError, NotAStoreError

SCHEMA_VERSION = 2


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
        -- A file's block map: [off, off+len) holds block `block`. Gaps are zeros (holes and
        -- all-zero pages are never stored).
        CREATE TABLE extents (
            ino    INTEGER NOT NULL,
            off    INTEGER NOT NULL,
            len    INTEGER NOT NULL,
            block  INTEGER NOT NULL REFERENCES blocks(id),
            PRIMARY KEY (ino, off)
        ) WITHOUT ROWID;
        CREATE INDEX extents_block ON extents(block);
        -- Deduplicated blocks, named by content hash. refs = number of extents naming it; a
        -- block at 0 stays until gc so that a later write of the same content can revive it.
        CREATE TABLE blocks (
            id     INTEGER PRIMARY KEY,
            hash   BLOB NOT NULL UNIQUE,  -- 24 bytes (DAMAGED_PREFIX + id): lost, see fsck
            frame  INTEGER NOT NULL REFERENCES frames(id),
            foff   INTEGER NOT NULL,  -- offset of the block in its frame's raw data
            len    INTEGER NOT NULL,
            refs   INTEGER NOT NULL
        );
        CREATE INDEX blocks_frame ON blocks(frame);
        -- Compressed frames: the record (header, block table, payload) at pack/off, rlen bytes.
        -- AUTOINCREMENT: an id gc freed is never given to another frame, so nothing that
        -- remembers a frame by id (the decoded-frame cache) can meet different bytes under it.
        CREATE TABLE frames (
            id      INTEGER PRIMARY KEY AUTOINCREMENT,
            pack    INTEGER NOT NULL REFERENCES packs(id),
            off     INTEGER NOT NULL,
            rlen    INTEGER NOT NULL,   -- whole record length in the pack
            stored  INTEGER NOT NULL,   -- payload length
            raw     INTEGER NOT NULL,   -- decompressed length
            codec   INTEGER NOT NULL,
            seed    INTEGER NOT NULL DEFAULT 0  -- dedup domain its block hashes are keyed by
        );
        -- Pack files and how far each is committed: bytes past `size` are an uncommitted tail,
        -- cut off at the next open.
        CREATE TABLE packs (
            id    INTEGER PRIMARY KEY,
            size  INTEGER NOT NULL
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
}


class MetaDB:
    """``create`` makes a new database (mkfs only); otherwise the file must exist and is never
    created, converted or repaired by opening it. ``readonly`` opens it for reading only;
    ``immutable`` (with readonly, when no daemon holds the store) also promises SQLite that
    nobody writes it meanwhile, so not even the -wal and -shm files appear."""

    def __init__(self, path: Path, *, create: bool = False, readonly: bool = False,
                 immutable: bool = False, upgradable: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self.upgradable = upgradable  # a look before a writable open: an older schema is fine
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
        if self.readonly:
            raise CorruptDataError(f"{self.path}: written by an older lzfs (schema {version}); "
                                   f"mount the store once to upgrade it")
        steps = "".join(_UPGRADES[v] for v in range(version, SCHEMA_VERSION))
        # executescript commits the (empty) open transaction first; the upgrade is one unit
        self.conn.executescript(f"BEGIN; {steps} UPDATE meta SET value={SCHEMA_VERSION} "
                                f"WHERE key='schema_version'; COMMIT;")
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

    def rollback(self) -> None:
        self.conn.execute("ROLLBACK")
        self.conn.execute("BEGIN")

    def close(self, commit: bool = True) -> None:
        if commit and self.broken is None:
            self.conn.execute("COMMIT")
        elif self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.DatabaseError:
            pass
        self.conn.close()
