"""Stores as lzfs wrote them before schema 3 (content-defined multi-page blocks, a row per
block), built directly, so the upgrade path is tested on the layout it must read. The schema
below is schema 2 exactly as lzfs 0.1 created it; nothing here is used by lzfs itself."""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from pathlib import Path

from lzfs.store.codec import PAGE, block_hash, encode_frame_parts
from lzfs.store.layout import mkfs
from lzfs.store.packs import PackSet

SCHEMA_2 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value);
CREATE TABLE inodes (id INTEGER PRIMARY KEY, mode INTEGER NOT NULL, uid INTEGER NOT NULL,
    gid INTEGER NOT NULL, rdev INTEGER NOT NULL DEFAULT 0, nlink INTEGER NOT NULL,
    size INTEGER NOT NULL DEFAULT 0, stored INTEGER NOT NULL DEFAULT 0,
    atime_ns INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,
    target BLOB);
CREATE TABLE dentries (id INTEGER PRIMARY KEY AUTOINCREMENT,
    parent INTEGER NOT NULL REFERENCES inodes(id), name BLOB NOT NULL,
    ino INTEGER NOT NULL REFERENCES inodes(id), UNIQUE (parent, name));
CREATE INDEX dentries_ino ON dentries(ino);
CREATE TABLE extents (ino INTEGER NOT NULL, off INTEGER NOT NULL, len INTEGER NOT NULL,
    block INTEGER NOT NULL REFERENCES blocks(id), PRIMARY KEY (ino, off)) WITHOUT ROWID;
CREATE INDEX extents_block ON extents(block);
CREATE TABLE blocks (id INTEGER PRIMARY KEY, hash BLOB NOT NULL UNIQUE,
    frame INTEGER NOT NULL REFERENCES frames(id), foff INTEGER NOT NULL,
    len INTEGER NOT NULL, refs INTEGER NOT NULL);
CREATE INDEX blocks_frame ON blocks(frame);
CREATE TABLE frames (id INTEGER PRIMARY KEY AUTOINCREMENT,
    pack INTEGER NOT NULL REFERENCES packs(id), off INTEGER NOT NULL, rlen INTEGER NOT NULL,
    stored INTEGER NOT NULL, raw INTEGER NOT NULL, codec INTEGER NOT NULL,
    seed INTEGER NOT NULL DEFAULT 0);
CREATE TABLE packs (id INTEGER PRIMARY KEY, size INTEGER NOT NULL);
INSERT INTO meta VALUES ('schema_version', 2);
"""
DAMAGED_PREFIX = b"\0damaged"


def make_format1_store(path: Path, files: dict[str, bytes], block_pages: int = 16,
                       garbage: bytes = b"", damaged: bytes = b"") -> None:
    """A store holding ``files`` (names under the root) in blocks of ``block_pages`` pages
    (the last block of a file shorter), zero pages as holes, blocks shared by content; plus,
    optionally, an unreferenced block (``garbage``) and a block that a repair marked lost
    (``damaged``, held by a file named "damaged")."""
    mkfs(path)
    db_path = path / "meta.db"
    os.unlink(db_path)
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript("BEGIN;" + SCHEMA_2 + "COMMIT;")
    packs = PackSet(path / "packs")
    packs.start({})
    now = time.time_ns()
    db.execute("BEGIN")
    db.execute("INSERT INTO inodes(id, mode, uid, gid, nlink, atime_ns, mtime_ns, ctime_ns) "
               "VALUES (1, ?, 0, 0, 2, ?, ?, ?)", (stat.S_IFDIR | 0o755, now, now, now))
    blocks: dict[bytes, int] = {}

    def store_block(data: bytes, refs: int, hash_: bytes | None = None) -> int:
        h = hash_ or block_hash(data)
        if h in blocks and hash_ is None:
            db.execute("UPDATE blocks SET refs = refs + ? WHERE id=?", (refs, blocks[h]))
            return blocks[h]
        head, parts = encode_frame_parts(data, [(len(data), block_hash(data))])
        (pack, off), = packs.append([parts])
        fid = db.execute("INSERT INTO frames(pack, off, rlen, stored, raw, codec, seed) "
                         "VALUES (?,?,?,?,?,?,0)", (pack, off, head.record_len,
                                                    head.stored_len, head.raw_len,
                                                    head.codec)).lastrowid
        bid = db.execute("INSERT INTO blocks(hash, frame, foff, len, refs) VALUES (?,?,0,?,?)",
                         (h, fid, len(data), refs)).lastrowid
        blocks[h] = bid
        return bid

    all_files = dict(files)
    if damaged:
        all_files["damaged"] = damaged
    ino = 1
    for name, data in all_files.items():
        ino += 1
        exts = []
        pos = 0
        while pos < len(data):  # as format 1 cut: a zero page ends a block and is a hole
            n = 0
            while n < block_pages * PAGE and pos + n < len(data):
                page = data[pos + n:pos + n + PAGE]
                if page == bytes(len(page)):
                    break
                n += len(page)
            if n == 0:
                pos += PAGE
                continue
            piece = data[pos:pos + n]
            if name == "damaged":
                bid = store_block(piece, 1, DAMAGED_PREFIX + pos.to_bytes(16, "little"))
            else:
                bid = store_block(piece, 1)
            exts.append((ino, pos, n, bid))
            pos += n
        db.execute("INSERT INTO inodes(id, mode, uid, gid, nlink, size, atime_ns, mtime_ns, "
                   "ctime_ns) VALUES (?,?,0,0,1,?,?,?,?)",
                   (ino, stat.S_IFREG | 0o644, len(data), now, now, now))
        db.execute("INSERT INTO dentries(parent, name, ino) VALUES (1, ?, ?)",
                   (name.encode(), ino))
        db.executemany("INSERT INTO extents(ino, off, len, block) VALUES (?,?,?,?)", exts)
    if garbage:
        store_block(garbage, 0)
    packs.sync()
    db.executemany("INSERT OR REPLACE INTO packs(id, size) VALUES (?,?)",
                   list(packs.sizes().items()))
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    packs.close()
