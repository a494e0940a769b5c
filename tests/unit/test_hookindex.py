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
    # deleted, and retired past the grace period: the next gc's index no longer names it
    backend.put(manifest.new_key(first_name.encode(), "t", manifest.TOMBSTONE), b"")
    gc.collect(backend, grace=0)
    node.load()
    assert node.find(hookindex.hook_keys_of(hashes)) == {}
