"""The cluster's parts without a server or a mount: manifests, the segment cache, backends."""

from __future__ import annotations

import random

import pytest

from lzfs.cluster import manifest
from lzfs.errors import CorruptDataError
from lzfs.objectstore.backend import DirBackend, open_backend
from lzfs.objectstore.cache import SEGMENT, SegmentCache
from lzfs.objectstore.protocol import RemoteError


def test_manifest_round_trips_and_rejects_damage():
    doc = {"format": manifest.FORMAT, "name": "server-1", "packs": ["packs/ab.pack"],
           "frames": [[0, 16, 100, 80, 200, 2, ""]], "entries": []}
    data = manifest.encode(doc)
    assert manifest.decode(data, "k") == doc
    flipped = bytearray(data)
    flipped[-3] ^= 1
    with pytest.raises(CorruptDataError, match="checksum"):
        manifest.decode(bytes(flipped), "k")
    with pytest.raises(CorruptDataError, match="not an lzfs manifest"):
        manifest.decode(b"LZFSMAN\x07" + data[8:], "k")


def test_manifest_keys_are_unique_and_the_newest_wins():
    keys = [manifest.new_key(b"srv 1/x", "node-a") for _ in range(3)]
    keys.append(manifest.new_key(b"other", "node-b"))
    assert len(set(keys)) == 4
    assert manifest.name_of(keys[0]) == b"srv 1/x"
    newest = manifest.newest_per_name(list(reversed(keys)))
    assert newest == {b"srv 1/x": max(keys[:3]), b"other": keys[3]}
    assert manifest.name_of("snapshots/a/b/c.lzm") is None  # not a manifest key


def test_segment_cache_reads_ranges_and_stays_under_its_limit(tmp_path):
    backend = DirBackend(tmp_path / "bucket")
    blob = random.Random(1).randbytes(5 * SEGMENT + 123)
    backend.put("packs/p.pack", blob)
    cache = SegmentCache(backend, tmp_path / "cache", limit=2 * SEGMENT)
    try:
        for off, n in [(0, 10), (SEGMENT - 5, 10), (3 * SEGMENT + 7, SEGMENT),
                       (5 * SEGMENT, 123)]:
            assert cache.read("packs/p.pack", off, n) == blob[off:off + n]
        gets = cache.counters.gets
        assert gets == 5  # segments 0, 1 (0 is cached by then), 3, 4, 5: one GET each
        assert cache.describe()["cached_bytes"] <= 2 * SEGMENT
        assert cache.read("packs/p.pack", 5 * SEGMENT, 10) == blob[5 * SEGMENT:][:10]
        assert cache.counters.gets == gets  # the most recent segment is still here
        cache.prefetch([("packs/p.pack", 0, 2 * SEGMENT)])
        assert cache.read("packs/p.pack", SEGMENT, 4) == blob[SEGMENT:SEGMENT + 4]
    finally:
        cache.close()
    again = SegmentCache(backend, tmp_path / "cache", limit=2 * SEGMENT)
    try:  # what a node cached survives its restart
        before = again.counters.gets
        assert again.read("packs/p.pack", SEGMENT, 4) == blob[SEGMENT:SEGMENT + 4]
        assert again.counters.gets == before
    finally:
        again.close()


def test_bytes_a_check_failed_on_are_not_cached_again_until_they_change(tmp_path):
    """A reader that fetches a segment again for a good frame of it, after another reader
    dropped it for a damaged one, gets the bytes but the cache keeps no copy; once the object
    holds other bytes (repaired), they are cached as usual."""
    backend = DirBackend(tmp_path / "bucket")
    bad = random.Random(2).randbytes(SEGMENT)
    backend.put("packs/p.pack", bad)
    cache = SegmentCache(backend, tmp_path / "cache", limit=4 * SEGMENT)
    try:
        assert cache.read("packs/p.pack", 0, 100) == bad[:100]
        assert cache.describe()["cached_bytes"] == SEGMENT
        cache.drop("packs/p.pack", 0, 100)  # a frame in it failed its check
        assert cache.read("packs/p.pack", 500, 100) == bad[500:600]  # another frame of it
        assert cache.describe()["cached_bytes"] == 0
        assert not list((tmp_path / "cache").rglob("0*"))
        good = random.Random(3).randbytes(SEGMENT)
        backend.put("packs/p.pack", good)
        assert cache.read("packs/p.pack", 0, 100) == good[:100]
        assert cache.describe()["cached_bytes"] == SEGMENT
        gets = cache.counters.gets
        assert cache.read("packs/p.pack", 0, 100) == good[:100]
        assert cache.counters.gets == gets
    finally:
        cache.close()


def test_unknown_store_urls_are_refused():
    with pytest.raises(RemoteError, match="unknown object store"):
        open_backend("gs://bucket/x")
    with pytest.raises(RemoteError, match="no bucket"):
        open_backend("s3:///x")


def test_manifest_keys_sort_in_publication_order(monkeypatch):
    """The newest manifest of a name is the one that sorts last, also across a second
    boundary and at the last microsecond of a second."""
    import time

    stamps = iter([1_795_000_000_999_999_900, 1_795_000_001_000_000_100,
                   1_795_000_001_999_999_999, 1_795_000_002_000_000_000])
    monkeypatch.setattr(time, "time_ns", lambda: next(stamps))
    keys = [manifest.new_key(b"snap", "node-a") for _ in range(4)]
    assert keys == sorted(keys) and len(set(keys)) == 4
    assert manifest.newest_per_name(keys)[b"snap"] == keys[-1]


def test_a_format_1_manifest_installs_as_runs_of_its_frames(tmp_path):
    """Buckets keep manifests of older lzfs (content-defined blocks): a node installs one as
    runs of the same frames, with its one-page blocks as dedup candidates."""
    import os

    from lzfs.store.codec import block_hash
    from lzfs.store.layout import mkfs
    from lzfs.store.store import Store

    page = os.urandom(4096)
    doc = {"format": manifest.FORMAT_1, "name": "old", "packs": ["packs/ab.pack"],
           "frames": [[0, 16, 9000, 8000, 3 * 4096, 2]],
           "blocks": [["11" * 16, 0, 0, 8192], [block_hash(page).hex(), 0, 8192, 4096]],
           "entries": [{"p": "pages-1.img", "m": 0o100644, "u": 0, "g": 0, "t": 0,
                        "s": 5 * 4096, "x": [[0, 8192, 0], [16384, 4096, 1]]}]}
    mkfs(tmp_path / "s")
    store = Store(tmp_path / "s")
    try:
        ns = store.ns
        ns.ensure_root()
        top = manifest.install(store, ns, manifest.decode(manifest.encode(doc), "k"),
                               {"packs/ab.pack": 1 << 40})
        ino = ns.lookup(top, b"pages-1.img")
        runs = store.maps.load(ino)
        frame = runs[0].frame
        assert [tuple(r) for r in runs] == [(0, 8192, frame, 0), (16384, 4096, frame, 8192)]
        assert store.db.execute("SELECT refs FROM frames WHERE id=?", (frame,)).fetchone()[0] == 2
        assert store.index.match([block_hash(page)]) == {block_hash(page): (frame, 8192)}
    finally:
        store.close(commit=False)


def test_the_journal_announces_only_what_is_new(tmp_path):
    """A node lists the journal from its last look: a new manifest and a tombstone come
    through once; entries it has read do not come again."""
    from lzfs.cluster.clock import BucketClock
    from lzfs.cluster.listing import BucketView, announced, journal_key

    backend = DirBackend(tmp_path / "bucket")
    (tmp_path / "bucket").mkdir()
    old = manifest.new_key(b"a,b/c", "node-a")
    backend.put(old, b"m")
    view = BucketView(backend, grace=3600, clock=BucketClock(backend))
    assert view.full() == {b"a,b/c": old}
    assert view.changes() == {}
    new = manifest.new_key(b"a,b/c", "node-b")
    gone = manifest.new_key(b"a,b/c", "rm.x", manifest.TOMBSTONE)
    other = manifest.new_key(b"other", "node-b")
    for key in (new, other):
        backend.put(key, b"m")
        backend.put(journal_key(key), b"")
    assert announced(journal_key(new)) == new
    assert view.changes() == {b"a,b/c": new, b"other": other}
    assert view.changes() == {}
    backend.put(gone, b"")
    backend.put(journal_key(gone), b"")
    assert view.changes() == {b"a,b/c": gone}
    assert manifest.entry_of(gone) == (b"a,b/c", True) and manifest.name_of(gone) is None
    assert view.full()[b"a,b/c"] == gone  # a full listing agrees


def test_gc_retires_manifests_behind_a_tombstone_older_than_the_grace_period():
    from lzfs.cluster.gc import live_and_retired
    from lzfs.objectstore.protocol import ObjectInfo

    keys = ["snapshots/s/20260101T000000.000000Z-n-00000001.lzm",
            "snapshots/s/20260102T000000.000000Z-n-00000002.rm",
            "snapshots/s/20260103T000000.000000Z-n-00000003.lzm",   # published again after
            "snapshots/t/20260101T000000.000000Z-n-00000004.lzm",
            "snapshots/t/20260102T000000.000000Z-n-00000005.rm"]    # deleted lately
    mtimes = [10, 20, 30, 10, 100]
    objs = [ObjectInfo(k, 1, m) for k, m in zip(keys, mtimes, strict=True)]
    live, retired = live_and_retired(objs, cutoff=50)
    assert sorted(live) == [keys[2], keys[3]]  # t's packs stay for the grace period
    assert sorted(retired) == [keys[0], keys[1]]


def test_manifests_stream_in_order_and_a_damaged_one_stops_the_stream(tmp_path):
    from lzfs.cluster.bucket import fetch_manifests

    backend = DirBackend(tmp_path / "bucket")
    keys = []
    for i in range(40):
        key = manifest.new_key(b"s%d" % i, "node-a")
        backend.put(key, manifest.encode({"format": manifest.FORMAT, "name": f"s{i}",
                                          "packs": [], "frames": [], "entries": []}))
        keys.append(key)
    got = [(k, doc["name"]) for k, doc in fetch_manifests(backend, keys, workers=3, ahead=4)]
    assert got == [(k, f"s{i}") for i, k in enumerate(keys)]
    backend.put(keys[7], b"LZFSMAN\x02" + bytes(8) + b"junk")
    with pytest.raises(CorruptDataError, match="checksum"):
        list(fetch_manifests(backend, keys, workers=3, ahead=4))


def test_the_mount_starter_names_the_daemon_log_as_the_store_does():
    from lzfs.mount.spawn import DAEMON_LOG
    from lzfs.store.layout import LOG

    assert DAEMON_LOG == LOG


class _StoreAnHourAhead(DirBackend):
    """A shared directory whose server stamps objects an hour later than this machine's clock:
    the one thing about an object store the clock code reads."""

    def head(self, key: str):
        from dataclasses import replace

        info = super().head(key)
        return None if info is None else replace(info, mtime=info.mtime + 3600)


def test_the_bucket_clock_reads_the_stores_time_and_cleans_up(tmp_path, caplog):
    from lzfs.cluster.clock import BucketClock, synced

    same = synced(DirBackend(tmp_path / "a"))
    assert abs(same.offset) < 0.5 and same.measured
    (tmp_path / "b").mkdir()
    ahead = BucketClock(_StoreAnHourAhead(tmp_path / "b"))
    assert ahead.now() == pytest.approx(__import__("time").time(), abs=1)  # not yet read
    ahead.sync()
    assert ahead.offset == pytest.approx(3600, abs=0.5)
    assert "this node's clock is 3600 s behind the object store's" in caplog.text
    key = manifest.new_key(b"s", "n", now_ns=ahead.now_ns())
    assert manifest.time_of(key) > manifest.time_of(manifest.new_key(b"s", "n"))
    assert not list((tmp_path / "b").rglob("clock/*"))  # the probe is gone


def test_a_bucket_clock_that_cannot_reach_the_store_keeps_this_nodes(tmp_path):
    from lzfs.cluster.clock import BucketClock

    (tmp_path / "file").write_text("not a directory")
    clock = BucketClock(DirBackend(tmp_path / "file" / "bucket"))  # every request fails
    assert clock.sync() == 0.0 and not clock.measured
