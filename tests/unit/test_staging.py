"""Files written through FUSE passthrough, below the kernel: staging files and their table
(store/staging.py), and how the core hands them to the kernel, reads them, commits, settles
and recovers them (a stand-in for the kernel does what passthrough would: the open's reads
and writes go to the staging file). tests/fuse/test_passthrough.py has the real kernel."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import trio

from lzfs.core.backing import NoPassthrough
from lzfs.core.core import Core
from lzfs.core.options import MountOptions
from lzfs.report.fsck import fsck
from lzfs.store.layout import mkfs
from lzfs.store.namespace import ROOT_INODE
from lzfs.store.store import Store


class Kernel:
    """Hands out backing ids as the kernel does, and remembers which are held."""

    def __init__(self) -> None:
        self.held: dict[int, int] = {}
        self._next = 0

    def available(self) -> bool:
        return True

    def why_not(self) -> str:
        return ""

    def open(self, fd: int) -> int:
        self._next += 1
        self.held[self._next] = fd
        return self._next

    def close(self, backing_id: int) -> None:
        del self.held[backing_id]


def _core(store: Store, kernel=None, **opts) -> Core:
    return Core(store, lambda: None, MountOptions(commit_interval=3600, **opts),
                passthrough=kernel or Kernel())


def _run(root: Path, body, kernel=None, **opts) -> None:
    store = Store(root)
    core = _core(store, kernel, **opts)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            core.attach(nursery)
            await body(core, store)
            await core.commit()
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        store.close()


def _new_file(core: Core, name: bytes = b"pages-1.img") -> int:
    ino = core.ns.create(ROOT_INODE, name, 0o100644, 0, 0).id
    core.opened(ino)
    return ino


def test_an_empty_file_opened_for_writing_gets_a_staging_file_and_the_kernel_its_bytes(
        tmp_path):
    mkfs(tmp_path / "s")
    data = os.urandom(3 << 20)
    kernel = Kernel()

    async def body(core: Core, store: Store) -> None:
        ino = _new_file(core)
        bid = core.backing_for(ino, writable=True)
        assert bid is not None and store.staging.has(ino)
        os.pwrite(kernel.held[bid], data, 0)  # what CRIU's writes do through the kernel
        node = core.ns.get(ino)
        assert core.sizes(node)[0] == len(data)  # getattr sees what the kernel wrote
        core.opened(ino)  # a second open, read-only: the same backing file
        assert core.backing_for(ino, writable=False) == bid
        await core.closed(ino, False)
        await core.closed(ino, True)
        assert kernel.held == {}  # the last close let the kernel's backing file go
        assert bytes(await core.filemap(ino).read(0, len(data))) == data
        await core.commit()  # synced, sized, listed
        assert core.ns.get(ino).size == len(data)

    _run(tmp_path / "s", body, kernel)
    store = Store(tmp_path / "s", readonly=True)
    try:
        (ino,) = store.staging.inodes()
        assert store.read_file(ino, len(data)) == data
    finally:
        store.close()


def test_settling_stores_a_staging_file_as_frames_and_removes_it_after_the_commit(tmp_path):
    mkfs(tmp_path / "s")
    data = os.urandom(1 << 20) + b"text " * 400_000 + bytes(1 << 20)
    kernel = Kernel()
    seen: dict[str, object] = {}

    async def body(core: Core, store: Store) -> None:
        ino = _new_file(core)
        os.pwrite(kernel.held[core.backing_for(ino, True)], data, 0)
        await core.closed(ino, True)
        await core.commit()
        path = store.staging.path(ino)
        assert await core.settle() == 1
        assert not store.staging.has(ino) and path.exists()  # unlinked after the commit
        await core.commit()
        assert not path.exists()
        fm = core.filemap(ino)
        assert bytes(await fm.read(0, len(data))) == data
        assert fm.stored < len(data) / 2  # deduplicated zeros, compressed text
        seen["ino"] = ino

    _run(tmp_path / "s", body, kernel)
    res = fsck(tmp_path / "s")
    assert res.clean, res.problems


def test_an_open_during_a_settle_sends_it_back_to_the_start(tmp_path):
    """A settle pauses when the daemon gets busy and resumes; an open of the file meanwhile
    (whose writes the daemon would not see) drops what it had done."""
    mkfs(tmp_path / "s")
    data = os.urandom(9 << 20)
    kernel = Kernel()

    async def body(core: Core, store: Store) -> None:
        ino = _new_file(core)
        fd = kernel.held[core.backing_for(ino, True)]
        os.pwrite(fd, data, 0)
        await core.closed(ino, True)
        fm = core.filemap(ino)
        calls = iter([False, False, True])  # one batch, then busy
        assert await fm.settle(lambda: next(calls, True)) == 0
        assert fm.settling and store.staging.has(ino)  # kept, with its pins, for later
        core.opened(ino)
        os.pwrite(kernel.held[core.backing_for(ino, True)], b"new", 0)
        await core.closed(ino, True)
        assert await fm.settle(lambda: False) == len(data)
        assert bytes(await fm.read(0, 3)) == b"new"

    _run(tmp_path / "s", body, kernel)


def test_a_crash_leaves_each_staging_file_at_its_committed_size(tmp_path):
    mkfs(tmp_path / "s")
    kernel = Kernel()
    data = os.urandom(100_000)

    async def body(core: Core, store: Store) -> None:
        ino = _new_file(core)
        os.pwrite(kernel.held[core.backing_for(ino, True)], data, 0)
        await core.commit()
        os.pwrite(kernel.held[1], os.urandom(50_000), len(data))  # after the commit

    store = Store(tmp_path / "s")
    core = _core(store, kernel)

    async def crash() -> None:
        async with trio.open_nursery() as nursery:
            core.attach(nursery)
            await body(core, store)
            nursery.cancel_scope.cancel()

    trio.run(crash)
    store.close(commit=False)  # the daemon died: nothing after the last commit
    (tmp_path / "s" / "staging" / "999").write_bytes(b"left by a crash")
    store = Store(tmp_path / "s")
    try:
        core = _core(store)  # the next mount recovers
        (ino,) = store.staging.inodes()
        assert store.staging.path(ino).stat().st_size == len(data)
        assert not (tmp_path / "s" / "staging" / "999").exists()
        assert store.read_file(ino, len(data)) == data
    finally:
        store.close()


def test_fsck_finds_a_missing_staging_file_and_repair_makes_its_bytes_read_as_lost(tmp_path):
    mkfs(tmp_path / "s")
    kernel = Kernel()

    async def body(core: Core, store: Store) -> None:
        ino = _new_file(core)
        os.pwrite(kernel.held[core.backing_for(ino, True)], b"x" * 5000, 0)
        await core.closed(ino, True)

    _run(tmp_path / "s", body, kernel)
    for p in (tmp_path / "s" / "staging").iterdir():
        p.unlink()
    res = fsck(tmp_path / "s")
    assert [p.kind for p in res.errors] == ["staging"], res.problems
    res = fsck(tmp_path / "s", repair=True)
    assert [p.kind for p in res.remaining] == ["damaged"]  # what is lost stays said
    assert [p.kind for p in fsck(tmp_path / "s").errors] == ["damaged"]
    store = Store(tmp_path / "s", readonly=True)
    try:
        assert store.staging.inodes() == []
        ((_, run),) = list(store.maps.all_runs())
        assert run.len == 5000 and run.frame < 0  # EIO on read, never zeros
    finally:
        store.close()


def test_without_passthrough_nothing_is_staged_and_the_log_and_stats_say_why(tmp_path, caplog):
    mkfs(tmp_path / "s")
    caplog.set_level(logging.INFO)
    said: list[object] = []

    async def body(core: Core, store: Store) -> None:
        for name in (b"a", b"b"):
            ino = _new_file(core, name)
            assert core.backing_for(ino, True) is None
        said.append(core.figures()["passthrough"])

    _run(tmp_path / "s", body, NoPassthrough("the kernel did not offer it"))
    assert said == ["off: the kernel did not offer it"]
    lines = [r.message for r in caplog.records if "passthrough" in r.message]
    assert lines == ["FUSE passthrough: off (the kernel did not offer it); dumps go through "
                     "the daemon"]


def test_no_passthrough_and_a_file_with_data_are_written_through_the_daemon(tmp_path):
    mkfs(tmp_path / "s")

    async def body(core: Core, store: Store) -> None:
        ino = _new_file(core)
        await core.filemap(ino).write(0, b"already here")
        assert core.backing_for(ino, True) is None  # not empty: through the daemon

    _run(tmp_path / "s", body)

    async def off(core: Core, store: Store) -> None:
        ino = _new_file(core, b"other")
        assert core.backing_for(ino, True) is None

    _run(tmp_path / "s", off, passthrough=False)


def test_a_settle_paused_by_requests_is_finished_by_the_next_one_an_unmount_runs(tmp_path):
    """The unmount's settle must not skip a file whose settle the background settler had
    paused: it once did, and the file stayed staged across the remount."""
    mkfs(tmp_path / "s")
    data = os.urandom(9 << 20)
    kernel = Kernel()

    async def body(core: Core, store: Store) -> None:
        ino = _new_file(core)
        os.pwrite(kernel.held[core.backing_for(ino, True)], data, 0)
        await core.closed(ino, True)
        calls = iter([False, True])
        assert await core.filemap(ino).settle(lambda: next(calls, True)) == 0
        assert await core.settle() == 1  # what shutdown calls
        assert not store.staging.has(ino)
        assert bytes(await core.filemap(ino).read(0, len(data))) == data

    _run(tmp_path / "s", body, kernel)


def test_two_settles_at_once_settle_a_file_once(tmp_path):
    """The daemon's settler and a gc asked for on .lzfs can meet on one file: the second
    must find it settled, not read the staging file the first has closed (EBADF)."""
    mkfs(tmp_path / "s")
    data = os.urandom(9 << 20)
    kernel = Kernel()
    done: list[int] = []

    async def body(core: Core, store: Store) -> None:
        ino = _new_file(core)
        os.pwrite(kernel.held[core.backing_for(ino, True)], data, 0)
        await core.closed(ino, True)
        fm = core.filemap(ino)

        async def settle() -> None:
            done.append(await fm.settle(lambda: False))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(settle)
            nursery.start_soon(settle)
        assert sorted(done) == [0, len(data)]
        assert bytes(await fm.read(0, len(data))) == data

    _run(tmp_path / "s", body, kernel)
