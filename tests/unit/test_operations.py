"""The filesystem API called directly, without the kernel: `LzfsOperations` over a real store
in a temporary directory, driven inside trio with a request context like the kernel's. No root,
no FUSE; the one stand-in is `pyfuse3.readdir_reply`, the kernel's side of a listing, which
only a mounted session can answer. A failure here points at fs.py or core.py, not at the
mount machinery (tests/fuse has the same behaviour through a real mount)."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pyfuse3
import pytest
import trio

from lzfs.cluster.attach import open_node
from lzfs.cluster.bucket import remote_mkfs
from lzfs.cluster.options import RemoteOptions
from lzfs.cluster.sync import ClusterSync
from lzfs.core.core import Core
from lzfs.core.options import MountOptions
from lzfs.criu import images as I
from lzfs.fuse.control import CONTROL_DIR
from lzfs.fuse.operations import LzfsOperations
from lzfs.objectstore.backend import open_backend
from lzfs.store.layout import mkfs
from lzfs.store.namespace import ROOT_INODE
from lzfs.store.store import Store
from tests.conftest import criu_image


@dataclass
class Ctx:
    """What pyfuse3 hands each request: who asks, and their umask."""

    uid: int = os.getuid()
    gid: int = os.getgid()
    umask: int = 0o022
    pid: int = os.getpid()


CTX = Ctx()
Body = Callable[[LzfsOperations], Awaitable[None]]


def serve(tmp_path: Path, body: Body, bucket: Path | None = None) -> Store:
    """Run ``body`` against a fresh store's operations, as the daemon does between mount and
    unmount; returns the store, closed after the final commit, reopened for inspection. With
    ``bucket``, the store is a node of the object store in that directory (file://)."""
    node = None
    if bucket is None:
        root = tmp_path / "store"
        mkfs(root)
        store = Store(root)
    else:
        remote_mkfs(open_backend(f"file://{bucket}"), 16, 64)
        store, node = open_node(f"file://{bucket}", RemoteOptions(cache=str(tmp_path / "cache")))
        root = store.root
    stops: list[bool] = []
    core = Core(store, lambda: stops.append(True), MountOptions(commit_interval=3600),
                staging=False,
                hooks=None if node is None else (lambda core: ClusterSync(core, node)))
    ops = LzfsOperations(core)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            core.attach(nursery)
            await body(ops)
            await core.shutdown()
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        store.close()
        if node is not None:
            node.close()
    assert not stops, "a commit failed"
    return Store(root, readonly=True)


async def write_file(ops: LzfsOperations, parent: int, name: bytes, data: bytes) -> int:
    info, attrs = await ops.create(parent, name, 0o644, os.O_WRONLY, CTX)
    assert await ops.write(info.fh, 0, data) == len(data)
    await ops.release(info.fh)
    return attrs.st_ino


async def read_file(ops: LzfsOperations, ino: int) -> bytes:
    info = await ops.open(ino, os.O_RDONLY, CTX)
    try:
        return bytes(await ops.read(info.fh, 0, 1 << 30))
    finally:
        await ops.release(info.fh)


async def fails(errnum: int, call: Awaitable[object]) -> None:
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await call
    assert exc.value.errno == errnum, os.strerror(exc.value.errno)


def inode_rows(store: Store, ino: int) -> tuple[int, int]:
    """(inode rows, extent rows) of ``ino``."""
    return (store.db.execute("SELECT COUNT(*) FROM inodes WHERE id=?", (ino,)).fetchone()[0],
            store.db.execute("SELECT COUNT(*) FROM extents WHERE ino=?", (ino,)).fetchone()[0])


DATA = os.urandom(300 << 10) + bytes(100 << 10) + b"text " * 20000


def test_an_unlinked_file_goes_with_its_blocks_at_the_last_forget(tmp_path: Path) -> None:
    rows: dict[str, tuple[int, int]] = {}
    inos: list[int] = []

    async def body(ops: LzfsOperations) -> None:
        ino = await write_file(ops, ROOT_INODE, b"pages-1.img", DATA)
        assert await read_file(ops, ino) == DATA
        await ops.core.commit()
        inos.append(ino)
        rows["before"] = inode_rows(ops.core.store, ino)
        await ops.unlink(ROOT_INODE, b"pages-1.img", CTX)
        rows["nameless, known"] = inode_rows(ops.core.store, ino)  # the kernel holds it
        await ops.forget([(ino, 1)])
        rows["forgotten"] = inode_rows(ops.core.store, ino)
        assert ops.core.store.garbage  # the committer knows gc has work (rm gives space back)

    store = serve(tmp_path, body)
    try:
        assert rows["before"][0] == 1 and rows["before"][1] > 0
        assert rows["nameless, known"] == rows["before"]
        assert rows["forgotten"] == (0, 0)
        assert inode_rows(store, inos[0]) == (0, 0)
        assert store.stats().garbage_frames > 0  # its frames wait for gc
    finally:
        store.close()


def test_a_gc_returns_only_once_the_space_is_given_back_even_when_another_collected_it(
        tmp_path: Path) -> None:
    """`lzfs gc` while the committer's gc runs: the second finds the frames already collected,
    and must still not return before their space is back (a benchmark read the disk use
    right after `lzfs gc` and saw the raw frames a dump staged still there)."""
    after: list[tuple[str, int]] = []

    def pack_blocks(store: Store) -> int:
        return sum(p.stat().st_blocks for p in (store.root / "packs").iterdir())

    async def body(ops: LzfsOperations) -> None:
        core = ops.core
        ino = await write_file(ops, ROOT_INODE, b"pages-1.img", os.urandom(8 << 20))
        await core.commit()
        await ops.unlink(ROOT_INODE, b"pages-1.img", CTX)
        await ops.forget([(ino, 1)])
        after.append(("written", pack_blocks(core.store)))

        async def gc(name: str) -> None:
            await core.gc()
            after.append((name, pack_blocks(core.store)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(gc, "first")
            nursery.start_soon(gc, "second")

    serve(tmp_path, body).close()
    written = after[0][1]
    assert sorted(n for n, _ in after[1:]) == ["first", "second"]  # in either order
    assert all(blocks < written // 4 for _, blocks in after[1:]), after


def test_a_file_unlinked_while_open_stays_readable_until_released(tmp_path: Path) -> None:
    seen: dict[str, object] = {}

    async def body(ops: LzfsOperations) -> None:
        ino = await write_file(ops, ROOT_INODE, b"log", DATA)
        info = await ops.open(ino, os.O_RDONLY, CTX)
        await ops.unlink(ROOT_INODE, b"log", CTX)
        await ops.forget([(ino, 1)])
        seen["open"] = inode_rows(ops.core.store, ino)[0]
        seen["read"] = bytes(await ops.read(info.fh, 0, len(DATA)))
        await ops.release(info.fh)
        seen["released"] = inode_rows(ops.core.store, ino)

    serve(tmp_path, body).close()
    assert seen["open"] == 1
    assert seen["read"] == DATA
    assert seen["released"] == (0, 0)


def test_failures_reach_the_kernel_as_their_errnos(tmp_path: Path) -> None:
    async def body(ops: LzfsOperations) -> None:
        d = (await ops.mkdir(ROOT_INODE, b"snap", 0o755, CTX)).st_ino
        await write_file(ops, d, b"pages-1.img", b"x" * 4096)
        await fails(errno.ENOENT, ops.lookup(ROOT_INODE, b"missing", CTX))
        await fails(errno.EEXIST, ops.mkdir(ROOT_INODE, b"snap", 0o755, CTX))
        await fails(errno.ENOTEMPTY, ops.rmdir(ROOT_INODE, b"snap", CTX))
        await fails(errno.EISDIR, ops.open(d, os.O_RDONLY, CTX))
        await fails(errno.EISDIR, ops.unlink(ROOT_INODE, b"snap", CTX))
        await fails(errno.ENOTDIR, ops.opendir((await ops.lookup(d, b"pages-1.img")).st_ino,
                                               CTX))
        await fails(errno.EBADF, ops.read(12345, 0, 10))
        # the .lzfs tree takes nothing and gives nothing up
        await fails(errno.EROFS, ops.create(CONTROL_DIR, b"new", 0o644, os.O_WRONLY, CTX))
        await fails(errno.EROFS, ops.unlink(CONTROL_DIR, b"stats", CTX))
        await fails(errno.EROFS, ops.open(CONTROL_DIR + 1, os.O_WRONLY, CTX))
        await fails(errno.EEXIST, ops.mkdir(ROOT_INODE, b".lzfs", 0o755, CTX))
        await fails(errno.EPERM, ops.rmdir(ROOT_INODE, b".lzfs", CTX))
        await fails(errno.EPERM, ops.mknod(d, b"dev", stat.S_IFCHR | 0o600, 0, CTX))
        await fails(pyfuse3.ENOATTR, ops.getxattr(d, b"user.lzfs.logical", CTX))

    serve(tmp_path, body).close()


def test_the_control_tree_reports_what_was_written(tmp_path: Path) -> None:
    seen: dict[str, bytes] = {}

    async def body(ops: LzfsOperations) -> None:
        d = (await ops.mkdir(ROOT_INODE, b"snap", 0o755, CTX)).st_ino
        await write_file(ops, d, b"pages-1.img", DATA)
        await ops.core.commit()
        top = await ops.lookup(ROOT_INODE, b".lzfs", CTX)
        assert top.st_ino == CONTROL_DIR and stat.S_ISDIR(top.st_mode)
        for name in (b"stats", b"stats.json", b"report.json"):
            attrs = await ops.lookup(CONTROL_DIR, name, CTX)
            info = await ops.open(attrs.st_ino, os.O_RDONLY, CTX)
            assert info.direct_io  # its size changes between stat and read
            seen[name.decode()] = await ops.read(info.fh, 0, 1 << 20)
            await ops.release(info.fh)

    serve(tmp_path, body).close()
    figures = json.loads(seen["stats.json"])
    assert figures["logical"] == len(DATA) and figures["files"] == 1
    assert figures["requests"] == {"write<=524288": 1}  # one 500 KiB request
    text = seen["stats"].decode()
    assert "after compression" in text and "write <=512.0 KiB: 1" in text
    report = json.loads(seen["report.json"])
    assert [g["name"] for g in report["groups"]] == ["snap"]


def listing(ops: LzfsOperations, fh: int, start: int = 0, stop_after: int | None = None
            ) -> Awaitable[list[tuple[bytes, int, int]]]:
    """readdir as the kernel sees it: (name, inode, next offset), from offset ``start``;
    the kernel's buffer is full after ``stop_after`` entries."""
    got: list[tuple[bytes, int, int]] = []

    def reply(token: pyfuse3.ReaddirToken, name: bytes, attr: pyfuse3.EntryAttributes,
              next_id: int) -> bool:
        if stop_after is not None and len(got) == stop_after:
            return False
        got.append((name, attr.st_ino, next_id))
        return True

    async def run() -> list[tuple[bytes, int, int]]:
        real = pyfuse3.readdir_reply
        pyfuse3.readdir_reply = reply
        try:
            await ops.readdir(fh, start, None)
        finally:
            pyfuse3.readdir_reply = real
        return got

    return run()


def test_listings_start_with_dot_and_dotdot_and_resume_at_any_offset(tmp_path: Path) -> None:
    async def body(ops: LzfsOperations) -> None:
        d = (await ops.mkdir(ROOT_INODE, b"snap", 0o755, CTX)).st_ino
        files = [await write_file(ops, d, f"f{i}".encode(), b"x") for i in range(5)]
        full = await listing(ops, d)
        assert [(n, i) for n, i, _ in full] == [(b".", d), (b"..", ROOT_INODE)] + [
            (f"f{i}".encode(), ino) for i, ino in enumerate(files)]
        assert len({off for *_, off in full}) == len(full)
        for k, (*_, off) in enumerate(full):  # resuming after any entry: the rest, once
            assert await listing(ops, d, off) == full[k + 1:]
        part = await listing(ops, d, 0, stop_after=3)
        assert part == full[:3]
        # an entry removed between two calls does not shift the offsets of the others
        await ops.unlink(d, b"f0", CTX)
        await ops.unlink(d, b"f3", CTX)
        rest = await listing(ops, d, part[-1][2])
        assert [n for n, *_ in rest] == [b"f1", b"f2", b"f4"]
        # the kernel counts no lookup of `.` or `..`; each name it was given, once per listing
        assert ops.lookups.get(ROOT_INODE, 0) == 0
        assert ops.lookups[d] == 1  # from mkdir only
        root = await listing(ops, ROOT_INODE)
        assert [(n, i) for n, i, _ in root] == [(b".", ROOT_INODE), (b"..", ROOT_INODE),
                                                (b"snap", d)]
        control = await listing(ops, CONTROL_DIR)
        assert [(n, i) for n, i, _ in control[:2]] == [(b".", CONTROL_DIR),
                                                       (b"..", ROOT_INODE)]
        assert [n for n, *_ in control[2:]] == [b"stats", b"stats.json", b"report",
                                                b"report.json"]
        assert await listing(ops, CONTROL_DIR, control[3][2]) == control[4:]

    serve(tmp_path, body).close()


def _forked_images() -> dict[bytes, bytes]:
    """A parent (pid 10) with 64 MiB of private anonymous memory, and a forked child (pid 11)
    that still maps it and stored it again, with 16 MiB of its own (as tests/unit/test_cow)."""
    MiB, priv, anon = 1 << 20, I.VMA_AREA_REGULAR | I.VMA_ANON_PRIVATE, 0x20 | 0x02

    def mm(vmas: list[tuple[int, int]]) -> bytes:
        return criu_image(I.MM_MAGIC, [("mm_entry", {"exe_file_id": 7, "vmas": [
            {"start": s, "end": e, "status": priv, "flags": anon} for s, e in vmas]})])

    def pagemap(pages_id: int, runs: list[tuple[int, int]]) -> bytes:
        return criu_image(I.PAGEMAP_MAGIC, [("pagemap_head", {"pages_id": pages_id})] + [
            ("pagemap_entry", {"vaddr": v, "nr_pages": n, "flags": I.PE_PRESENT})
            for v, n in runs])

    shared, own = (0x10000000, 0x10000000 + 64 * MiB), (0x40000000, 0x40000000 + 16 * MiB)
    return {
        b"pstree.img": criu_image(I.PSTREE_MAGIC, [("pstree_entry", {"pid": 10, "ppid": 1}),
                                                   ("pstree_entry", {"pid": 11, "ppid": 10})]),
        b"pagemap-10.img": pagemap(1, [(shared[0], 64 * MiB // I.PAGE)]),
        b"pagemap-11.img": pagemap(2, [(shared[0], 64 * MiB // I.PAGE),
                                       (own[0], 16 * MiB // I.PAGE)]),
        b"mm-10.img": mm([shared]),
        b"mm-11.img": mm([shared, own]),
        b"pages-1.img": b"\1" * I.PAGE,
        b"pages-2.img": b"\2" * I.PAGE,
    }


def test_only_a_forked_workers_pages_are_opened_through_the_page_cache(tmp_path: Path) -> None:
    # the opener is CRIU (lzfs/criu/opener.py tells by its command line): a process named so
    criu = subprocess.Popen(["bash", "-c", "exec -a criu sleep 60"])
    while not Path(f"/proc/{criu.pid}/cmdline").read_bytes().startswith(b"criu\0"):
        time.sleep(0.01)  # until bash has exec'd
    as_criu = Ctx(pid=criu.pid)

    async def body(ops: LzfsOperations) -> None:
        d = (await ops.mkdir(ROOT_INODE, b"snap", 0o755, CTX)).st_ino
        inos = {name: await write_file(ops, d, name, data)
                for name, data in _forked_images().items()}
        held = set(ops.core.files)

        async def direct(name: bytes, flags: int = os.O_RDONLY, ctx: Ctx = as_criu) -> bool:
            info = await ops.open(inos[name], flags, ctx)
            await ops.release(info.fh)
            return bool(info.direct_io)

        assert not await direct(b"pages-2.img")  # the child's: read page by page by CRIU
        assert await direct(b"pages-1.img")      # the parent's: large direct reads
        assert await direct(b"pstree.img")
        assert not await direct(b"pages-1.img", os.O_RDWR)  # a writer: never direct
        assert not await direct(b"pages-1.img", ctx=CTX)  # not CRIU: the page cache, kept
        assert set(ops.core.files) == held  # the images read to decide were let go

    try:
        serve(tmp_path, body).close()
    finally:
        criu.kill()
        criu.wait()


def test_a_truncate_through_setattr_changes_size_and_content(tmp_path: Path) -> None:
    async def body(ops: LzfsOperations) -> None:
        ino = await write_file(ops, ROOT_INODE, b"f", DATA)
        fields = SimpleNamespace(update_size=True, update_mode=False, update_uid=False,
                                 update_gid=False, update_atime=False, update_mtime=False,
                                 update_ctime=False)
        attrs = await ops.setattr(ino, SimpleNamespace(st_size=1000), fields, None, CTX)
        assert attrs.st_size == 1000
        assert await read_file(ops, ino) == DATA[:1000]

    serve(tmp_path, body).close()


def test_a_nodes_snapshot_is_published_at_fsyncdir_and_its_xattr_names_the_manifest(
        tmp_path: Path) -> None:
    """The cluster hooks, called by the same handlers: fsyncdir publishes a top-level
    directory, getxattr answers its manifest key, .lzfs/stats shows the object store."""
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    keys: list[bytes] = []
    stats: list[bytes] = []

    async def body(ops: LzfsOperations) -> None:
        d = (await ops.mkdir(ROOT_INODE, b"snap", 0o755, CTX)).st_ino
        await write_file(ops, d, b"pages-1.img", DATA)
        await fails(pyfuse3.ENOATTR, ops.getxattr(d, b"user.lzfs.manifest", CTX))
        await ops.fsyncdir(d, False)
        keys.append(await ops.getxattr(d, b"user.lzfs.manifest", CTX))
        await fails(pyfuse3.ENOATTR, ops.getxattr(ROOT_INODE, b"user.lzfs.manifest", CTX))
        info = await ops.open(CONTROL_DIR + 1, os.O_RDONLY, CTX)
        stats.append(await ops.read(info.fh, 0, 1 << 20))
        await ops.release(info.fh)

    serve(tmp_path, body, bucket).close()
    assert keys[0].startswith(b"snapshots/snap/")
    assert (bucket / keys[0].decode()).exists()
    assert list((bucket / "packs").glob("*.pack"))
    assert f"file://{bucket}".encode() in stats[0] and b"1 PUTs" in stats[0]
