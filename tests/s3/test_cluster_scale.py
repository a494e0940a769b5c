"""A bucket of many snapshots: lazy import on a fresh node, deleting published snapshots, gc
racing a publication, and unmounting while the object store is down (real SeaweedFS, real
FUSE mounts; the many snapshots are synthetic, written through the library)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from lzfs.cluster import manifest
from lzfs.cluster.bucket import fetch_manifests
from lzfs.mount.mountinfo import find_mount
from lzfs.objectstore.backend import open_backend
from lzfs.testing import synthetic
from tests.conftest import fuse_unusable_reason, lzfs_cmd
from tests.s3.conftest import Node, bucket_objects


def _lzfs(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lzfs", *args], capture_output=True,
                          text=True, timeout=300)


def test_a_fresh_node_fetches_only_the_manifest_it_reads(nodes, seaweed, bucket):
    backend = open_backend(bucket, seaweed.endpoint)
    syn = synthetic.publish(backend, 200, nframes=24)
    a = nodes("a", "2G", "--import-recent", "0")
    names = sorted(syn.keys)
    assert sorted(os.listdir(a.mnt)) == names  # every snapshot listed, none imported
    st = a.stats()
    assert st["manifest_gets"] == 0 and st["snapshots_not_imported"] == 200
    i = 137
    assert (a.mnt / names[i] / "pages-1.img").read_bytes() == syn.content(i)
    st = a.stats()
    assert st["manifest_gets"] == 1  # its own manifest, nothing per other snapshot
    assert 0 < st["gets"] <= len(set(f[0] for f in syn.frames)) * 2, st
    assert st["snapshots_not_imported"] == 199
    # known by name only across a remount; what was imported stays imported
    a.remount()
    assert (a.mnt / names[i] / "pages-1.img").read_bytes() == syn.content(i)
    assert a.stats()["manifest_gets"] == 0
    assert (a.mnt / names[3] / "pages-1.img").read_bytes() == syn.content(3)
    assert a.stats()["manifest_gets"] == 1
    # a snapshot published later is seen through the journal, and reads back
    late = synthetic.publish(backend, 1, prefix="late-", journal=True, seed=2)
    before = a.stats()["listings"]
    assert next(iter(late.keys)) in os.listdir(a.mnt)
    assert a.stats()["listings"] == before + 1  # one listing of what is new
    assert (a.mnt / next(iter(late.keys)) / "pages-1.img").read_bytes() == late.content(0)
    # renaming a snapshot not looked into yet moves it whole (imported first)
    os.rename(a.mnt / names[5], a.mnt / "renamed")
    assert (a.mnt / "renamed" / "pages-1.img").read_bytes() == syn.content(5)
    # a restore by name, without listing the root first, finds one published a moment ago
    later = synthetic.publish(backend, 1, prefix="later-", journal=True, seed=3)
    assert (a.mnt / next(iter(later.keys)) / "pages-1.img").read_bytes() == later.content(0)


def _random(seed: int, pages: int) -> bytes:
    import random

    return random.Random(seed).randbytes(pages * 4096)


def test_rm_deletes_a_published_snapshot_and_gc_takes_its_packs(nodes, seaweed, bucket):
    ep = ("--endpoint", seaweed.endpoint)
    a = nodes("a")
    for name, seed in (("gone", 21), ("kept", 22)):  # one pack each, sharing no page
        (a.mnt / name).mkdir()
        (a.mnt / name / "pages-1.img").write_bytes(_random(seed, 300))
        lzfs_cmd("publish", str(a.mnt / name))
    packs = set(bucket_objects(seaweed, bucket, "packs/"))
    out = lzfs_cmd("rm", bucket, "gone", *ep).stdout
    assert out.startswith("deleted gone (1 manifest, tombstone snapshots/gone/")
    for args, why in (((bucket, "gone"), "already deleted"), ((bucket, "nothing"), "no published"),
                      (("/tmp", "x"), "not an object store")):
        res = _lzfs("rm", *args, *ep)
        assert res.returncode == 1 and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert why in res.stderr, res.stderr
    b = nodes("b")
    assert sorted(os.listdir(b.mnt)) == ["kept"]
    out = lzfs_cmd("gc", bucket, *ep).stdout  # within the grace period: nothing goes
    assert "deleted 0" in out and "removed" not in out
    assert set(bucket_objects(seaweed, bucket, "packs/")) == packs
    out = lzfs_cmd("gc", bucket, *ep, "--grace", "0").stdout
    assert "deleted 1" in out and "removed 2 manifests and tombstones" in out, out
    left = bucket_objects(seaweed, bucket, "packs/")
    assert len(left) == 1 and set(left) < packs
    assert [k.split("/")[1] for k in bucket_objects(seaweed, bucket, "snapshots/")] == ["kept"]
    c = nodes("c")
    assert sorted(os.listdir(c.mnt)) == ["kept"]
    assert (c.mnt / "kept" / "pages-1.img").read_bytes() == _random(22, 300)
    b.remount()  # b never imported "gone"; the tombstone is gone too: nothing comes back
    assert sorted(os.listdir(b.mnt)) == ["kept"]


@pytest.fixture
def short_grace(seaweed, tmp_path):
    """A bucket whose gc grace period is 4 s, and a way to mount nodes of it."""
    if fuse_unusable_reason():
        pytest.skip(fuse_unusable_reason())
    url = f"s3://lzfs-g{os.getpid()}-{time.monotonic_ns() % 10**6}/store"
    lzfs_cmd("mkfs", url, "--endpoint", seaweed.endpoint, "--create-bucket", "--grace", "4")
    made: list[Node] = []

    def make(name: str) -> Node:
        n = Node(url, seaweed.endpoint, tmp_path / name)
        n.mount()
        made.append(n)
        return n

    try:
        yield url, make
    finally:
        for n in made:
            n.umount()


def test_gc_racing_a_deletion_and_a_publication_leaves_no_manifest_without_packs(
        short_grace, seaweed):
    """b reuses the pages of S (deduplicated against its pack) in T while S is deleted and gc
    runs over and over: whichever wins, every manifest names packs that exist, and T is
    either published whole or not at all (with one line saying to publish again)."""
    from tests.s3.test_cluster import _data

    url, make = short_grace
    ep = ("--endpoint", seaweed.endpoint)
    backend = open_backend(url, seaweed.endpoint)
    a = make("a")
    data = _data(31, 400)
    (a.mnt / "S").mkdir()
    (a.mnt / "S" / "pages-1.img").write_bytes(data)
    lzfs_cmd("publish", str(a.mnt / "S"))
    a.umount()
    b = make("b")  # imports S at mount: T deduplicates against it
    assert (b.mnt / "S" / "pages-1.img").read_bytes() == data
    (b.mnt / "T").mkdir()
    (b.mnt / "T" / "pages-1.img").write_bytes(data)
    time.sleep(4.5)  # S's pack is older than the grace period now
    lzfs_cmd("rm", url, "S", *ep)
    time.sleep(4.5)  # and so is the tombstone: gc may take S's manifest and its pack
    done = threading.Event()
    runs = []

    def gc_loop() -> None:
        while not done.is_set() or not runs:
            runs.append(_lzfs("gc", url, *ep))

    t = threading.Thread(target=gc_loop)
    t.start()
    try:
        res = _lzfs("publish", str(b.mnt / "T"))
    finally:
        done.set()
        t.join()
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    _lzfs("gc", url, *ep)
    keys = [o.key for o in backend.list(manifest.PREFIX) if manifest.name_of(o.key)]
    for key, doc in fetch_manifests(backend, keys):
        for pack in doc["packs"]:
            assert backend.head(pack) is not None, (key, pack)
    published = [k for k in bucket_objects(seaweed, url, "snapshots/") if "/T/" in k]
    c = make("c")
    if res.returncode == 0:
        assert len(published) == 1
        assert sorted(os.listdir(c.mnt)) == ["T"]
        assert (c.mnt / "T" / "pages-1.img").read_bytes() == data
    else:  # gc took S's pack first: T, written against it, was not published at all
        assert not published and os.listdir(c.mnt) == []
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert "again" in res.stderr, res.stderr


def test_umount_with_the_object_store_down_says_what_is_not_published(nodes, seaweed, bucket):
    from tests.s3.test_cluster import _data

    a = nodes("a")
    (a.mnt / "early").mkdir()
    (a.mnt / "early" / "pages-1.img").write_bytes(_data(41, 50))
    lzfs_cmd("publish", str(a.mnt / "early"))
    (a.mnt / "late").mkdir()
    (a.mnt / "late" / "pages-1.img").write_bytes(_data(42, 50))
    stats = json.loads((a.mnt / ".lzfs" / "stats.json").read_text())["remote"]
    assert stats["unpublished"] == {"late": "not published yet"}
    seaweed.kill()
    try:
        res = _lzfs("umount", str(a.mnt))
        assert find_mount(a.mnt) is None  # unmounted all the same: the data is in the cache
        assert res.returncode == 1
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1, res.stderr
        assert "1 snapshot is not published: late" in lines[0], lines[0]
        assert "cannot reach the object store" in lines[0] and "lzfs publish" in lines[0]
        out = lzfs_cmd("stats", str(a.cache)).stdout
        assert "awaiting publication (1): late (" in out, out
        assert json.loads(lzfs_cmd("stats", "--json", str(a.cache)).stdout)["unpublished"] \
            == {"late": json.loads((a.cache / "unpublished.json").read_text())["late"]}
    finally:
        seaweed.start()
    a.mount()
    out = lzfs_cmd("report", str(a.mnt)).stdout
    assert "awaiting publication (1): late" in out
    lzfs_cmd("publish", str(a.mnt / "late"))
    assert not (a.cache / "unpublished.json").exists()
    res = _lzfs("umount", str(a.mnt))
    assert res.returncode == 0 and not res.stderr, res.stderr
    keys = bucket_objects(seaweed, bucket, "snapshots/")
    assert sorted(manifest.name_of(k) for k in keys) == [b"early", b"late"]
