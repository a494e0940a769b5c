"""`lzfs report` treats a checkpoint archive (a tar of CRIU images, laid out as Podman's
`--export` and the kubelet write it) as a snapshot: a row of its own, complete or not, and its
memory regions. The images come from a real runc checkpoint."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.conftest import lzfs_cmd

pytestmark = [pytest.mark.criu, pytest.mark.fuse]


def _podman_layout(images: Path, dest: Path, cut: int | None = None) -> None:
    """Write ``images`` as Podman lays out an export: config beside checkpoint/; with
    ``cut``, only the first ``cut`` bytes of it (an export that died)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        config = b'{"id": "lzfs-test"}' * 1000
        info = tarfile.TarInfo("config.dump")
        info.size = len(config)
        t.addfile(info, io.BytesIO(config))
        for p in sorted(images.iterdir()):
            t.add(p, f"checkpoint/{p.name}")
    data = buf.getvalue()
    dest.write_bytes(data[:cut] if cut is not None else data)


def _groups(mnt: Path, by: str = "snapshot") -> dict:
    return json.loads(lzfs_cmd("report", str(mnt), "--json", "--by", by).stdout)


@pytest.fixture
def checkpoint(runc_container, tmp_path: Path) -> Path:
    c = runc_container(mib=24)
    images = tmp_path / "images"
    c.checkpoint(images)
    return images


def test_a_checkpoint_archive_is_a_snapshot_of_its_own(mounted, checkpoint):
    _podman_layout(checkpoint, mounted.mnt / "web-1.tar")
    (mounted.mnt / "notes.txt").write_text("not a snapshot\n")
    rows = {g["name"]: g for g in _groups(mounted.mnt)["groups"]}
    row = rows["web-1.tar"]
    assert row["complete"] is True and row["problems"] == []
    assert row["logical"] == (mounted.mnt / "web-1.tar").stat().st_size
    assert row["zero"] > 7 << 20  # the zeroed third of the container's memory
    assert rows["(outside snapshots)"]["files"] == 1  # notes.txt only
    text = lzfs_cmd("report", str(mounted.mnt)).stdout
    assert "web-1.tar" in text and "incomplete" not in text


def test_an_archive_cut_short_is_an_incomplete_snapshot(mounted, checkpoint):
    pages = (checkpoint / "pages-1.img").stat().st_size
    _podman_layout(checkpoint, mounted.mnt / "died.tar", cut=pages // 2)
    row = {g["name"]: g for g in _groups(mounted.mnt)["groups"]}["died.tar"]
    assert row["complete"] is False
    assert any("ends inside checkpoint/pages-1.img" in p for p in row["problems"]), row
    text = lzfs_cmd("report", str(mounted.mnt)).stdout
    assert "incomplete: died.tar: the archive ends inside checkpoint/pages-1.img" in text


def test_an_archive_lists_the_memory_regions_of_its_pages(mounted, checkpoint):
    import shutil

    _podman_layout(checkpoint, mounted.mnt / "web-1.tar")
    shutil.copytree(checkpoint, mounted.mnt / "web-1")
    snaps = {s["snapshot"]: s for s in _groups(mounted.mnt, "region")["snapshots"]}
    regions = {r["region"]: r for r in snaps["web-1.tar"]["regions"]}
    plain = {r["region"]: r for r in snaps["web-1"]["regions"]}
    assert regions["[anon]"]["logical"] == plain["[anon]"]["logical"] > (24 << 20) * 0.9
    assert abs(regions["[anon]"]["zero"] - plain["[anon]"]["zero"]) <= 2 * 4096, (regions, plain)


def test_an_archive_shares_its_pages_with_a_directory_of_the_same_images(mounted, checkpoint):
    """tar puts a member's data at a multiple of 512 bytes, not of 4 KiB: lzfs cuts pages from
    each member's data start (lzfs/grid.py), so they dedup with the directory's."""
    import shutil

    shutil.copytree(checkpoint, mounted.mnt / "web-1")
    _podman_layout(checkpoint, mounted.mnt / "web-1.tar")
    rows = {g["name"]: g for g in _groups(mounted.mnt)["groups"]}
    shared = rows["web-1.tar"]["shared_with_raw"].get("web-1", 0)
    assert shared > 0.9 * rows["web-1"]["distinct_raw"], (shared, rows["web-1"])
