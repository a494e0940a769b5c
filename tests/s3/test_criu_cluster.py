"""Real CRIU across two nodes of one bucket: dump through one, restore through the other."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from lzfs.testing.criu import criu_unusable_reason, run_criu
from tests.conftest import lzfs_cmd
from tests.s3.conftest import bucket_objects

pytestmark = pytest.mark.criu


@pytest.fixture(scope="module", autouse=True)
def _need_criu():
    reason = criu_unusable_reason()
    if reason:
        pytest.skip(reason)


def _pack_bytes(seaweed, bucket) -> int:
    return sum(bucket_objects(seaweed, bucket, "packs/").values())


def test_dumped_on_one_node_restores_on_another(nodes, workload, seaweed, bucket):
    a = nodes("a")
    w = workload(size="160M", seed=11)
    snap = a.mnt / "server-1"
    snap.mkdir()
    run_criu("dump", snap, "-t", str(w.pid), "--shell-job")
    w.wait_gone()
    lzfs_cmd("publish", str(snap))
    b = nodes("b")
    assert b.stats()["gets"] == 0  # nothing fetched yet: the manifest is all b has
    run_criu("restore", b.mnt / "server-1", "--shell-job", "-d")
    assert w.ask_checksum() == w.checksum
    st = b.stats()
    assert st["gets"] > 0  # the pages came from the object store
    assert st["peak_inflight"] > 2, st  # readahead in restore order ran GETs in parallel
    assert "restore.log" in os.listdir(b.mnt / "server-1")  # written on b, stays on b
    assert "restore.log" not in os.listdir(snap)
    # the region report parses images of a snapshot b only knows from its manifest
    regions = json.loads(lzfs_cmd("report", str(b.mnt), "--json", "--by", "region").stdout)
    snaps = {s["snapshot"]: s for s in regions["snapshots"]}
    assert not regions["errors"]
    assert any(r["region"] == "[anon]" and r["logical"] > 100 << 20
               for r in snaps["server-1"]["regions"])


def test_four_replicas_from_two_nodes_store_in_less_than_one_and_a_half(
        nodes, workload, seaweed, bucket):
    a = nodes("a")
    stored = []
    b = None
    for i in range(4):
        if i == 2:
            b = nodes("b")  # sees replica-0 and -1 at mount, and dedups against them
        node = a if i < 2 else b
        w = workload(size="120M", profile="replica", seed=100 + i, weights_seed=7)
        snap = node.mnt / f"replica-{i}"
        snap.mkdir()
        run_criu("dump", snap, "-t", str(w.pid), "--shell-job")
        w.wait_gone()
        lzfs_cmd("publish", str(snap))
        stored.append(_pack_bytes(seaweed, bucket))
    assert stored[-1] < 1.5 * stored[0], stored
    assert len(bucket_objects(seaweed, bucket, "snapshots/")) == 4
    # a sees b's replicas, and restores one of them
    assert {f"replica-{i}" for i in range(4)} <= set(os.listdir(a.mnt))
    run_criu("restore", a.mnt / "replica-3", "--shell-job", "-d")  # w: replica-3's process
    assert w.ask_checksum() == w.checksum


def test_object_store_dying_mid_dump_publishes_nothing_and_recovers(
        nodes, workload, seaweed, bucket):
    a = nodes("a")
    w = workload(size="160M", seed=12)
    snap = a.mnt / "server-1"
    snap.mkdir()
    killer = threading.Timer(0.5, seaweed.kill)
    killer.start()
    try:
        run_criu("dump", snap, "-t", str(w.pid), "--shell-job")
    finally:
        killer.join()
    w.wait_gone()
    res = subprocess.run([sys.executable, "-m", "lzfs", "publish", str(snap)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the object store" in lines[0], res.stderr
    seaweed.start()
    assert not bucket_objects(seaweed, bucket, "snapshots/")  # nothing half-published
    lzfs_cmd("publish", str(snap))
    assert len(bucket_objects(seaweed, bucket, "snapshots/")) == 1
    b = nodes("b")
    run_criu("restore", b.mnt / "server-1", "--shell-job", "-d")
    assert w.ask_checksum() == w.checksum
