"""Faults under real CRIU: the daemon killed at random points of real dumps, a store whose
disk fills during a dump, and dumps and a restore running at once. After each, every earlier
snapshot restores, fsck is clean, and an interrupted snapshot is either whole or said to be
incomplete, never silently wrong."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import threading
import time

import pytest

from lzfs.report.fsck import fsck
from lzfs.store.layout import mkfs
from lzfs.store.store import Store
from lzfs.testing.criu import CriuError, Workload, criu_command, run_criu
from tests.conftest import Mounted, lzfs_cmd

pytestmark = pytest.mark.criu

KILL_ROUNDS = int(os.environ.get("LZFS_KILL_ROUNDS", "5"))


def _criu_dump_async(snap, pid: int) -> subprocess.Popen:
    return subprocess.Popen(
        [*criu_command(), "dump", "-D", str(snap), "-o", "dump.log", "-v4", "-t", str(pid),
         "--shell-job", "--leave-running"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _report(m: Mounted) -> dict[str, dict]:
    rep = json.loads(lzfs_cmd("report", "--json", str(m.mnt)).stdout)
    return {g["name"]: g for g in rep["groups"]}


def _fsck_clean(m: Mounted) -> list[str]:
    """Unmount, fsck (must be clean), mount again; returns fsck's notices."""
    m.umount()
    result = fsck(m.store)
    assert result.clean, [p.message for p in result.errors]
    m.mount()
    return [p.message for p in result.problems]


def _restore_and_check(snap, w: Workload) -> None:
    w.stop()
    run_criu("restore", snap, "--shell-job", "-d", log_name=f"restore-{time.time_ns()}.log")
    assert w.ask_checksum() == w.checksum


def test_daemon_killed_at_random_points_of_real_dumps(mounted, workload):
    seed = int(os.environ.get("LZFS_KILL_SEED", time.time_ns() % 10**6))
    rnd = random.Random(seed)
    print(f"kill seed {seed} (LZFS_KILL_SEED={seed} repeats it)")
    # commit often, so that kills land between commits that hold parts of a dump
    mounted.options = ("--commit-interval", "0.2")
    mounted.remount()
    w = workload(size="240M", seed=11)
    base = mounted.mnt / "base"
    base.mkdir()
    t0 = time.monotonic()
    run_criu("dump", base, "-t", str(w.pid), "--shell-job", "--leave-running")
    dump_time = time.monotonic() - t0
    mounted.remount()
    outcomes = []
    for i in range(KILL_ROUNDS):
        snap = mounted.mnt / f"crash-{i}"
        snap.mkdir()
        time.sleep(0.3)  # past a commit: the directory itself is there after the kill
        delay = rnd.uniform(0.0, dump_time * 1.2)
        criu = _criu_dump_async(snap, w.pid)
        time.sleep(delay)
        mounted.crash()
        try:
            criu.wait(timeout=300)
        except subprocess.TimeoutExpired:
            criu.kill()
            pytest.fail(f"CRIU hung after the daemon died (round {i}, {delay:.2f} s)")
        assert w.alive(), "the dumped process must survive a failed dump"
        mounted.mount()
        notices = _fsck_clean(mounted)
        group = _report(mounted).get(f"crash-{i}")  # absent: it holds no CRIU image yet
        complete = group["complete"] if group else None
        said = any(f"snapshot crash-{i} is incomplete" in n for n in notices)
        assert said == (complete is False), (notices, complete)
        outcomes.append((round(delay, 2), criu.returncode, complete))
    print("kill rounds (delay s, criu exit, snapshot complete):", outcomes)
    # every snapshot that says it is complete restores, and so does the earlier one
    for name, g in sorted(_report(mounted).items()):
        if g["complete"]:
            _restore_and_check(mounted.mnt / name, w)
    # dropping the interrupted snapshots and collecting leaves no leaked space
    for i in range(KILL_ROUNDS):  # (its mkdir may not have been committed before the kill)
        shutil.rmtree(mounted.mnt / f"crash-{i}", ignore_errors=True)
    lzfs_cmd("gc", str(mounted.mnt))
    mounted.umount()
    s = Store(mounted.store, readonly=True)
    try:
        st = s.stats()
    finally:
        s.close()
    assert st.garbage_frames == 0
    assert st.pack_bytes < st.stored * 1.05 + (2 << 20), (st.pack_bytes, st.stored)
    mounted.mount()
    _restore_and_check(base, w)


@pytest.fixture
def small_fs(tmp_path):
    """A 192 MiB file system of its own (tmpfs, punch-hole capable) for the store."""
    root = tmp_path / "small"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192m,mode=0700", "tmpfs", str(root)],
                   check=True)
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def test_disk_fills_during_a_dump(small_fs, tmp_path, workload):
    store = small_fs / "store"
    mkfs(store)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    m = Mounted(store, mnt)
    m.mount()
    try:
        first = workload(size="48M", seed=21)
        (mnt / "first").mkdir()
        run_criu("dump", mnt / "first", "-t", str(first.pid), "--shell-job", "--leave-running")
        big = workload(size="256M", profile="random", seed=22)
        (mnt / "big").mkdir()
        with pytest.raises(CriuError):
            run_criu("dump", mnt / "big", "-t", str(big.pid), "--shell-job")
        assert big.alive(), "a failed dump resumes the process"
        assert "store file system is full" in m.log()
        notices = _fsck_clean(m)
        assert any("snapshot big is incomplete" in n for n in notices), notices
        assert _report(m)["big"]["complete"] is False
        assert _report(m)["first"]["complete"] is True
        # room again once the failed snapshot is gone
        shutil.rmtree(mnt / "big")
        lzfs_cmd("gc", str(mnt))
        _restore_and_check(mnt / "first", first)
        (mnt / "after").write_bytes(os.urandom(8 << 20))
        assert len((mnt / "after").read_bytes()) == 8 << 20
    finally:
        m.umount()


def test_two_dumps_and_a_restore_at_once(mounted, workload):
    a, b, c = (workload(size="96M", seed=31 + i) for i in range(3))
    (mounted.mnt / "c").mkdir()
    run_criu("dump", mounted.mnt / "c", "-t", str(c.pid), "--shell-job")
    c.wait_gone()
    mounted.remount()
    errors: list[BaseException] = []

    def run(fn, *args) -> None:
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 -- asserted on below
            errors.append(exc)

    def dump(name: str, w: Workload) -> None:
        (mounted.mnt / name).mkdir()
        run_criu("dump", mounted.mnt / name, "-t", str(w.pid), "--shell-job")

    threads = [threading.Thread(target=run, args=(dump, "a", a)),
               threading.Thread(target=run, args=(dump, "b", b)),
               threading.Thread(target=run, args=(run_criu, "restore", mounted.mnt / "c",
                                                  "--shell-job", "-d"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    assert c.ask_checksum() == c.checksum
    a.wait_gone()
    b.wait_gone()
    _fsck_clean(mounted)
    for name, w in (("a", a), ("b", b)):
        _restore_and_check(mounted.mnt / name, w)
