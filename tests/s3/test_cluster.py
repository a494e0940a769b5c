"""Two nodes, one bucket, real FUSE mounts and a real S3 server (no CRIU here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import fuse_unusable_reason, lzfs_cmd
from tests.s3.conftest import Node, bucket_objects


def _data(seed: int, pages: int) -> bytes:
    import random

    rng = random.Random(seed)
    # half random (incompressible), half text-like (compressible), some zero pages
    return b"".join(rng.randbytes(4096) if i % 3 == 0 else bytes(4096) if i % 7 == 0
                    else ((b"page %d of a model server heap; " % i) * 200)[:4096]
                    for i in range(pages))


def test_published_snapshot_reads_back_on_another_node(nodes, seaweed, bucket):
    a = nodes("a")
    snap = a.mnt / "server-1"
    snap.mkdir()
    data = _data(1, 3000)
    (snap / "pages-1.img").write_bytes(data)
    (snap / "inventory.img").write_bytes(b"inventory")
    (a.mnt / "half-written").mkdir()
    (a.mnt / "half-written" / "pages-1.img").write_bytes(_data(2, 100))
    out = lzfs_cmd("publish", str(snap)).stdout
    assert "published" in out and "snapshots/server-1/" in out
    b = nodes("b")
    assert sorted(os.listdir(b.mnt)) == ["server-1"]  # the unpublished one stays on a
    assert (b.mnt / "server-1" / "pages-1.img").read_bytes() == data
    first = b.stats()
    assert first["gets"] > 0
    # a second read on the same node is served from its cache: no new GET
    b.remount()
    assert (b.mnt / "server-1" / "pages-1.img").read_bytes() == data
    assert b.stats()["gets"] == 0
    # a snapshot b writes that shares a's pages uploads little
    packs_before = sum(bucket_objects(seaweed, bucket, "packs/").values())
    (b.mnt / "server-2").mkdir()
    (b.mnt / "server-2" / "pages-1.img").write_bytes(data)
    lzfs_cmd("publish", str(b.mnt / "server-2"))
    packs_after = sum(bucket_objects(seaweed, bucket, "packs/").values())
    assert packs_after - packs_before < len(data) / 20, (packs_before, packs_after)
    # a sees b's snapshot on its next listing of the root
    assert "server-2" in os.listdir(a.mnt)
    assert (a.mnt / "server-2" / "pages-1.img").read_bytes() == data


def test_unmount_publishes_and_report_reads_the_bucket(nodes, seaweed, bucket):
    a = nodes("a")
    (a.mnt / "snap").mkdir()
    (a.mnt / "snap" / "pages-1.img").write_bytes(_data(3, 500))
    # an inventory CRIU would accept: both magics and one (empty) entry, 12 bytes
    (a.mnt / "snap" / "inventory.img").write_bytes(
        b"\x19\x43\x56\x54\x16\x31\x31\x58" + bytes(4))
    assert not bucket_objects(seaweed, bucket, "snapshots/")
    a.umount()
    assert len(bucket_objects(seaweed, bucket, "snapshots/")) == 1
    rep = json.loads(lzfs_cmd("report", bucket, "--endpoint", seaweed.endpoint,
                              "--json").stdout)
    groups = {g["name"]: g for g in rep["groups"]}
    assert groups["snap"]["logical"] == 500 * 4096 + 12
    assert groups["snap"]["complete"] is True, groups["snap"]["problems"]
    # remounting without changes publishes nothing new
    a.mount()
    a.umount()
    assert len(bucket_objects(seaweed, bucket, "snapshots/")) == 1


def test_gc_deletes_only_unreferenced_packs_past_the_grace_period(nodes, seaweed, bucket):
    import boto3

    a = nodes("a")
    (a.mnt / "keep").mkdir()
    (a.mnt / "keep" / "pages-1.img").write_bytes(_data(4, 400))
    lzfs_cmd("publish", str(a.mnt / "keep"))
    bkt, _, prefix = bucket[len("s3://"):].partition("/")
    orphan = f"{prefix}/packs/{'0' * 32}.pack"  # an upload whose manifest never came
    boto3.client("s3", endpoint_url=seaweed.endpoint).put_object(Bucket=bkt, Key=orphan,
                                                                 Body=b"x" * 1000)
    out = lzfs_cmd("gc", bucket, "--endpoint", seaweed.endpoint).stdout
    assert "deleted 0" in out and "kept 1" in out  # young: within the grace period
    out = lzfs_cmd("gc", bucket, "--endpoint", seaweed.endpoint, "--grace", "0").stdout
    assert "deleted 1" in out
    keys = bucket_objects(seaweed, bucket, "packs/")
    assert f"packs/{'0' * 32}.pack" not in keys and keys
    b = nodes("b")
    assert (b.mnt / "keep" / "pages-1.img").read_bytes() == _data(4, 400)


def _lzfs(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lzfs", *args], capture_output=True,
                          text=True, timeout=120)


def test_bad_object_store_inputs_fail_with_one_line(seaweed, bucket, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cache = str(tmp_path / "cache")
    cases = {
        "cannot reach": ("mkfs", "s3://nobucket/x", "--endpoint", "http://127.0.0.1:9"),
        "does not exist": ("mount", "s3://no-such-bucket/x", str(mnt), "--endpoint",
                           seaweed.endpoint, "--cache", cache),
        "not an lzfs store": ("mount", bucket + "-other", str(mnt), "--endpoint",
                              seaweed.endpoint, "--cache", cache),
        "needs --cache": ("mount", bucket, str(mnt), "--endpoint", seaweed.endpoint),
    }
    for expect, args in cases.items():
        res = _lzfs(*args)
        assert res.returncode != 0, args
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and expect in lines[0], (args, res.stderr)
    bad = dict(os.environ, AWS_SECRET_ACCESS_KEY="wrong")
    res = subprocess.run([sys.executable, "-m", "lzfs", "report", bucket, "--endpoint",
                          seaweed.endpoint], capture_output=True, text=True, env=bad)
    assert res.returncode != 0
    assert len(res.stderr.strip().splitlines()) == 1 and "access denied" in res.stderr


def test_two_nodes_publishing_one_name_at_once_both_stay_whole(nodes, seaweed, bucket):
    import threading

    a, b = nodes("a"), nodes("b")
    data = {a: _data(5, 800), b: _data(6, 800)}
    for n, d in data.items():
        (n.mnt / "same").mkdir()
        (n.mnt / "same" / "pages-1.img").write_bytes(d)
    outs: dict = {}
    threads = [threading.Thread(target=lambda n=n: outs.__setitem__(
        n, lzfs_cmd("publish", str(n.mnt / "same")).stdout)) for n in data]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    keys = {n: os.getxattr(n.mnt / "same", "user.lzfs.manifest").decode() for n in data}
    assert keys[a] != keys[b]
    assert set(bucket_objects(seaweed, bucket, "snapshots/")) == set(keys.values())
    newest = max(data, key=lambda n: keys[n])
    c = nodes("c")
    assert (c.mnt / "same" / "pages-1.img").read_bytes() == data[newest]
    for n, d in data.items():  # each writer keeps its own version, intact
        os.listdir(n.mnt)
        assert (n.mnt / "same" / "pages-1.img").read_bytes() == d


def test_a_shared_directory_serves_as_the_object_store(tmp_path):
    """The other backend: objects as files (a shared file system), same flow, no server."""
    if fuse_unusable_reason():
        pytest.skip(fuse_unusable_reason())
    shared = tmp_path / "shared"
    shared.mkdir()
    url = f"file://{shared}"
    lzfs_cmd("mkfs", url)
    a, b = Node(url, None, tmp_path / "a"), Node(url, None, tmp_path / "b")
    a.mount()
    try:
        (a.mnt / "snap").mkdir()
        (a.mnt / "snap" / "pages-1.img").write_bytes(_data(7, 300))
        lzfs_cmd("publish", str(a.mnt / "snap"))
        b.mount()
        try:
            assert (b.mnt / "snap" / "pages-1.img").read_bytes() == _data(7, 300)
        finally:
            b.umount()
    finally:
        a.umount()
    assert len(list((shared / "snapshots").rglob("*.lzm"))) == 1
    assert list((shared / "packs").glob("*.pack"))


def test_a_small_cache_gives_back_uploaded_packs_and_reads_them_remotely(nodes):
    a = nodes("a", cache_size="8M")
    data = _data(8, 12000)
    (a.mnt / "big").mkdir()
    (a.mnt / "big" / "pages-1.img").write_bytes(data)
    lzfs_cmd("publish", str(a.mnt / "big"))
    local = sum(p.stat().st_blocks * 512 for p in (a.cache / "packs").iterdir())
    assert local < 1 << 20, local  # the uploaded pack is no longer on this node's disk
    a.remount()
    assert (a.mnt / "big" / "pages-1.img").read_bytes() == data
    assert a.stats()["gets"] > 0
    assert a.stats()["cached_bytes"] <= 8 << 20


def test_fsck_verifies_node_caches_through_the_object_store(nodes):
    a = nodes("a")
    (a.mnt / "snap").mkdir()
    data = _data(5, 800)
    (a.mnt / "snap" / "pages-1.img").write_bytes(data)
    lzfs_cmd("publish", str(a.mnt / "snap"))
    b = nodes("b")
    assert (b.mnt / "snap" / "pages-1.img").read_bytes() == data
    a.umount()
    b.umount()
    for node in (a, b):  # b holds no pack of its own: every frame it checks is a GET
        res = lzfs_cmd("fsck", "--json", str(node.cache), check=False)
        rep = json.loads(res.stdout)
        assert res.returncode == 0, rep
        assert rep["frames"] > 0
        assert not [p for p in rep["problems"] if p["kind"] in ("remote", "frame", "pack")], rep


def test_a_snapshot_removed_and_dumped_again_is_this_nodes_own(nodes, seaweed, bucket):
    """B imports A's S, removes it and writes its own S: B's S is published at unmount and
    is not replaced by A's at B's next mount (its data would be lost)."""
    a = nodes("a")
    (a.mnt / "S").mkdir()
    (a.mnt / "S" / "pages-1.img").write_bytes(_data(7, 50))
    lzfs_cmd("publish", str(a.mnt / "S"))
    b = nodes("b")
    assert (b.mnt / "S" / "pages-1.img").exists()
    import shutil

    shutil.rmtree(b.mnt / "S")
    (b.mnt / "S").mkdir()
    mine = _data(8, 60)
    (b.mnt / "S" / "mine.img").write_bytes(mine)
    before = len(bucket_objects(seaweed, bucket, "snapshots/"))
    b.umount()
    assert len(bucket_objects(seaweed, bucket, "snapshots/")) == before + 1  # published
    (a.mnt / "S" / "later.img").write_bytes(b"a again")
    lzfs_cmd("publish", str(a.mnt / "S"))
    b.mount()
    assert sorted(os.listdir(b.mnt / "S")) == ["mine.img"]
    assert (b.mnt / "S" / "mine.img").read_bytes() == mine
