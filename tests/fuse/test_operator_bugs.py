"""What a new operator met (issue 22), each reproduced through real mounts and the real
command line: every one of these failed before its fix."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from lzfs.store.layout import mkfs
from tests.conftest import Mounted, fuse_unusable_reason, lzfs_cmd

pytestmark = pytest.mark.skipif(fuse_unusable_reason() is not None,
                                reason=fuse_unusable_reason() or "")


def test_stats_work_on_a_mount_and_beside_its_daemon_are_current(mounted):
    for i in range(3):
        (mounted.mnt / f"f{i}").write_bytes(os.urandom(100_000))
    on_mount = lzfs_cmd("stats", "--json", str(mounted.mnt))
    assert json.loads(on_mount.stdout)["files"] == 3
    beside = json.loads(lzfs_cmd("stats", "--json", str(mounted.store)).stdout)
    assert beside["files"] == 3 and beside["schema"] == "lzfs-stats/1"  # not the last commit
    (mounted.mnt / "d").mkdir()
    res = lzfs_cmd("stats", str(mounted.mnt / "d"), check=False)
    assert res.returncode == 1 and "mkfs" not in res.stderr
    assert f"inside the lzfs mount {mounted.mnt}" in res.stderr


def test_mkfs_inside_a_mount_and_a_mount_over_a_full_directory_are_refused(mounted, tmp_path):
    res = lzfs_cmd("mkfs", str(mounted.mnt / "store2"), check=False)
    assert res.returncode == 1 and "inside the lzfs mount" in res.stderr
    assert not (mounted.mnt / "store2").exists()
    full = tmp_path / "full"
    full.mkdir()
    (full / "precious").write_text("hidden by a mount")
    store2 = tmp_path / "store2"
    mkfs(store2)
    res = lzfs_cmd("mount", str(store2), str(full), check=False)
    assert res.returncode == 1 and "not empty" in res.stderr and "nonempty" in res.stderr
    assert (full / "precious").read_text() == "hidden by a mount"
    lzfs_cmd("mount", "-o", "nonempty", str(store2), str(full))
    try:
        assert not (full / "precious").exists()
    finally:
        lzfs_cmd("umount", str(full))
    assert (full / "precious").exists()


def test_sighup_reopens_the_log_and_keeps_the_mount(mounted):
    log = mounted.store / "lzfs.log"
    log.rename(mounted.store / "lzfs.log.1")  # what logrotate does
    os.kill(mounted.daemon_pid(), signal.SIGHUP)
    for _ in range(100):
        if log.exists():
            break
        time.sleep(0.05)
    (mounted.mnt / "f").write_bytes(b"still mounted")
    assert (mounted.mnt / "f").read_bytes() == b"still mounted"
    assert "log reopened" in log.read_text()


def test_an_unknown_mount_option_is_refused_by_name_and_known_ones_all_work(tmp_path):
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    mnt.mkdir()
    mkfs(store)
    res = lzfs_cmd("mount", "-o", "cache_mib=64", str(store), str(mnt), check=False)
    assert res.returncode == 1 and "cache_mib" in res.stderr
    assert "fuse_session_new" not in res.stderr
    lzfs_cmd("mount", "-o", "cache_mb=64,reserve_mb=32,commit_interval=2,nostage",
             str(store), str(mnt))
    try:
        st = json.loads((mnt / ".lzfs" / "stats.json").read_text())
        assert st["cache"]["budget"] == 64 << 20
    finally:
        lzfs_cmd("umount", str(mnt))


def test_df_on_the_mount_leaves_out_the_reserve(tmp_path):
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    mnt.mkdir()
    mkfs(store)
    lzfs_cmd("mount", "--reserve-mb", "512", str(store), str(mnt))
    try:
        a, b = os.statvfs(mnt), os.statvfs(store)
        gap = b.f_bavail * b.f_frsize - a.f_bavail * a.f_frsize
        assert abs(gap - (512 << 20)) < (64 << 20), gap
    finally:
        lzfs_cmd("umount", str(mnt))


def test_export_is_sparse_and_works_from_an_unmounted_store(mounted, tmp_path):
    snap = mounted.mnt / "snap"
    snap.mkdir()
    data = os.urandom(1 << 20) + bytes(8 << 20) + os.urandom(4096)
    (snap / "pages-1.img").write_bytes(data)
    (snap / "core-1.img").write_bytes(b"core")
    lzfs_cmd("export", "-q", str(snap), str(tmp_path / "out"))
    out = tmp_path / "out" / "pages-1.img"
    assert out.read_bytes() == data
    assert out.stat().st_blocks * 512 < (2 << 20)  # the zeros are a hole
    mounted.umount()
    lzfs_cmd("export", "-q", str(mounted.store / "snap"), str(tmp_path / "cold"))
    assert (tmp_path / "cold" / "pages-1.img").read_bytes() == data
    assert (tmp_path / "cold" / "pages-1.img").stat().st_blocks * 512 < (2 << 20)
    assert (tmp_path / "cold" / "core-1.img").read_bytes() == b"core"
    mounted.mount()


def test_fsck_of_an_object_store_url_says_what_to_use():
    res = lzfs_cmd("fsck", "s3://ckpt/models", check=False)
    assert res.returncode == 8
    assert "object store" in res.stderr and "no such directory" not in res.stderr


def _bucket(tmp_path: Path) -> str:
    shared = tmp_path / "bucket"
    shared.mkdir()
    url = f"file://{shared}"
    lzfs_cmd("mkfs", url)
    return url


def test_a_failed_node_mount_leaves_nothing_behind(tmp_path):
    url = _bucket(tmp_path)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    other = tmp_path / "other"  # not empty, not a cache
    other.mkdir()
    (other / "data").write_text("mine")
    res = lzfs_cmd("mount", url, str(mnt), "--cache", str(other), check=False)
    assert res.returncode == 1 and "not a node cache" in res.stderr and "mkfs" not in res.stderr
    assert sorted(os.listdir(other)) == ["data"]
    store = tmp_path / "store"  # a store, named as a cache: its log is left alone
    mkfs(store)
    before = sorted(os.listdir(store))
    res = lzfs_cmd("mount", url, str(mnt), "--cache", str(store), check=False)
    assert res.returncode == 1 and "an lzfs store, not a node cache" in res.stderr
    assert sorted(os.listdir(store)) == before
    fresh = tmp_path / "fresh"  # made by the mount, which then fails: it goes again
    res = lzfs_cmd("mount", f"file://{tmp_path / 'nobucket'}", str(mnt), "--cache", str(fresh),
                   check=False)
    assert res.returncode == 1 and not fresh.exists()


def test_a_node_publishes_reports_and_remounts_cleanly(tmp_path):
    url = _bucket(tmp_path)
    m = Mounted(Path(url), tmp_path / "mnt", ("--cache", str(tmp_path / "cache"), "--refresh",
                                              "0"))
    m.mnt.mkdir()
    lzfs_cmd("mount", url, str(m.mnt), *m.options)
    try:
        (m.mnt / "snap").mkdir()
        (m.mnt / "snap" / "pages-1.img").write_bytes(os.urandom(3 << 20))
        lzfs_cmd("publish", str(m.mnt / "snap"))
        st = lzfs_cmd("stats", str(tmp_path / "cache")).stdout
        assert "awaiting publication" not in st, st  # committed with the publication
    finally:
        lzfs_cmd("umount", str(m.mnt))
    lzfs_cmd("mount", url, str(m.mnt), *m.options)
    lzfs_cmd("umount", str(m.mnt))
    log = (tmp_path / "cache" / "lzfs.log").read_text()
    assert "removed uncommitted pack" not in log  # a clean unmount leaves none
    rep = json.loads(lzfs_cmd("report", "--json", url).stdout)
    assert rep["store"] == url  # not the throwaway directory it was read through
    assert rep["totals"]["pack_bytes"] > 1 << 20


def test_help_and_the_man_page_describe_the_store_as_it_is(tmp_path):
    top = lzfs_cmd("--help").stdout
    for section in ("signals:", "environment:", "files:", "SIGHUP", "AWS_ENDPOINT_URL",
                    "LZFS_CRIU", "staging/"):
        assert section in top, section
    mk = lzfs_cmd("mkfs", "--help").stdout
    assert "block sizes" not in mk and "--avg-pages" not in mk
    assert lzfs_cmd("mkfs", "--avg-pages", "16", str(tmp_path / "s"), check=False
                    ).returncode == 2
    root = Path(__file__).resolve().parents[2]
    page = subprocess.run([str(root / ".venv/bin/python"), str(root / "scripts/manpage.py"),
                           str(tmp_path / "lzfs.1")], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(root)})  # this checkout
    assert page.returncode == 0, page.stderr
    text = (tmp_path / "lzfs.1").read_text()
    for section in ("SIGNALS", "ENVIRONMENT", "FILES"):
        assert f'.SH "{section}"' in text or f".SH {section}" in text, section
    for feature in ("lzfs verify", "lzfs prune", "metrics", "scrub_hours", "lzfs@.service"):
        assert feature in text.replace("\\-", "-"), feature
