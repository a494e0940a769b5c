"""The lzfs command and the mount(8) helper, as a user runs them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from lzfs.mount.mountinfo import find_mount
from lzfs.store.db import SCHEMA_VERSION
from tests.conftest import fuse_unusable_reason, lzfs_cmd, tree_state

pytestmark = pytest.mark.skipif(fuse_unusable_reason() is not None,
                                reason=fuse_unusable_reason() or "")


def test_mount_t_fuse_lzfs_uses_the_helper(tmp_path):
    if not Path("/sbin/mount.fuse.lzfs").exists():
        pytest.skip("mount helper not installed (scripts/setup links /sbin/mount.fuse.lzfs)")
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    mnt.mkdir()
    lzfs_cmd("mkfs", str(store))
    res = subprocess.run(["mount", "-t", "fuse.lzfs", "-o", "defaults", str(store), str(mnt)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    try:
        m = find_mount(mnt)
        assert m is not None and m.store == store
        (mnt / "x").write_bytes(b"via mount(8)")
    finally:
        lzfs_cmd("umount", str(mnt))
    lzfs_cmd("mount", str(store), str(mnt))
    try:
        assert (mnt / "x").read_bytes() == b"via mount(8)"
    finally:
        lzfs_cmd("umount", str(mnt))


def test_umount_waits_until_everything_is_committed(tmp_path):
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    mnt.mkdir()
    lzfs_cmd("mkfs", str(store))
    lzfs_cmd("mount", str(store), str(mnt))
    data = os.urandom(20 << 20)
    (mnt / "big").write_bytes(data)
    lzfs_cmd("umount", str(mnt))
    # the daemon is gone and the store is free: a writer can open it at once
    from lzfs.store.store import Store
    s = Store(store)
    try:
        st = s.stats()
        assert st.logical == len(data)
        assert st.unique == len(data)
    finally:
        s.close()


@pytest.mark.parametrize("case", ["missing-mountpoint", "busy-store", "already-mounted"])
def test_bad_mounts_fail_with_one_line_and_change_nothing(tmp_path, case):
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    mnt.mkdir()
    lzfs_cmd("mkfs", str(store))
    other = None
    if case == "missing-mountpoint":
        mnt = tmp_path / "nowhere"
    elif case in ("busy-store", "already-mounted"):
        other = tmp_path / "mnt2"
        other.mkdir()
        lzfs_cmd("mount", str(store), str(other))
        if case == "already-mounted":
            store2 = tmp_path / "store2"
            lzfs_cmd("mkfs", str(store2))
            store, mnt = store2, other
    before = tree_state(store)
    try:
        res = lzfs_cmd("mount", str(store), str(mnt), check=False)
        assert res.returncode != 0
        err = res.stderr.strip()
        assert err.startswith("lzfs: ") and "\n" not in err, err
        assert tree_state(store) == before  # not even the log of the daemon serving it
    finally:
        if other is not None:
            lzfs_cmd("umount", str(other))


def test_umount_of_something_else_is_refused(tmp_path):
    res = lzfs_cmd("umount", str(tmp_path), check=False)
    assert res.returncode == 1
    assert "not an lzfs mount point" in res.stderr


@pytest.mark.parametrize("schema", [1, 2])
def test_a_format_1_store_is_checked_then_mounted_in_the_background_and_upgraded(
        tmp_path, schema):
    """A store written by an lzfs with 16-page blocks (schema 1 or 2): a check-only fsck
    verifies it as it is (writing nothing), `lzfs mount` in the background upgrades it, every
    byte reads back, and it is clean afterwards."""
    import sqlite3

    from tests.conftest import Mounted
    from tests.format1 import make_format1_store

    files = {"pages-1.img": os.urandom(3 << 20) + bytes(1 << 20) + os.urandom(5000),
             "inventory.img": os.urandom(86)}
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    mnt.mkdir()
    make_format1_store(store, files)
    if schema == 1:
        db = sqlite3.connect(store / "meta.db", isolation_level=None)
        db.execute("ALTER TABLE frames DROP COLUMN seed")
        db.execute("UPDATE meta SET value=1 WHERE key='schema_version'")
        db.close()
    before = tree_state(store)
    res = lzfs_cmd("fsck", str(store))
    assert "store is clean" in res.stdout
    assert tree_state(store) == before  # checked in a scratch copy: nothing written
    m = Mounted(store, mnt)
    m.mount()  # `lzfs mount` in the background: it looks first, then upgrades
    try:
        for name, data in files.items():
            assert (mnt / name).read_bytes() == data
    finally:
        m.umount()
    db = sqlite3.connect(store / "meta.db")
    assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] \
        == SCHEMA_VERSION
    assert "AUTOINCREMENT" in db.execute(
        "SELECT sql FROM sqlite_master WHERE name='frames'").fetchone()[0]
    db.close()
    assert "store is clean" in lzfs_cmd("fsck", str(store)).stdout
