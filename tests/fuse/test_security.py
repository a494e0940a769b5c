"""A store holds process memory: it is private to its owner under any umask; the mount lets the
kernel check permissions, lets other users in only with --allow-other, and no name or symlink
on it reaches the store's own files."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import Mounted, assert_private, fuse_unusable_reason, lzfs_cmd

pytestmark = pytest.mark.skipif(fuse_unusable_reason() is not None,
                                reason=fuse_unusable_reason() or "")
NOBODY = 65534


def _mount_options(mnt: Path) -> set[str]:
    """The super options of the mount at ``mnt`` (after ' - fstype source ')."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if left.split()[4] == str(mnt):
                return set(right.split()[2].split(","))
    raise AssertionError(f"{mnt} is not mounted")


def _as_nobody(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                           "--clear-groups", "--", *cmd], capture_output=True, text=True,
                          check=False)


@pytest.fixture
def public_base():
    """A directory other users can traverse (pytest's tmp dirs are 0700 to them)."""
    base = Path(tempfile.mkdtemp(prefix="lzfs-sec-"))
    os.chmod(base, 0o755)
    (base / "mnt").mkdir(mode=0o755)
    lzfs_cmd("mkfs", str(base / "store"))
    m = Mounted(base / "store", base / "mnt")
    try:
        yield m
    finally:
        m.umount()
        shutil.rmtree(base)


@pytest.mark.parametrize("umask", [0o022, 0o000], ids=["umask-022", "umask-000"])
def test_every_store_file_is_private_under_any_umask(tmp_path, umask):
    old = os.umask(umask)  # inherited by the lzfs commands and the daemon
    try:
        store, mnt = tmp_path / "store", tmp_path / "mnt"
        mnt.mkdir()
        lzfs_cmd("mkfs", str(store))
        lzfs_cmd("mount", str(store), str(mnt))
        try:
            (mnt / "keep").write_bytes(os.urandom(1 << 20))
            (mnt / "drop").write_bytes(os.urandom(1 << 20))
            os.unlink(mnt / "drop")
            lzfs_cmd("gc", str(mnt))
            assert {"meta.db-wal", "meta.db-shm", "lock", "lzfs.log"} <= set(os.listdir(store))
            assert_private(store)
        finally:
            lzfs_cmd("umount", str(mnt))
        lzfs_cmd("gc", str(store))
        lzfs_cmd("stats", str(store))
        assert_private(store)
    finally:
        os.umask(old)


def test_kernel_checks_permissions_and_others_need_allow_other(public_base):
    m = public_base
    m.mount()
    opts = _mount_options(m.mnt)
    assert "default_permissions" in opts and "allow_other" not in opts
    (m.mnt / "public").write_text("for everyone\n")
    assert _as_nobody("stat", str(m.mnt.parent)).returncode == 0  # the way there is open
    res = _as_nobody("ls", str(m.mnt))
    assert res.returncode != 0 and "Permission denied" in res.stderr
    m.umount()

    lzfs_cmd("mount", "--allow-other", str(m.store), str(m.mnt))
    opts = _mount_options(m.mnt)
    assert {"default_permissions", "allow_other"} <= opts
    (m.mnt / "secret").write_text("root only\n")
    os.chmod(m.mnt / "secret", 0o600)
    assert _as_nobody("cat", str(m.mnt / "public")).stdout == "for everyone\n"
    for cmd in (["cat", str(m.mnt / "secret")], ["touch", str(m.mnt / "public")],
                ["mkdir", str(m.mnt / "mine")]):
        res = _as_nobody(*cmd)
        assert res.returncode != 0 and "Permission denied" in res.stderr, cmd
    assert (m.mnt / "secret").read_text() == "root only\n"


def test_no_name_or_symlink_on_the_mount_reaches_store_files(public_base):
    m = public_base
    lzfs_cmd("mount", "--allow-other", str(m.store), str(m.mnt))
    (m.mnt / "snap").mkdir()
    (m.mnt / "snap" / "pages-1.img").write_bytes(b"pages")
    for name in ("meta.db", "lzfs.json", "packs", "lock", "lzfs.log", "packs/00000001.pack",
                 ".lzfs/meta.db", "snap/../meta.db", ".lzfs/../lzfs.json"):
        assert not os.path.lexists(m.mnt / name), name
    # a name is one path component: "a/b" is a lookup of b in a, ".." the kernel's parent
    with pytest.raises(FileNotFoundError):
        os.open(m.mnt / "nodir" / "b", os.O_WRONLY | os.O_CREAT, 0o644)
    assert os.stat(m.mnt / "..").st_ino == os.stat(m.mnt.parent).st_ino
    assert sorted(os.listdir(m.mnt)) == ["snap"]
    # symlinks are text; the kernel resolves them as the caller, relative to the link
    for name, target in (("rel", "../store/meta.db"), ("rel2", "../../store/meta.db"),
                         ("abs", str(m.store / "meta.db")),
                         ("pack", "../../store/packs/00000001.pack")):
        os.symlink(target, m.mnt / "snap" / name)
        assert os.readlink(m.mnt / "snap" / name) == target
    db_head = (m.store / "meta.db").read_bytes()[:16]
    assert db_head.startswith(b"SQLite format 3")
    # ../../store from MNT/snap is BASE/store: root reaches what it reaches anyway, nothing
    # relative to the mount; from MNT/snap, ../store is MNT/store, which does not exist
    assert (m.mnt / "snap" / "rel2").read_bytes()[:16] == db_head
    assert not (m.mnt / "snap" / "rel").exists()
    for name in ("rel2", "abs", "pack"):
        res = _as_nobody("cat", str(m.mnt / "snap" / name))
        assert res.returncode != 0 and "Permission denied" in res.stderr, name
