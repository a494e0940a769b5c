"""Nodes whose clocks disagree (libfaketime in one daemon), on a shared directory by an hour and
on a real S3 server by ten minutes: publications still order as they happened, the journal
still carries them, and deletions still win. And `rm -r` of a published snapshot on a node
deletes it from the bucket (or, with the store down, fails and keeps it)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from lzfs.cluster import manifest
from tests.conftest import fuse_unusable_reason, lzfs_cmd
from tests.s3.conftest import Node, bucket_objects
from tests.s3.test_cluster import _data

FAKETIME = next((p for p in ("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
                             "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1")
                 if Path(p).exists()), None)


def _behind(seconds: int) -> dict[str, str]:
    if FAKETIME is None:
        pytest.skip("no libfaketime (apt install faketime; scripts/setup does)")
    # the wall clock only: trio and the kernel's timeouts keep real monotonic time
    return {"LD_PRELOAD": FAKETIME, "FAKETIME": f"-{seconds}", "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


@pytest.fixture(params=["shared-directory-1h", "s3-10min"])
def skewed(request, tmp_path, seaweed):
    """(make a node: name, env -> Node; how far behind the skewed node is; bucket listing).
    S3 refuses requests signed more than 15 minutes off its clock (RequestTimeTooSkewed,
    as AWS does), so against S3 the skew is 10 minutes; a shared directory takes any."""
    reason = fuse_unusable_reason()
    if reason:
        pytest.skip(reason)
    if request.param.startswith("s3"):
        url = f"s3://lzfs-clock{os.getpid()}-{len(os.listdir(tmp_path))}/store"
        lzfs_cmd("mkfs", url, "--endpoint", seaweed.endpoint, "--create-bucket")
        endpoint, skew = seaweed.endpoint, 600

        def keys(prefix: str) -> list[str]:
            return sorted(bucket_objects(seaweed, url, prefix))
    else:
        shared = tmp_path / "bucket"
        shared.mkdir()
        url, endpoint, skew = f"file://{shared}", None, 3600
        lzfs_cmd("mkfs", url)

        def keys(prefix: str) -> list[str]:
            return sorted(str(p.relative_to(shared)) for p in shared.glob(f"{prefix}*")
                          if p.is_file())
    made: list[Node] = []

    def make(name: str, env: dict[str, str] | None = None) -> Node:
        n = Node(url, endpoint, tmp_path / name, env=env)
        n.mount()
        made.append(n)
        return n

    try:
        yield make, skew, keys
    finally:
        for n in made:
            n.umount()


def test_a_node_with_its_clock_behind_publishes_in_order_and_is_seen_at_once(skewed):
    make, skew, keys = skewed
    b = make("b")  # on time
    (b.mnt / "T").mkdir()
    (b.mnt / "T" / "pages-1.img").write_bytes(_data(1, 40))
    lzfs_cmd("publish", str(b.mnt / "T"))

    a = make("a", _behind(skew))
    said = re.search(r"clock is (\d+) s behind the object store's", a.log())
    assert said and abs(int(said.group(1)) - skew) <= 2, a.log()
    # A replaces B's T: it deletes it (rm -r publishes a tombstone) and publishes its own
    shutil.rmtree(a.mnt / "T")
    (a.mnt / "T").mkdir()
    newer = _data(2, 40)
    (a.mnt / "T" / "pages-1.img").write_bytes(newer)
    lzfs_cmd("publish", str(a.mnt / "T"))
    order = keys("snapshots/T/")
    # B's manifest, A's tombstone, A's manifest: in the order they happened, by key
    assert [manifest.is_tombstone(k) for k in order] == [False, True, False], order
    assert f"-{a.node_id()}-" in order[1] and f"-{a.node_id()}-" in order[2]

    # A publishes a new name: B, on time, finds it in the journal at its next look
    (a.mnt / "fromA").mkdir()
    (a.mnt / "fromA" / "pages-1.img").write_bytes(_data(3, 20))
    lzfs_cmd("publish", str(a.mnt / "fromA"))
    assert "fromA" in os.listdir(b.mnt)  # a refresh (--refresh 0): the journal only
    assert (b.mnt / "fromA" / "pages-1.img").read_bytes() == _data(3, 20)

    c = make("c")  # a fresh node sees A's T, the newest publication, not B's
    assert (c.mnt / "T" / "pages-1.img").read_bytes() == newer


def test_rm_r_on_a_node_deletes_the_published_snapshot(nodes, seaweed, bucket):
    a = nodes("a")
    for name in ("keep", "drop"):
        (a.mnt / name).mkdir()
        (a.mnt / name / "pages-1.img").write_bytes(_data(len(name), 30))
        lzfs_cmd("publish", str(a.mnt / name))
    b = nodes("b")
    shutil.rmtree(b.mnt / "drop")  # B never looked into it: rmdir fills it first
    assert "deleted published snapshot drop" in b.log()
    tombs = [k for k in bucket_objects(seaweed, bucket, "snapshots/drop/")
             if manifest.is_tombstone(k)]
    assert len(tombs) == 1
    c = nodes("c")
    assert sorted(os.listdir(c.mnt)) == ["keep"]
    rep = lzfs_cmd("report", "--json", bucket, "--endpoint", seaweed.endpoint).stdout
    assert '"drop"' not in rep and '"keep"' in rep
    # a directory never published is this node's alone: removing it publishes nothing
    (b.mnt / "mine").mkdir()
    (b.mnt / "mine" / "x.img").write_bytes(b"x")
    shutil.rmtree(b.mnt / "mine")
    assert not bucket_objects(seaweed, bucket, "snapshots/mine/")


def test_rm_r_of_a_published_snapshot_with_the_store_down_keeps_it(nodes, seaweed, bucket):
    a = nodes("a")
    (a.mnt / "S").mkdir()
    (a.mnt / "S" / "pages-1.img").write_bytes(_data(9, 30))
    lzfs_cmd("publish", str(a.mnt / "S"))
    (a.mnt / "S" / "pages-1.img").unlink()  # rm -r: the files go (locally) first
    seaweed.kill()
    try:
        with pytest.raises(OSError) as err:
            (a.mnt / "S").rmdir()
        assert err.value.errno == 5  # EIO
        assert (a.mnt / "S").is_dir()
        assert f"lzfs rm {bucket} S" in a.log()
    finally:
        seaweed.start()
    (a.mnt / "S").rmdir()  # the store is back: the deletion goes up
    assert any(manifest.is_tombstone(k) for k in bucket_objects(seaweed, bucket, "snapshots/S/"))
