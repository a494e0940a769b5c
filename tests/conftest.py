"""Shared fixtures: stores in tmp dirs, real FUSE mounts run as `lzfs mount` subprocesses."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import settings

from lzfs.mount.mountinfo import find_mount
from lzfs.store.layout import mkfs

ROOT = Path(__file__).resolve().parent.parent

# Property tests draw the same examples on every run (derandomize), so CI cannot fail by
# chance; every failure ever found is pinned next to its test with @example (the failures
# database, kept in the code where a reviewer sees it). Fresh draws belong in the long run:
# LZFS_HYPOTHESIS=fresh (scripts/soak sets it) draws new examples, ten times as many.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("fresh", derandomize=False, database=None, print_blob=True,
                          max_examples=1000)
settings.load_profile(os.environ.get("LZFS_HYPOTHESIS", "ci"))

# Tiers that need a real FUSE mount (and root): everything outside tests/unit. Marked here, by
# place, so that `pytest -m "not fuse"` runs the unit tier alone and a new test file cannot
# forget its marker.
_FUSE_TIERS = ("fuse", "criu", "s3", "containers")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests = ROOT / "tests"
    for item in items:
        if item.path.is_relative_to(tests) and item.path.relative_to(tests).parts[0] in _FUSE_TIERS:
            item.add_marker(pytest.mark.fuse)


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


def tree_state(path: Path) -> dict[str, tuple]:
    """(mode, size, mtime, sha256) of ``path`` and everything under it; {} if it is absent."""
    if not os.path.lexists(path):
        return {}
    entries = [path, *sorted(path.rglob("*"))] if path.is_dir() else [path]
    out = {}
    for p in entries:
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else ""
        out[str(p.relative_to(path))] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return out


def assert_private(root: Path) -> None:
    """Every directory under ``root`` (and root) is 0700, every file 0600."""
    for dirpath, _dirnames, filenames in os.walk(root):
        assert stat.S_IMODE(os.stat(dirpath).st_mode) == 0o700, dirpath
        for name in filenames:
            mode = stat.S_IMODE(os.lstat(os.path.join(dirpath, name)).st_mode)
            assert mode == 0o600, (os.path.join(dirpath, name), oct(mode))


class Mounted:
    """A store mounted at ``mnt`` by a real `lzfs mount` daemon."""

    def __init__(self, store: Path, mnt: Path, options: tuple[str, ...] = ()) -> None:
        self.store = store
        self.mnt = mnt
        self.options = options  # extra `lzfs mount` arguments, used at every (re)mount

    def mount(self) -> None:
        lzfs_cmd("mount", *self.options, str(self.store), str(self.mnt))
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

    def settle(self, timeout: float = 60) -> None:
        """Have the daemon compress and dedup what a fast writer staged (it does so by itself
        a second after the last request): for figures read right after a dump. Again while a
        file the writer just closed is still open to the daemon (the kernel's release comes
        after the writer exits)."""
        import json

        deadline = time.monotonic() + timeout
        while True:
            os.setxattr(self.mnt / ".lzfs", "user.lzfs.settle", b"1")
            stats = json.loads((self.mnt / ".lzfs" / "stats.json").read_text())
            if not stats["staged"]:
                return
            assert time.monotonic() < deadline, f"still staged after {timeout} s: {stats}"
            time.sleep(0.2)

    def daemon_pid(self) -> int:
        return int((self.store / "lock").read_text().strip())

    def crash(self, drop_caches: bool = False) -> None:
        """SIGKILL the daemon (what a crash or the OOM killer does), detach the dead mount;
        with ``drop_caches``, also make the kernel forget its cached pages, so what is read
        next comes from disk (the power-cut simulation the reliability issue asks for; dirty
        pages the kernel still holds are written back, not lost, so it cannot prove more)."""
        pid = self.daemon_pid()
        os.kill(pid, signal.SIGKILL)
        from lzfs.testing.exercise_targets import process_gone

        for _ in range(200):
            if process_gone(pid):
                break
            time.sleep(0.05)
        subprocess.run(["fusermount3", "-uz", str(self.mnt)], check=False,
                       capture_output=True)
        if drop_caches:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")

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


def _mounted(tmp: Path, options: tuple[str, ...] = ()) -> Mounted:
    """A fresh store in ``tmp`` mounted by a real daemon with ``options``."""
    reason = fuse_unusable_reason()
    if reason:
        pytest.skip(reason)
    store = tmp / "store"
    mkfs(store)
    mnt = tmp / "mnt"
    mnt.mkdir()
    m = Mounted(store, mnt, options)
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


def criu_image(magic: int, items: list[tuple[str, dict]]) -> bytes:
    """A CRIU protobuf image built from (message kind, fields) entries, for parser tests: a
    list value fills a repeated message field from dicts."""
    import struct

    from lzfs.criu import images

    out = [struct.pack("<II", images.IMG_COMMON_MAGIC, magic)]
    for kind, fields in items:
        msg = images._CLASSES[kind]()
        for k, v in fields.items():
            if isinstance(v, list):
                for item in v:
                    sub = getattr(msg, k).add()
                    for kk, vv in item.items():
                        setattr(sub, kk, vv)
            else:
                setattr(msg, k, v)
        payload = msg.SerializeToString()
        out.append(struct.pack("<I", len(payload)) + payload)
    return b"".join(out)
