"""What a cold node does when the object store fails it, against a real S3 server (SeaweedFS):
the store dies in the middle of a CRIU restore (reads fail with EIO, CRIU says so, and the
restore succeeds once the store is back), and a GET returns bytes that are not what the
manifest names (EIO, and the node's cache keeps nothing of them). Two nodes publishing one
name at once: tests/s3/test_cluster.py."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import boto3
import pytest

from lzfs.testing.criu import CriuError, criu_unusable_reason, run_criu
from lzfs.testing.exercise_targets import process_gone
from tests.conftest import lzfs_cmd
from tests.s3.conftest import bucket_objects
from tests.s3.test_cluster import _data


def _published(nodes, name: str, data: bytes) -> None:
    a = nodes("a")
    (a.mnt / name).mkdir()
    (a.mnt / name / "pages-1.img").write_bytes(data)
    lzfs_cmd("publish", str(a.mnt / name))
    a.umount()


def _cached_segments(node, key: str | None = None) -> int:
    """Segments in the node's cache: of object ``key`` only, or of all. A name starting with
    a dot is a fetch's file being written, renamed into place only if the segment is kept."""
    root = node.cache / "segments"
    if key is not None:
        root = root / key.replace("/", "%")  # the cache's directory per object
    return sum(1 for _, _, files in os.walk(root) for f in files if not f.startswith("."))


@pytest.mark.criu
def test_the_store_dying_mid_restore_fails_it_clearly_and_a_retry_succeeds(
        nodes, workload, seaweed, bucket):
    reason = criu_unusable_reason()
    if reason:
        pytest.skip(reason)
    a = nodes("a")
    w = workload(size="96M", seed=21)
    snap = a.mnt / "server"
    snap.mkdir()
    run_criu("dump", snap, "-t", str(w.pid), "--shell-job")
    w.wait_gone()
    lzfs_cmd("publish", str(snap))
    b = nodes("b")  # cold: an empty cache
    there = b.mnt / "server"
    for img in sorted(there.iterdir()):  # CRIU's small images arrive; then the store dies
        if not img.name.startswith("pages-"):
            img.read_bytes()
    with open(there / "pages-1.img", "rb") as f:
        f.read(1 << 20)  # the first pages too: the restore is under way
    seaweed.kill()
    try:
        with pytest.raises(CriuError) as failed:
            run_criu("restore", there, "--shell-job", "-d", log_name="restore-1.log")
        log = (there / "restore-1.log").read_text(errors="replace")
        assert "Input/output error" in log or "(5)" in log or "-5" in log, log[-2000:]
        assert "criu restore failed" in str(failed.value)
        with open(there / "pages-1.img", "rb") as f:  # what any reader gets meanwhile
            f.seek(90 << 20)
            with pytest.raises(OSError) as err:
                f.read(1 << 20)
            assert err.value.errno == errno.EIO
        assert "cannot read" in b.log() or "cannot reach the object store" in b.log()
    finally:
        seaweed.start()
    deadline = time.monotonic() + 30  # CRIU killed what it had begun to restore
    while not process_gone(w.pid):  # (reaped here: the test run is CRIU's subreaper)
        assert time.monotonic() < deadline
        time.sleep(0.1)
    run_criu("restore", there, "--shell-job", "-d", log_name="restore-2.log")
    assert w.ask_checksum() == w.checksum


def test_a_get_with_the_wrong_bytes_is_eio_and_poisons_nothing(nodes, seaweed, bucket):
    data = _data(31, 300)  # ~1.2 MiB: its pack is one object
    _published(nodes, "S", data)
    packs = bucket_objects(seaweed, bucket, "packs/")
    key = max(packs, key=lambda k: packs[k])
    bucket_name, _, prefix = bucket[len("s3://"):].partition("/")
    s3 = boto3.client("s3", endpoint_url=seaweed.endpoint)
    good = s3.get_object(Bucket=bucket_name, Key=f"{prefix}/{key}")["Body"].read()
    bad = bytearray(good)
    for off in range(len(bad) // 3, len(bad), len(bad) // 7):  # rot inside the frames
        bad[off] ^= 0x5A
    s3.put_object(Bucket=bucket_name, Key=f"{prefix}/{key}", Body=bytes(bad))
    b = nodes("b")
    path: Path = b.mnt / "S" / "pages-1.img"
    with pytest.raises(OSError) as err:
        path.read_bytes()
    assert err.value.errno == errno.EIO
    # the bad bytes did not stay in the segment cache (the snapshot's other packs may: which
    # of them the prefetch reached before the EIO is a matter of timing)
    assert _cached_segments(b, key) == 0
    s3.put_object(Bucket=bucket_name, Key=f"{prefix}/{key}", Body=good)  # repaired
    assert path.read_bytes() == data  # fetched again, not served from a poisoned cache
    assert _cached_segments(b, key) > 0
