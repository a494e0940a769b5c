"""Space comes back on its own: `rm -r` of a snapshot shrinks the store within a few seconds
(the daemon's committer collects what nobody references), while other snapshots read on."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time

from tests.conftest import Mounted, lzfs_cmd


def _pack_bytes(store) -> int:
    return sum(p.stat().st_blocks * 512 for p in (store / "packs").iterdir())


def test_rm_of_a_snapshot_gives_its_space_back_by_itself(mounted):
    keep, gone = mounted.mnt / "keep", mounted.mnt / "gone"
    keep.mkdir()
    gone.mkdir()
    kept = {f"pages-{i}.img": os.urandom(4 << 20) for i in range(2)}
    for name, data in kept.items():
        (keep / name).write_bytes(data)
    for i in range(3):
        (gone / f"pages-{i}.img").write_bytes(os.urandom(8 << 20))
    mounted.settle()  # written through passthrough: stored in packs once settled
    before = _pack_bytes(mounted.store)
    shutil.rmtree(gone)
    deadline = time.monotonic() + 30  # the committer runs every 5 s by default
    while _pack_bytes(mounted.store) > before - (23 << 20):
        assert time.monotonic() < deadline, (before, _pack_bytes(mounted.store))
        for name, data in kept.items():  # others read on meanwhile
            got = (keep / name).read_bytes()
            assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        time.sleep(0.5)
    stats = json.loads((mounted.mnt / ".lzfs" / "stats.json").read_text())
    assert stats["garbage_frames"] == 0, stats
    mounted.remount()
    for name, data in kept.items():
        assert (keep / name).read_bytes() == data


def _stats(m) -> dict:
    return json.loads((m.mnt / ".lzfs" / "stats.json").read_text())


def _staging_mount(tmp_path, *extra: str):
    """A mount whose every write stages in the daemon (as a dump that outruns the encoder
    does where the kernel cannot pass writes through)."""
    from lzfs.store.layout import mkfs

    store, mnt = tmp_path / "store", tmp_path / "mnt"
    mkfs(store)
    mnt.mkdir()
    m = Mounted(store, mnt, ("--stage-backlog", "0", "--no-passthrough", *extra))
    m.mount()
    return m


def test_staged_dump_data_settles_when_idle_and_reads_the_same(tmp_path):
    m = _staging_mount(tmp_path)
    try:
        words = b" ".join(b"token%d" % (i % 500) for i in range(2_000_000))[:12 << 20]
        for name in ("one", "two"):  # the same data twice: staged twice, raw
            (m.mnt / name).write_bytes(words)
        st = _stats(m)
        assert st["staged"] >= 2 * len(words) - (1 << 20), st
        raw_bytes = _pack_bytes(m.store)
        assert (m.mnt / "one").read_bytes() == words
        deadline = time.monotonic() + 60  # idle for a second: the settler runs
        while _stats(m)["staged"]:
            assert time.monotonic() < deadline, _stats(m)
            time.sleep(0.5)
        for name in ("one", "two"):
            assert (m.mnt / name).read_bytes() == words
        os.setxattr(m.mnt / ".lzfs", "user.lzfs.gc", b"1")
        assert _pack_bytes(m.store) < raw_bytes / 4  # compressed, and stored once
        assert float(os.getxattr(m.mnt / "two", "user.lzfs.stored")) < len(words) / 2
    finally:
        m.umount()


def test_unmount_settles_and_a_crash_keeps_staged_data(tmp_path):
    """Staged frames are ordinary committed frames: after a kill -9 they read back and the
    next mount settles them; an unmount leaves nothing staged."""
    m = _staging_mount(tmp_path, "--settle-idle", "3600")  # nothing settles before the crash
    data = os.urandom(3 << 20) + b"abc" * (1 << 20)
    (m.mnt / "f").write_bytes(data)
    fd = os.open(m.mnt / "f", os.O_RDONLY)
    os.fsync(fd)  # committed: durable
    os.close(fd)
    assert _stats(m)["staged"] > 0
    m.crash()
    m.mount()
    try:
        assert (m.mnt / "f").read_bytes() == data
    finally:
        m.umount()
    from lzfs.store.store import Store

    s = Store(m.store, readonly=True)
    try:
        assert s.stats().staged == 0  # settled at unmount
    finally:
        s.close()
    assert "store is clean" in lzfs_cmd("fsck", str(m.store)).stdout
