"""The block store on its own: page dedup, reference counts, crash recovery, gc, upgrades from
older formats, bad stores."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from lzfs.errors import CorruptDataError, FormatVersionError, NotAStoreError, StoreBusyError
from lzfs.store.blockmap import Run
from lzfs.store.chunker import Piece
from lzfs.store.db import SCHEMA_VERSION
from lzfs.store.layout import CONFIG, mkfs, read_config
from lzfs.store.store import Store
from tests.conftest import assert_private

_NEXT_INO = [1000]


def _ingest(store: Store, data: bytes, ino: int | None = None) -> list[Run]:
    """Store ``data`` as a whole file and record its runs (what a FileMap does)."""
    if ino is None:
        _NEXT_INO[0] += 1
        ino = _NEXT_INO[0]
    runs, consumed = trio.run(store.ingest, data, 0, True)
    assert consumed == len(data)
    store.maps.insert(ino, runs)
    return runs


def _frames(runs: list[Run]) -> list[int]:
    return sorted({r.frame for r in runs})


def test_same_data_is_stored_once(store_path):
    store = Store(store_path)
    try:
        data = os.urandom(1 << 20)
        a = _ingest(store, data)
        packs_before = store.stats().stored
        b = _ingest(store, data)
        assert [(r.frame, r.foff, r.len) for r in a] == [(r.frame, r.foff, r.len) for r in b]
        st = store.stats()
        assert st.stored == packs_before
        assert st.referenced == 2 * len(data)
        assert st.unique == len(data)
    finally:
        store.close()


def test_one_changed_page_costs_one_page(store_path):
    """Dedup is per page: a second version of a file with scattered pages changed stores
    those pages and nothing else (format 1 stored a whole 16-page block per changed page)."""
    store = Store(store_path)
    try:
        pages = [os.urandom(4096) for _ in range(2048)]  # 8 MiB
        _ingest(store, b"".join(pages))
        before = store.stats().unique
        changed = list(range(7, 2048, 97))  # 22 scattered pages
        for i in changed:
            pages[i] = os.urandom(4096)
        runs = _ingest(store, b"".join(pages))
        assert store.stats().unique - before == len(changed) * 4096
        # the runs are few: whole stretches of old frames, cut only around the changes
        assert len(runs) <= 2048 // 64 + 3 * len(changed) + 2
    finally:
        store.close()


def test_shifted_pages_are_stored_once(store_path):
    """Pages inserted at the front and in the middle of a pages image, and some removed, move
    whole pages: every page that was there before is found again (at least 99% of them: a
    sparse index may miss a frame none of whose sampled pages came along)."""
    store = Store(store_path)
    try:
        pages = [os.urandom(4096) for _ in range(4000)]
        _ingest(store, b"".join(pages))
        before = store.stats().unique
        shifted = ([os.urandom(4096) for _ in range(7)] + pages[:1500]
                   + [os.urandom(4096) for _ in range(33)] + pages[1530:])
        _ingest(store, b"".join(shifted))
        added = store.stats().unique - before
        assert added >= 40 * 4096
        assert added <= 40 * 4096 + 0.01 * 3970 * 4096
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


def test_a_read_only_open_after_a_crash_sees_what_was_committed(store_path):
    """A daemon that dies leaves committed transactions in meta.db-wal: a reader must not
    skip them (the quiet, immutable open is only for a store with no WAL content)."""
    code = ("import os, sys\n"
            "from lzfs.store.store import Store\n"
            "import trio\n"
            "s = Store(sys.argv[1])\n"
            "runs, _ = trio.run(s.ingest, os.urandom(300_000), 0, True)\n"
            "s.maps.insert(1, runs)\n"
            "s.commit()\n"
            "os._exit(0)\n")
    subprocess.run([sys.executable, "-c", code, str(store_path)], check=True)
    assert (store_path / "meta.db-wal").stat().st_size > 0
    names = sorted(os.listdir(store_path))
    store = Store(store_path, readonly=True)
    try:
        assert store.stats().unique == 300_000
    finally:
        store.close()
    assert sorted(os.listdir(store_path)) == names


def test_gc_gives_back_space_of_dead_frames_only(store_path):
    store = Store(store_path)
    try:
        keep = _ingest(store, os.urandom(2 << 20), ino=1)
        gone = _ingest(store, os.urandom(2 << 20), ino=2)
        store.maps.purge(2)
        assert store.garbage
        store.commit()
        before = store.stats().pack_bytes
        removed, freed = store.gc()
        assert removed == len(_frames(gone))
        assert freed >= (2 << 20)
        assert store.stats().pack_bytes <= before - (2 << 20) + 65536
        assert not store.garbage
        for fid in _frames(keep):
            store.read_frame(store.frame_loc(fid))
    finally:
        store.close()


def test_gc_forgets_the_pages_of_collected_frames(store_path):
    """After gc, the same content written again is stored again (its old frame is gone),
    and reads back."""
    store = Store(store_path)
    try:
        data = os.urandom(1 << 20)
        first = _ingest(store, data, ino=1)
        store.maps.purge(1)
        store.gc()
        second = _ingest(store, data, ino=2)
        assert not set(_frames(first)) & set(_frames(second))
        raw = b"".join(store.read_frame(store.frame_loc(f)) for f in _frames(second))
        assert raw == data
        gone = ",".join(map(str, _frames(first)))
        assert store.db.execute(f"SELECT COUNT(*) FROM hooks WHERE frame IN ({gone})"
                                ).fetchone()[0] == 0
    finally:
        store.close()


def test_corrupt_pack_byte_is_detected(store_path):
    store = Store(store_path)
    try:
        runs = _ingest(store, b"criu pages " * 100_000)
        store.commit()
        loc = store.frame_loc(runs[0].frame)
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
    with pytest.raises(CorruptDataError, match=r"damaged|not an lzfs"):
        Store(store_path)


def test_mkfs_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "x").write_text("data")
    with pytest.raises(NotAStoreError, match="not empty"):
        mkfs(tmp_path)
    mkfs(tmp_path / "s")
    with pytest.raises(NotAStoreError, match="already holds"):
        mkfs(tmp_path / "s")


@pytest.mark.parametrize("umask", [0o022, 0o000], ids=["umask-022", "umask-000"])
def test_store_files_are_private_under_any_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = tmp_path / "store"
        mkfs(path)
        store = Store(path)
        _ingest(store, os.urandom(300_000))
        store.commit()
        assert {"meta.db-wal", "meta.db-shm", "lock"} <= set(os.listdir(path))
        assert_private(path)
        store.gc()
        store.close()
    finally:
        os.umask(old)
    assert_private(path)
    assert os.listdir(path / "packs")


def test_a_random_page_read_decompresses_at_most_256_kib(store_path):
    store = Store(store_path)
    try:
        _ingest(store, b"compressible text " * 1_000_000 + os.urandom(3 << 20))
        biggest = store.db.execute("SELECT MAX(raw) FROM frames").fetchone()
        assert biggest[0] <= 256 * 1024
    finally:
        store.close()


def test_a_format_1_store_is_upgraded_at_a_writable_open_only(tmp_path):
    """Stores of schema 1 and 2 (multi-page blocks with a row each) keep every byte: their
    blocks become runs of the same frames, counts are recomputed from the runs, single-page
    blocks join the page index (a new write of that page dedups against them), unreferenced
    blocks become garbage frames, a block a repair marked lost reads as EIO."""
    from lzfs.store.codec import block_hash
    from lzfs.store.pagetable import hook_key
    from tests.format1 import make_format1_store

    one_page = os.urandom(4096)
    while hook_key(block_hash(one_page)) is None:  # a lone page is found through its hook
        one_page = os.urandom(4096)
    files = {"pages-1.img": os.urandom(20 * 4096) + bytes(8192) + one_page,
             "copy.img": os.urandom(3 * 4096 + 100)}
    files["again.img"] = files["pages-1.img"]
    for schema in (1, 2):
        path = tmp_path / f"s{schema}"
        make_format1_store(path, files, garbage=os.urandom(8192), damaged=os.urandom(4096))
        if schema == 1:
            db = sqlite3.connect(path / "meta.db", isolation_level=None)
            db.execute("ALTER TABLE frames DROP COLUMN seed")  # what lzfs 0.1 created
            db.execute("UPDATE meta SET value=1 WHERE key='schema_version'")
            db.close()
        with pytest.raises(CorruptDataError, match="older lzfs"):
            Store(path, readonly=True)
        store = Store(path)
        try:
            assert store.db.execute("SELECT value FROM meta WHERE key='schema_version'"
                                    ).fetchone()[0] == SCHEMA_VERSION
            assert store.staging.inodes() == []  # schema 4's table is there, empty
            inos = dict(store.db.execute("SELECT name, ino FROM dentries"))
            for name, data in files.items():
                assert store.read_file(inos[name.encode()], len(data)) == data
            with pytest.raises(CorruptDataError):
                store.read_file(inos[b"damaged"], 4096)
            # counts are the runs naming each frame; the unreferenced block is garbage
            assert store.stats().garbage_frames == 1
            counted = store.db.execute(
                "SELECT COUNT(*) FROM frames f WHERE refs != (SELECT COUNT(*) FROM extents e "
                "WHERE e.frame = f.id)").fetchone()[0]
            assert counted == 0
            # the single-page block is a dedup candidate now
            before = store.stats().unique
            runs = _ingest(store, one_page)
            assert store.stats().unique == before
            assert runs[0].frame == store.maps.load(inos[b"pages-1.img"])[-1].frame
            store.commit()
        finally:
            store.close()
        Store(path, readonly=True).close()


def test_a_dedup_domain_changes_every_block_hash(store_path):
    data = os.urandom(200_000)
    store = Store(store_path, domain="tenant-a")
    try:
        a = _frames(_ingest(store, data))
        assert _frames(_ingest(store, data)) == a
    finally:
        store.close()
    store = Store(store_path, domain="tenant-b")
    try:
        b = _frames(_ingest(store, data))
        assert not set(a) & set(b)
        seeds = {r[0] for r in store.db.execute("SELECT DISTINCT seed FROM frames")}
        assert len(seeds) == 2 and 0 not in seeds
    finally:
        store.close()


# ---- fuzz: the config and the packs as found on disk -----------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)
_CONFIGS = st.fixed_dictionaries(
    {}, optional={"format": st.sampled_from(["lzfs", "LZFS", ""]) | _JSON,
                  "version": st.sampled_from([1, 0, -1, 2, 99, True, 1.0, "1"]) | _JSON,
                  "avg_pages": st.sampled_from([16, 1, 3, 0, -16, 128, 16.0]) | _JSON,
                  "max_pages": st.sampled_from([64, 16, 65, 1 << 40]) | _JSON,
                  "created": st.floats(allow_nan=False) | _JSON}).map(json.dumps)


@settings(max_examples=300, deadline=None)
@given(_CONFIGS | _JSON.map(json.dumps) | st.binary(max_size=200).map(
    lambda b: b.decode("latin-1")) | st.just("[" * 100_000))
def test_any_config_is_read_as_a_valid_one_or_refused(text):
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / CONFIG).write_text(text, encoding="latin-1")
        try:
            cfg = read_config(d)
        except (NotAStoreError, FormatVersionError):
            return
        assert cfg.version == 1 and cfg.format == "lzfs"


@pytest.fixture(scope="module")
def committed_store(tmp_path_factory) -> tuple[Path, dict[int, bytes]]:
    """A store with a few committed frames, and each frame's raw bytes."""
    path = tmp_path_factory.mktemp("fuzz") / "store"
    mkfs(path)
    store = Store(path)
    try:
        for i in range(4):
            _ingest(store, os.urandom(100_000) + b"text %d " % i * 20_000)
            store.commit()
        frames = {fid: store.read_frame(store.frame_loc(fid))
                  for (fid,) in store.db.execute("SELECT id FROM frames").fetchall()}
    finally:
        store.close()
    return path, frames


_PACK_DAMAGE = st.lists(st.one_of(
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=3000)),
    st.tuples(st.just("truncate"), st.floats(min_value=0, max_value=1.2)),
    st.tuples(st.just("flip"), st.floats(min_value=0, max_value=1)),
    st.tuples(st.just("stray pack"), st.binary(max_size=100)),
    st.tuples(st.just("other file"), st.binary(max_size=100))), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(_PACK_DAMAGE)
def test_recovery_cuts_tails_and_never_loses_or_falsifies_a_committed_frame(
        committed_store, damage):
    """Garbage appended to a pack (a tail a dying daemon wrote), packs the database does not
    know, truncation and flipped bytes: opening cuts what is uncommitted, removes stray packs,
    leaves other files alone, and then every committed frame either reads back exactly or
    (where its bytes were damaged) raises CorruptDataError. The store stays writable."""
    base, frames = committed_store
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "store"
        shutil.copytree(base, path)
        pack = path / "packs" / "00000001.pack"
        original = pack.read_bytes()
        committed = len(original)
        data = bytearray(original)
        for how, arg in damage:
            if how == "append":
                data += arg
            elif how == "truncate":
                del data[int(len(data) * arg):]
            elif how == "flip" and data:
                data[min(int(len(data) * arg), len(data) - 1)] ^= 0x5A
            elif how == "stray pack":
                (path / "packs" / "00000007.pack").write_bytes(arg)
            elif how == "other file":
                (path / "packs" / "notes.txt").write_bytes(arg)
        pack.write_bytes(bytes(data))
        store = Store(path)
        try:
            assert pack.stat().st_size == min(len(data), committed)
            assert not (path / "packs" / "00000007.pack").exists()
            kept = pack.read_bytes()
            for fid, raw in frames.items():
                loc = store.frame_loc(fid)
                if kept[loc.off:loc.off + loc.rlen] == original[loc.off:loc.off + loc.rlen]:
                    assert store.read_frame(loc) == raw
                else:
                    with pytest.raises(CorruptDataError):
                        store.read_frame(loc)
            new = os.urandom(50_000)
            runs = _ingest(store, new)
            store.commit()
        finally:
            store.close()
        store = Store(path, readonly=True)
        try:
            assert new in store.read_frame(store.frame_loc(runs[0].frame))
        finally:
            store.close()
        if any(how == "other file" for how, _ in damage):
            assert (path / "packs" / "notes.txt").exists()


def test_a_failed_commit_never_lets_a_later_change_commit(tmp_path):
    """SQLite answers a full disk at COMMIT by rolling back on its own; the connection must
    not drift into autocommit, where later statements would each be durable."""
    import subprocess

    from lzfs.store.db import MetaDB

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        db = MetaDB(small / "meta.db", create=True)
        db.execute("INSERT INTO packs(id, size) VALUES (1, 16)")
        db.commit()
        with pytest.raises(sqlite3.Error):
            for i in range(100_000):  # far more than 1 MiB
                db.execute("INSERT INTO meta VALUES (?, ?)", (f"k{i}", os.urandom(200)))
                if i % 500 == 0:
                    db.commit()
            db.commit()
        assert db.broken is not None
        db.execute("UPDATE packs SET size = 99 WHERE id = 1")  # after the failure
        with pytest.raises(sqlite3.Error):
            db.commit()
        db.close()
        db = MetaDB(small / "meta.db", readonly=True)
        assert db.execute("SELECT size FROM packs").fetchone()[0] == 16
        db.conn.close()
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


@pytest.mark.parametrize("kind", ["text", "random"])
def test_pack_new_frames_pages_with_and_without_gaps_between_them(store_path, kind):
    """New pages usually lie back to back in the written buffer (a frame is then compressed,
    or stored raw, from a view of it, no join); deduplicated or zero pieces leave gaps between
    them. Both shapes must read back byte for byte, compressed (text) or raw (random)."""
    from lzfs.store.codec import Codec, block_hash

    store = Store(store_path)
    try:
        text = b"the cache keeps keys and values for each layer " * 12000
        buf = text[:600 * 1024] if kind == "text" else os.urandom(600 * 1024)
        spans = [(0, 65536), (65536, 65536), (131072, 131072),  # back to back: one frame
                 (266240, 8192), (278528, 16384), (360448, 65536)]  # with gaps between
        cuts = [Piece(lo, n, block_hash(buf[lo:lo + n], store.seed)) for lo, n in spans]
        frames = store.pack_new(buf, cuts)
        assert [len(f.header.blocks) for f in frames] == [3, 3]
        want = Codec.LZ4 if kind == "text" else Codec.RAW
        assert all(f.header.codec == want for f in frames)
        refs = store.register(frames)
        for c in cuts:
            frame, foff = refs[c.hash]
            raw = store.read_frame(store.frame_loc(frame))
            assert raw[foff:foff + c.length] == buf[c.start:c.start + c.length]
    finally:
        store.close(commit=False)


def test_a_short_pwritev_is_finished_and_the_record_reads_back(store_path, monkeypatch):
    """pwritev may write less than asked (a signal, a size limit): the rest of the record
    must follow at the right offset, or the frame would fail its checksum."""
    from lzfs.store import packs as packs_mod
    from lzfs.store.codec import block_hash

    real = os.pwritev
    calls = []

    def short(fd, buffers, offset):
        calls.append(sum(len(b) for b in buffers))
        data = b"".join(bytes(b) for b in buffers)
        return real(fd, [data[:len(data) // 3]], offset)  # a third only

    monkeypatch.setattr(packs_mod.os, "pwritev", short)
    store = Store(store_path)
    try:
        buf = os.urandom(40960)
        cut = Piece(0, len(buf), block_hash(buf, store.seed))
        refs = store.register(store.pack_new(buf, [cut]))
        assert calls, "the pack write went around pwritev"
        frame, _ = refs[cut.hash]
        assert store.read_frame(store.frame_loc(frame))[:len(buf)] == buf
    finally:
        store.close(commit=False)
