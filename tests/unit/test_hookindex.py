"""The bucket's published page index (cluster/hookindex.py) without a server or a mount: its
object format, which manifest an entry names, shards, and gc keeping it true."""

from __future__ import annotations

import base64
import random

import numpy as np
import pytest

from lzfs.cluster import gc, hookindex, manifest
from lzfs.cluster.bucket import remote_mkfs
from lzfs.errors import CorruptDataError
from lzfs.objectstore.backend import DirBackend
from lzfs.store.pagetable import decode_table, encode_table, hook_key
from lzfs.testing import synthetic


def _hashes(rng: random.Random, n: int) -> list[bytes]:
    return [rng.randbytes(16) for _ in range(n)]


def _table(hashes: list[bytes]) -> str:
    return base64.b64encode(encode_table([(i * 4096, h) for i, h in enumerate(hashes)])).decode()


def _doc(pack: str, tables: list[list[bytes]]) -> dict:
    return {"format": manifest.FORMAT, "packs": [pack],
            "frames": [[0, i * 100, 100, 80, 4096 * len(t), 2, _table(t)]
                       for i, t in enumerate(tables)], "entries": []}


def _hooks(hashes: list[bytes]) -> list[int]:
    return [k for h in hashes if (k := hook_key(h)) is not None]


def test_frame_hooks_are_the_page_indexs_hooks():
    rng = random.Random(1)
    hashes = _hashes(rng, 200)
    got = hookindex.frame_hooks(_table(hashes)).tolist()
    assert got == _hooks(hashes) and len(got) > 10
    assert hookindex.hook_keys_of(hashes).tolist() == got
    assert len(hookindex.frame_hooks("")) == 0


def test_an_index_object_round_trips_and_rejects_damage():
    rng = random.Random(2)
    part = hookindex.build([("snapshots/a/1.lzm", [(0, hookindex.frame_hooks(
        _table(_hashes(rng, 64))))])])
    data = hookindex.encode(part)
    back = hookindex.decode(data, "k")
    assert back.manifests == part.manifests
    assert back.keys.tolist() == part.keys.tolist() == sorted(part.keys.tolist())
    flipped = bytearray(data)
    flipped[-2] ^= 1
    with pytest.raises(CorruptDataError, match="checksum"):
        hookindex.decode(bytes(flipped), "k")
    with pytest.raises(CorruptDataError, match="not an lzfs index"):
        hookindex.decode(b"LZFSIDX\x09" + data[8:], "k")


def test_a_hook_names_the_newest_manifest_that_holds_it_and_shards_split_by_key():
    rng = random.Random(3)
    shared, old_only, new_only = _hashes(rng, 400), _hashes(rng, 400), _hashes(rng, 400)
    old = ("snapshots/m/1.lzm", [(0, hookindex.frame_hooks(_table(shared))),
                                 (1, hookindex.frame_hooks(_table(old_only)))])
    new = ("snapshots/m/2.lzm", [(5, hookindex.frame_hooks(_table(shared + new_only)))])
    part = hookindex.build([old, new])
    keys = np.array(_hooks(shared), np.uint64)
    assert set(part.find(keys)) == {("snapshots/m/2.lzm", 5)}
    assert set(part.find(np.array(_hooks(old_only), np.uint64))) == {("snapshots/m/1.lzm", 1)}
    assert list(part.find(np.array(_hooks(_hashes(rng, 80)), np.uint64))) == []
    shards = hookindex.split(part)
    assert len(shards) == hookindex.SHARDS
    assert sum(len(s.keys) for s in shards) == len(part.keys)
    for s, shard in enumerate(shards):
        assert all(int(k) >> (63 - hookindex.SHARD_BITS) == s for k in shard.keys)
        assert set(shard.manifests) <= set(part.manifests)
        assert len(set(shard.find(shard.keys))) >= 1 or not len(shard.keys)


def test_deltas_then_a_base_serve_a_node_and_gc_merges_them(tmp_path):
    rng = random.Random(4)
    backend = DirBackend(tmp_path / "bucket")
    a, b = _hashes(rng, 256), _hashes(rng, 256)
    hookindex.put_delta(backend, "snapshots/a/1.lzm", _doc("packs/a.pack", [a]),
                        {"packs/a.pack"}, "n1", None)
    # a snapshot made only of another node's frames publishes no delta
    assert hookindex.put_delta(backend, "snapshots/c/1.lzm", _doc("packs/a.pack", [a]),
                               set(), "n2", None) is None
    node = hookindex.BucketIndex(backend)
    node.load()
    assert node.find(np.array(_hooks(a), np.uint64)) == {"snapshots/a/1.lzm": {0}}
    assert node.find(np.array(_hooks(b), np.uint64)) == {}

    merged = hookindex.list_deltas(backend)
    res = hookindex.write_base(backend, [("snapshots/b/1.lzm", hookindex.doc_frames(
        _doc("packs/b.pack", [b])))], merged, None)
    assert res.merged == 1 and res.entries == len(_hooks(b))
    assert hookindex.list_deltas(backend) == []
    # the node still holds its old view; at its next load it reads the base's shards
    node.load()
    assert node.find(np.array(_hooks(b), np.uint64)) == {"snapshots/b/1.lzm": {0}}
    assert node.find(np.array(_hooks(a), np.uint64)) == {}  # not live any more
    loaded = node.describe()["index_shards_loaded"]
    assert 0 < loaded <= hookindex.SHARDS

    # a gc replaces the base while the node has shards left to fetch: it reads the new one
    node2 = hookindex.BucketIndex(backend)
    node2.load()
    hookindex.write_base(backend, [("snapshots/b/2.lzm", hookindex.doc_frames(
        _doc("packs/b.pack", [b])))], [], None)
    assert node2.find(np.array(_hooks(b), np.uint64)) == {"snapshots/b/2.lzm": {0}}


def test_a_damaged_index_object_is_skipped_with_a_warning(tmp_path, caplog):
    rng = random.Random(5)
    backend = DirBackend(tmp_path / "bucket")
    a = _hashes(rng, 128)
    key = hookindex.put_delta(backend, "snapshots/a/1.lzm", _doc("packs/a.pack", [a]),
                              {"packs/a.pack"}, "n1", None)
    assert key is not None
    backend.put(key, b"LZFSIDX\x01" + b"\0" * 40)
    node = hookindex.BucketIndex(backend)
    node.load()
    assert node.find(np.array(_hooks(a), np.uint64)) == {}
    assert "checksum mismatch" in caplog.text


def test_bucket_gc_rebuilds_the_index_from_live_manifests_only(tmp_path):
    (tmp_path / "bucket").mkdir()
    backend = DirBackend(tmp_path / "bucket")
    remote_mkfs(backend)
    syn = synthetic.publish(backend, 3, nframes=12, per_snapshot=4)
    res = gc.collect(backend)
    assert res.index is not None and res.index.entries > 0
    node = hookindex.BucketIndex(backend)
    node.load()
    first_name, first_key = sorted(syn.keys.items())[0]
    hashes = [h for f in syn.frames_of(0) for _, h in decode_table(syn.frames[f][6])]
    found = node.find(hookindex.hook_keys_of(hashes))
    assert set(found) == {first_key}
    assert found[first_key] == set(range(4))
    # deleted: the next gc's index no longer names it, while its packs stay for the grace
    # period, and once the deletion is retired
    backend.put(manifest.new_key(first_name.encode(), "t", manifest.TOMBSTONE), b"")
    gc.collect(backend)
    node.load()
    assert node.find(hookindex.hook_keys_of(hashes)) == {}
    assert first_key in [o.key for o in backend.list("snapshots/")]
    gc.collect(backend, grace=0)
    node.load()
    assert node.find(hookindex.hook_keys_of(hashes)) == {}


def test_gc_indexes_each_frame_once_from_the_newest_manifest_and_skips_deleted_ones(tmp_path):
    rng = random.Random(6)
    a, b = _hashes(rng, 64), _hashes(rng, 64)
    builder = hookindex.BaseBuilder()
    builder.add("snapshots/m/20261201T000000.000000Z-n-1.lzm", _doc("packs/p.pack", [a, b]))
    builder.add("snapshots/r/20261202T000000.000000Z-n-2.lzm", _doc("packs/p.pack", [a]))
    builder.add("snapshots/o/20261130T000000.000000Z-n-3.lzm", _doc("packs/p.pack", [a]))
    entries = dict(builder.entries())
    # frame (p, 0) is named by all three: only the newest manifest's entry is kept
    assert [i for i, _ in entries["snapshots/r/20261202T000000.000000Z-n-2.lzm"]] == [0]
    assert [i for i, _ in entries["snapshots/m/20261201T000000.000000Z-n-1.lzm"]] == [1]
    assert "snapshots/o/20261130T000000.000000Z-n-3.lzm" not in entries


class _Exchange:
    """What BucketDedup needs of a node (cluster/exchange.py): its store, the bucket, a
    manifest fetch, and adopting a manifest's frames (here into a local pack of the store)."""

    def __init__(self, store, backend, docs: dict[str, dict], frames: list) -> None:
        self.store, self.backend, self.docs, self.frames = store, backend, docs, frames

    def fetch(self, key: str) -> dict:
        return self.docs[key]

    def adopt(self, doc: dict) -> list[int]:
        return [self.store.add_frame(fw.pack, fw.off, fw.rlen, fw.header.stored_len,
                                     fw.header.raw_len, fw.header.codec, entries)
                for fw, entries in self.frames]


def test_adopted_frames_are_held_from_gc_until_released(tmp_path):
    import trio

    from lzfs.cluster import bucketdedup
    from lzfs.store.codec import block_hash
    from lzfs.store.layout import mkfs
    from lzfs.store.store import Store

    (tmp_path / "bucket").mkdir()
    backend = DirBackend(tmp_path / "bucket")
    mkfs(tmp_path / "store")
    store = Store(tmp_path / "store")
    try:
        rng = random.Random(7)
        pages = [rng.randbytes(4096) for _ in range(32)]
        hashes = [block_hash(p) for p in pages]
        (fw,) = store.pack_new(b"".join(pages), [(i * 4096, 4096, h)
                                                 for i, h in enumerate(hashes)])
        entries = [(i * 4096, h) for i, h in enumerate(hashes)]
        doc = _doc("packs/p.pack", [hashes])
        mkey = "snapshots/m/20261201T000000.000000Z-n-1.lzm"
        hookindex.put_delta(backend, mkey, doc, {"packs/p.pack"}, "n", None)
        dedup = bucketdedup.BucketDedup(_Exchange(store, backend, {mkey: doc},
                                                  [(fw, entries)]))  # type: ignore[arg-type]
        trio.run(dedup.supply, hashes)
        assert dedup.describe()["index_frames_held"] == 1
        assert set(store.index.match(hashes)) == set(hashes)  # found: the dump dedups
        removed, _ = store.collect_garbage()
        assert removed == 0  # held: a gc meanwhile does not take it from under the dump
        dedup.tick()  # used just now: still held
        assert dedup.describe()["index_frames_held"] == 1
        dedup._held_since -= bucketdedup.HOLD_S + 1
        dedup.tick()
        assert dedup.describe()["index_frames_held"] == 0 and store.garbage
        removed, _ = store.collect_garbage()
        assert removed == 1  # no file used it: gone, with its hooks
        assert store.index.match(hashes) == {}
    finally:
        store.close(commit=False)
