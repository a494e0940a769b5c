"""runc checkpoints a real container into an lzfs mount (`--image-path MNT/DIR`), the store
is remounted, and runc restores it from what is on disk: the container's memory is intact."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import lzfs_cmd

pytestmark = [pytest.mark.criu, pytest.mark.fuse]


def _report(mnt) -> dict[str, dict]:
    data = json.loads(lzfs_cmd("report", str(mnt), "--json").stdout)
    return {g["name"]: g for g in data["groups"]}


def test_runc_checkpoint_through_a_mount_restores_memory_intact(mounted, runc_container):
    c = runc_container(mib=48)
    images = mounted.mnt / "web-1"
    c.checkpoint(images)
    assert c.state() is None  # runc checkpoint stops and removes the container
    names = set(os.listdir(images))
    assert {"inventory.img", "pages-1.img", "pagemap-1.img"} <= names
    mounted.settle()  # what the checkpoint staged raw, compressed
    apparent = sum((images / n).stat().st_size for n in names)
    stored = sum((images / n).stat().st_blocks * 512 for n in names)
    assert apparent > 48 << 20
    assert stored < apparent * 0.6, (apparent, stored)  # a third zeros, a third text

    mounted.remount()  # restore from what is on disk, through a fresh daemon
    c.restore(images)
    assert c.running()
    assert c.ask_checksum() == c.checksum
    row = _report(mounted.mnt)["web-1"]
    assert row["complete"] is True


def test_a_second_checkpoint_of_a_container_costs_almost_nothing(mounted, runc_container):
    c = runc_container(mib=48)
    first, second = mounted.mnt / "ck-1", mounted.mnt / "ck-2"
    c.checkpoint(first, "--leave-running")
    assert c.running()
    c.checkpoint(second)
    rows = _report(mounted.mnt)
    assert rows["ck-2"]["unique"] < rows["ck-2"]["stored"] * 0.1, rows["ck-2"]
    assert rows["ck-2"]["shared_with"]["ck-1"] > 0
    # du counts the shared blocks once per snapshot; the report says so
    text = lzfs_cmd("report", str(mounted.mnt)).stdout
    assert "note: a shared block counts in each row's stored, as `du MNT` counts it" in text
    mounted.remount()
    c.restore(second)
    assert c.ask_checksum() == c.checksum
