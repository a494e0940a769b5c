"""Dedup against the whole bucket (cluster/hookindex.py, bucketdedup.py): a node stores little
for a snapshot whose pages another node published long ago, without importing that snapshot;
through the deltas publications write, and through the base a bucket gc builds from them."""

from __future__ import annotations

import os
import random

from tests.conftest import lzfs_cmd
from tests.s3.conftest import bucket_objects


def _model(seed: int, pages: int) -> bytes:
    rng = random.Random(seed)
    return b"".join(rng.randbytes(4096) if i % 3 == 0
                    else ((b"weights %d of layer %d; " % (i, seed)) * 200)[:4096]
                    for i in range(pages))


def _packs(seaweed, bucket) -> int:
    return sum(bucket_objects(seaweed, bucket, "packs/").values())


def _dump(node, name: str, data: bytes) -> None:
    (node.mnt / name).mkdir()
    (node.mnt / name / "pages-1.img").write_bytes(data)
    lzfs_cmd("publish", str(node.mnt / name))


def test_a_node_dedups_against_snapshots_it_never_imported(nodes, seaweed, bucket):
    model = _model(1, 2000)  # 7.8 MiB, a third of it incompressible
    a = nodes("a")
    _dump(a, "model", model)
    for i in range(3):  # newer snapshots, so that the model is not among the recent ones
        _dump(a, f"other-{i}", _model(10 + i, 40))
    assert len(bucket_objects(seaweed, bucket, "index/delta/")) == 4

    b = nodes("b", "2G", "--import-recent", "1")
    before = _packs(seaweed, bucket)
    _dump(b, "replica", model)
    added = _packs(seaweed, bucket) - before
    assert added < len(model) / 20, added
    stats = b.stats()
    assert stats["index_manifests_adopted"] >= 1 and stats["index_frames_adopted"] > 0
    assert stats["snapshots_not_imported"] >= 1  # the model's tree was never fetched
    assert "deduplicating against snapshots/model/" in b.log()

    # the replica names a's frames: a third node reads it whole
    c = nodes("c")
    assert (c.mnt / "replica" / "pages-1.img").read_bytes() == model


def test_gc_merges_the_deltas_and_a_fresh_node_dedups_through_the_base(nodes, seaweed,
                                                                        bucket):
    model = _model(2, 1500)
    a = nodes("a")
    _dump(a, "model", model)
    _dump(a, "newer", _model(20, 40))
    a.umount()
    out = lzfs_cmd("gc", bucket, "--endpoint", seaweed.endpoint).stdout
    assert "page index:" in out and "2 deltas merged" in out, out
    assert bucket_objects(seaweed, bucket, "index/delta/") == {}
    assert len(bucket_objects(seaweed, bucket, "index/base/")) == 16

    b = nodes("b", "2G", "--import-recent", "0")
    before = _packs(seaweed, bucket)
    _dump(b, "replica", model)
    assert _packs(seaweed, bucket) - before < len(model) / 20
    stats = b.stats()
    assert stats["index_shards_loaded"] > 0 and stats["index_deltas"] == 0
    assert sorted(os.listdir(b.mnt)) == ["model", "newer", "replica"]


def test_a_deleted_snapshot_leaves_the_index_at_the_next_gc(nodes, seaweed, bucket):
    model = _model(3, 600)
    a = nodes("a")
    _dump(a, "model", model)
    a.umount()
    lzfs_cmd("rm", bucket, "--endpoint", seaweed.endpoint, "model")
    lzfs_cmd("gc", bucket, "--endpoint", seaweed.endpoint, "--grace", "0")
    # nothing names the model's frames now: a new dump stores them again, and reads back
    b = nodes("b")
    before = _packs(seaweed, bucket)
    _dump(b, "again", model)
    assert _packs(seaweed, bucket) - before > len(model) / 4
    assert b.stats()["index_manifests_adopted"] == 0
    b.remount()
    assert (b.mnt / "again" / "pages-1.img").read_bytes() == model


def test_a_node_reads_its_own_removed_frames_from_their_objects(nodes, seaweed, bucket):
    """a's model is deduplicated into b's replica, then removed on a (its local frames are
    collected and their pack bytes punched): a reads b's replica from a's pack objects."""
    model = _model(4, 1200)
    a = nodes("a")
    _dump(a, "model", model)
    b = nodes("b", "2G", "--import-recent", "0")
    _dump(b, "replica", model)
    assert b.stats()["index_manifests_adopted"] == 1
    import shutil

    shutil.rmtree(a.mnt / "model")
    lzfs_cmd("gc", str(a.mnt))
    assert (a.mnt / "replica" / "pages-1.img").read_bytes() == model
    a.umount()
    out = lzfs_cmd("fsck", str(a.cache)).stdout
    assert "clean" in out, out
