"""Shared fixtures: stores in tmp dirs, real FUSE mounts run as `lzfs mount` subprocesses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lzfs.mounts import find_mount
from lzfs.store import mkfs

ROOT = Path(__file__).resolve().parent.parent


def fuse_unusable_reason() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if not shutil.which("fusermount3"):
        return "no fusermount3 (apt-get install fuse3)"
    if os.geteuid() != 0:
        return "FUSE mount tests run as root"
    return None


def lzfs_cmd(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "lzfs", *args], capture_output=True, text=True,
                         **kw)
    if check and res.returncode != 0:
        raise AssertionError(f"lzfs {' '.join(args)} failed ({res.returncode}): {res.stderr}")
    return res


class Mounted:
    """A store mounted at ``mnt`` by a real `lzfs mount` daemon."""

    def __init__(self, store: Path, mnt: Path) -> None:
        self.store = store
        self.mnt = mnt

    def mount(self) -> None:
        lzfs_cmd("mount", str(self.store), str(self.mnt))
        assert find_mount(self.mnt) is not None

    def umount(self) -> None:
        if find_mount(self.mnt) is None:
            return
        for _ in range(50):
            res = lzfs_cmd("umount", str(self.mnt), check=False)
            if res.returncode == 0:
                return
            time.sleep(0.2)  # a just-closed file can keep the mount busy for a moment
        raise AssertionError(f"cannot unmount {self.mnt}: {res.stderr}")

    def remount(self) -> None:
        self.umount()
        self.mount()

    def log(self) -> str:
        try:
            return (self.store / "lzfs.log").read_text()
        except OSError:
            return ""


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    mkfs(path)
    return path


def _mounted(tmp: Path) -> Mounted:
    reason = fuse_unusable_reason()
    if reason:
        pytest.skip(reason)
    store = tmp / "store"
    mkfs(store)
    mnt = tmp / "mnt"
    mnt.mkdir()
    m = Mounted(store, mnt)
    m.mount()
    return m


@pytest.fixture
def mounted(tmp_path: Path):
    m = _mounted(tmp_path)
    try:
        yield m
    finally:
        m.umount()


@pytest.fixture(scope="module")
def module_mount(tmp_path_factory):
    m = _mounted(tmp_path_factory.mktemp("mod"))
    try:
        yield m
    finally:
        m.umount()


@pytest.fixture
def workload(tmp_path):
    """Start workload processes (lzfs.testing.workload) for CRIU to dump; stopped after."""
    from lzfs.testing.criu import Workload

    started: list[Workload] = []

    def start(**kw) -> Workload:
        w = Workload.start(tmp_path / f"ctl{len(started)}", **kw)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()
