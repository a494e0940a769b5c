"""Podman exports a checkpoint archive into an lzfs mount (`--export MNT/x.tar --compress
none`) and imports it back after a remount: the container's memory is intact, and archives of
the same memory share their blocks."""

from __future__ import annotations

import json

import pytest

from tests.conftest import lzfs_cmd

pytestmark = [pytest.mark.criu, pytest.mark.fuse]


def test_podman_export_into_a_mount_imports_with_memory_intact(mounted, podman_container):
    c = podman_container(mib=48)
    archive = mounted.mnt / "web-1.tar"
    c.export(archive)
    assert not c.running()
    mounted.settle()  # what the export staged raw, compressed
    st = archive.stat()
    assert st.st_size > 48 << 20
    assert st.st_blocks * 512 < st.st_size * 0.6  # stored: zeros dropped, text compressed
    mounted.remount()
    c.import_(archive)
    assert c.running()
    assert c.ask_checksum() == c.checksum


def test_repeated_podman_exports_share_their_blocks(mounted, podman_container):
    """Each export is a snapshot row of its own in `lzfs report`; the second and third store
    almost nothing new (same memory at the same offsets in the tar)."""
    c = podman_container(mib=48)
    archives = [mounted.mnt / f"x{i}.tar" for i in range(3)]
    for a in archives:
        c.export(a, "--leave-running")
    logical = sum(a.stat().st_size for a in archives)
    mounted.settle()
    stats = json.loads((mounted.mnt / ".lzfs" / "stats.json").read_text())
    assert stats["stored"] < logical / 4, (stats["stored"], logical)
    data = json.loads(lzfs_cmd("report", str(mounted.mnt), "--json").stdout)
    rows = {g["name"]: g for g in data["groups"]}
    assert "(outside snapshots)" not in rows
    for name in ("x0.tar", "x1.tar", "x2.tar"):
        assert rows[name]["complete"] is True, rows[name]
    assert rows["x2.tar"]["unique"] < 0.1 * rows["x2.tar"]["stored"], rows["x2.tar"]
    assert rows["x2.tar"]["shared_with"]["x1.tar"] > 0
