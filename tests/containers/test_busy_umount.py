"""`lzfs umount` of a busy mount names what holds it, in one line: a process with a file open
there, or a mount inside it (what a killed CRIU restore leaves in a container's images
directory: its cgroup yard, `.criu.cgyard.XXXXXX`). Nothing is lost: the mount stays up."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.conftest import fuse_unusable_reason, lzfs_cmd

pytestmark = pytest.mark.fuse


@pytest.fixture(autouse=True)
def _need_fuse():
    reason = fuse_unusable_reason()
    if reason:
        pytest.skip(reason)


def _refused(mounted) -> str:
    res = lzfs_cmd("umount", str(mounted.mnt), check=False)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


def test_a_file_held_open_in_the_mount_is_named_with_its_process(mounted):
    images = mounted.mnt / "ck"
    images.mkdir()
    (images / "pages-1.img").write_bytes(b"x" * 8192)
    with open(images / "pages-1.img", "rb") as f:
        holder = subprocess.Popen(["sleep", "300"], stdin=f)
    try:
        line = _refused(mounted)
        assert f"pid {holder.pid} (sleep) has {images / 'pages-1.img'} still open" in line, line
        assert (images / "pages-1.img").read_bytes() == b"x" * 8192
    finally:
        holder.kill()
        holder.wait()


def test_a_process_working_in_the_mount_is_named(mounted):
    (mounted.mnt / "ck").mkdir()
    holder = subprocess.Popen(["sleep", "300"], cwd=mounted.mnt / "ck")
    try:
        assert f"pid {holder.pid} (sleep) works in {mounted.mnt / 'ck'}" in _refused(mounted)
    finally:
        holder.kill()
        holder.wait()


def test_a_mount_inside_the_mount_is_named(mounted, tmp_path):
    yard = mounted.mnt / "ck" / ".criu.cgyard.AbC123"
    yard.mkdir(parents=True)
    (tmp_path / "cg").mkdir()
    subprocess.run(["mount", "--bind", str(tmp_path / "cg"), str(yard)], check=True)
    try:
        line = _refused(mounted)
        assert f"mount {yard} inside it" in line, line
        assert "unmount the mounts inside" in line
    finally:
        subprocess.run(["umount", str(yard)], check=True)
    for _ in range(50):  # once the inner mount is gone, the umount goes through
        if lzfs_cmd("umount", str(mounted.mnt), check=False).returncode == 0:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("still busy after the inner mount was removed")
