"""The block store on its own: dedup, reference counts, crash recovery, gc, bad stores."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest

from lzfs.errors import CorruptDataError, FormatVersionError, NotAStoreError, StoreBusyError
from lzfs.store import Store, mkfs
from lzfs.store.layout import CONFIG


def _ingest(store: Store, data: bytes) -> list[int]:
    exts, _ = store.ingest_sync(data, 0, True)
    ids = [r.id for _, _, r in exts]
    store.incref(ids)
    return ids


def test_same_data_is_stored_once(store_path):
    store = Store(store_path)
    try:
        data = os.urandom(1 << 20)
        a = _ingest(store, data)
        packs_before = store.stats().stored
        b = _ingest(store, data)
        assert a == b
        st = store.stats()
        assert st.stored == packs_before
        assert st.referenced == 2 * len(data)
        assert st.unique == len(data)
    finally:
        store.close()


def test_uncommitted_tail_is_cut_at_next_open(store_path):
    store = Store(store_path)
    _ingest(store, os.urandom(300_000))
    store.commit()
    committed = store.stats().pack_bytes
    _ingest(store, os.urandom(500_000))  # written to the pack, never committed
    store.packs.sync()
    store.db.conn.close()  # as if the daemon died here
    store.lock.release()
    store = Store(store_path)
    try:
        assert store.stats().pack_bytes <= committed + 4096
        assert store.db.execute("SELECT COUNT(*) FROM frames").fetchone()[0] > 0
        # every committed frame still decodes
        for (fid,) in store.db.execute("SELECT id FROM frames").fetchall():
            store.read_frame(store.frame_loc(fid))
    finally:
        store.close()


def test_gc_gives_back_space_of_dead_blocks_only(store_path):
    store = Store(store_path)
    try:
        keep = _ingest(store, os.urandom(2 << 20))
        gone = _ingest(store, os.urandom(2 << 20))
        store.decref(gone)
        store.commit()
        before = store.stats().pack_bytes
        removed, freed = store.gc()
        assert removed == len(set(gone))
        assert freed >= (2 << 20)
        assert store.stats().pack_bytes <= before - (2 << 20) + 65536
        for bid in keep:
            fid, = store.db.execute("SELECT frame FROM blocks WHERE id=?", (bid,)).fetchone()
            store.read_frame(store.frame_loc(fid))
    finally:
        store.close()


def test_corrupt_pack_byte_is_detected(store_path):
    store = Store(store_path)
    try:
        ids = _ingest(store, b"criu pages " * 100_000)
        store.commit()
        fid, = store.db.execute("SELECT frame FROM blocks WHERE id=?", (ids[0],)).fetchone()
        loc = store.frame_loc(fid)
        path = store_path / "packs" / f"{loc.pack:08d}.pack"
        with open(path, "r+b") as f:
            f.seek(loc.off + loc.rlen - 3)
            b = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([b[0] ^ 0xFF]))
        with pytest.raises(CorruptDataError):
            store.read_frame(loc)
    finally:
        store.close()


def test_second_opener_is_refused_clearly(store_path):
    store = Store(store_path)
    try:
        with pytest.raises(StoreBusyError, match="in use"):
            Store(store_path)
    finally:
        store.close()


def test_not_a_store(tmp_path):
    with pytest.raises(NotAStoreError, match="not an lzfs store"):
        Store(tmp_path)
    with pytest.raises(NotAStoreError, match="no such directory"):
        Store(tmp_path / "missing")


def test_newer_format_is_refused(store_path):
    cfg = json.loads((store_path / CONFIG).read_text())
    cfg["version"] = 99
    (store_path / CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(FormatVersionError, match="upgrade lzfs"):
        Store(store_path)


def test_damaged_database_is_reported(store_path):
    (store_path / "meta.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CorruptDataError, match="damaged|not an lzfs"):
        Store(store_path)


def test_mkfs_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "x").write_text("data")
    with pytest.raises(NotAStoreError, match="not empty"):
        mkfs(tmp_path)
    mkfs(tmp_path / "s")
    with pytest.raises(NotAStoreError, match="already holds"):
        mkfs(tmp_path / "s")


def test_store_files_are_private(store_path):
    assert (store_path.stat().st_mode & 0o777) == 0o700
    assert ((store_path / "meta.db").stat().st_mode & 0o777) == 0o600
    assert ((store_path / "packs").stat().st_mode & 0o777) == 0o700
    store = Store(store_path)
    store.close()
    for p in (store_path / "packs").iterdir():
        assert (p.stat().st_mode & 0o777) == 0o600
    sqlite3.connect(store_path / "meta.db").close()


def test_a_random_page_read_decompresses_at_most_256_kib(store_path):
    store = Store(store_path)
    try:
        _ingest(store, b"compressible text " * 1_000_000 + os.urandom(3 << 20))
        biggest = store.db.execute("SELECT MAX(raw), MAX(len) FROM frames, blocks").fetchone()
        assert biggest[0] <= 256 * 1024
        assert biggest[1] <= 256 * 1024
    finally:
        store.close()


def test_schema_1_store_is_upgraded_at_a_writable_open_only(store_path):
    store = Store(store_path)
    data = os.urandom(300_000)
    blocks = _ingest(store, data)
    store.commit()
    store.close()
    db = sqlite3.connect(store_path / "meta.db", isolation_level=None)
    db.execute("ALTER TABLE frames DROP COLUMN seed")  # what lzfs 0.1 created
    db.execute("UPDATE meta SET value=1 WHERE key='schema_version'")
    db.close()
    with pytest.raises(CorruptDataError, match="older lzfs"):
        Store(store_path, readonly=True)
    store = Store(store_path)
    try:
        frame = store.db.execute("SELECT frame FROM blocks WHERE id=?", (blocks[0],)).fetchone()[0]
        assert store.read_frame(store.frame_loc(frame))[:1000] == data[:1000]
        assert store.db.execute("SELECT value FROM meta WHERE key='schema_version'"
                                ).fetchone()[0] == 2
    finally:
        store.close()
    Store(store_path, readonly=True).close()


def test_a_dedup_domain_changes_every_block_hash(store_path):
    data = os.urandom(200_000)
    store = Store(store_path, domain="tenant-a")
    try:
        a = _ingest(store, data)
        assert _ingest(store, data) == a
    finally:
        store.close()
    store = Store(store_path, domain="tenant-b")
    try:
        b = _ingest(store, data)
        assert not set(a) & set(b)
        seeds = {r[0] for r in store.db.execute("SELECT DISTINCT seed FROM frames")}
        assert len(seeds) == 2 and 0 not in seeds
    finally:
        store.close()
