"""Where the exerciser's operations go (exerciser.py): a real FUSE mount run by `lzfs mount`
(``MountTarget``), or ``LzfsOperations`` called directly inside trio, without the kernel
(``OpsTarget``). Each runs in one of three modes:

- ``plain``: a local store that compresses and deduplicates every write as it comes;
- ``stage``: a local store that stages every write raw in the daemon (as a dump that outruns
  the encoder does without passthrough) and settles it in the pauses: SETTLE_IDLE after the
  last request, not the daemon's usual second, so that settling meets the operations often;
- ``passthrough``: a local store as mounted by default: a file created or truncated to empty
  is written through FUSE passthrough to a staging file and settled in the pauses (the
  Operations layer has no kernel: it writes and reads the staging file itself, as the kernel
  would, for every open the core gave a backing id);
- ``node``: an object-store node over a ``file://`` bucket, whose fsync of the snapshot
  directory publishes it.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import pyfuse3
import trio

from lzfs.core.core import Core
from lzfs.core.options import MountOptions
from lzfs.fuse.control import CONTROL_DIR
from lzfs.fuse.operations import LzfsOperations
from lzfs.mount.mountinfo import find_mount
from lzfs.report.fsck import fsck
from lzfs.store.layout import mkfs
from lzfs.store.namespace import ROOT_INODE
from lzfs.store.store import Store
from lzfs.testing.exerciser import Mismatch
from lzfs.testing.fastread_model import ModelReplier

MODES = ("plain", "stage", "passthrough", "node")
DIR = "ex"  # the directory (a snapshot, on a node) that holds the file under test
SETTLE_IDLE = 0.3
COMMIT_INTERVAL = 1.0
T = TypeVar("T")


def process_gone(pid: int) -> bool:
    """Whether ``pid`` has exited: no longer there, or a zombie (reaped here if it is a child
    of this process, as a daemon is of a test run that made itself the subreaper of what
    CRIU restores)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except FileNotFoundError:
        return True
    if fields and fields[0] == "Z":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return True
    return False


def lzfs(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([sys.executable, "-m", "lzfs", *args], capture_output=True, text=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"lzfs {' '.join(args)} failed ({res.returncode}): {res.stderr}")
    return res


class MountTarget:
    """The file under test in MNT/ex/ of a real mount; mapped operations go through a shared
    mmap of the file and msync."""

    def __init__(self, work: Path, mode: str) -> None:
        assert mode in MODES, mode
        self.mode = mode
        self.work = work
        self.mnt = work / "mnt"
        self.mnt.mkdir(parents=True)
        if mode == "node":
            bucket = work / "bucket"
            bucket.mkdir()
            self.source = f"file://{bucket}"
            self.store = work / "cache"
            lzfs("mkfs", self.source)
            self.options = ["--cache", str(self.store), "--refresh", "0"]
        else:
            self.store = work / "store"
            self.source = str(self.store)
            mkfs(self.store)
            self.options = {
                "plain": ["--no-stage"],
                "stage": ["--stage-backlog=0", f"--settle-idle={SETTLE_IDLE}",
                          "--no-passthrough"],
                "passthrough": [f"--settle-idle={SETTLE_IDLE}"]}[mode]
        self.options.append(f"--commit-interval={COMMIT_INTERVAL}")
        self.fd = -1
        self.mount()
        (self.mnt / DIR).mkdir()

    @property
    def dir(self) -> Path:
        return self.mnt / DIR

    @property
    def names_with_content(self) -> bool:
        """Whether a crash leaves names and bytes from one moment (run_crash_seed): not for
        files written through passthrough, whose bytes reach their staging files at once."""
        return self.mode != "passthrough"

    # ---- the mount ---------------------------------------------------------------------------

    def mount(self) -> None:
        lzfs("mount", self.source, str(self.mnt), *self.options)
        self._pid = self.daemon_pid()

    def umount(self) -> None:
        if find_mount(self.mnt) is None:
            return
        for _ in range(100):
            if lzfs("umount", str(self.mnt), check=False).returncode == 0:
                return
            time.sleep(0.1)  # a file just closed can keep the mount busy for a moment
        lzfs("umount", str(self.mnt))

    def daemon_pid(self) -> int:
        return int((self.store / "lock").read_text().strip())

    def kill(self) -> None:
        """SIGKILL the daemon, as a crash or the OOM killer would (from a timer thread too)."""
        os.kill(self._pid, signal.SIGKILL)

    def recover(self) -> None:
        """After ``kill``: let the daemon's death be seen, detach the dead mount, mount
        again (which recovers the store)."""
        for _ in range(400):
            if process_gone(self._pid):
                break
            time.sleep(0.025)
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        subprocess.run(["fusermount3", "-uz", str(self.mnt)], capture_output=True, check=False)
        self.mount()

    def fsck_clean(self) -> None:
        self.close()
        self.umount()
        fsck_clean(self.fsck)
        self.mount()

    def fsck(self) -> subprocess.CompletedProcess[str]:
        return lzfs("fsck", str(self.store), check=False)

    def log(self) -> str:
        try:
            return (self.store / "lzfs.log").read_text()
        except OSError:
            return ""

    def close_all(self) -> None:
        self.close()
        self.umount()

    # ---- the operations --------------------------------------------------------------------

    def open(self, name: str, truncate: bool = False) -> None:
        flags = os.O_RDWR | os.O_CREAT | (os.O_TRUNC if truncate else 0)
        self.fd = os.open(self.dir / name, flags, 0o644)

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def write(self, off: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, off)
            view, off = view[n:], off + n

    def mwrite(self, off: int, data: bytes, new_size: int, lo: int, pages: bytes) -> None:
        if new_size > os.fstat(self.fd).st_size:
            os.ftruncate(self.fd, new_size)
        with mmap.mmap(self.fd, off + len(data) - lo, offset=lo) as m:
            m[off - lo:off - lo + len(data)] = data
            m.flush()

    def read(self, off: int, n: int) -> bytes:
        return os.pread(self.fd, n, off)

    def mread(self, off: int, n: int, size: int) -> bytes:
        lo = off - off % mmap.ALLOCATIONGRANULARITY
        end = min(off + n, size)
        with mmap.mmap(self.fd, end - lo, offset=lo, access=mmap.ACCESS_READ) as m:
            return m[off - lo:end - lo]

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)

    def fsync(self) -> None:
        os.fsync(self.fd)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def rename(self, old: str, new: str) -> None:
        os.rename(self.dir / old, self.dir / new)

    def link(self, old: str, new: str) -> None:
        os.link(self.dir / old, self.dir / new)

    def unlink(self, name: str) -> None:
        os.unlink(self.dir / name)

    def listdir(self) -> list[str]:
        return os.listdir(self.dir)

    def remount(self) -> None:
        self.umount()
        fsck_clean(self.fsck)
        self.mount()

    def verify(self) -> list[str]:
        return []  # the runs are the daemon's: fsck looks at them at each remount

    def settle(self) -> None:
        os.setxattr(self.mnt / ".lzfs", "user.lzfs.gc", b"1")
        if self.mode == "node":  # fsync of a snapshot directory publishes it
            fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def pause(self, seconds: float) -> None:
        time.sleep(seconds)

    def read_file(self, name: str) -> bytes:
        return (self.dir / name).read_bytes()


_SIZE_ONLY = SimpleNamespace(update_size=True, update_mode=False, update_uid=False,
                             update_gid=False, update_atime=False, update_mtime=False,
                             update_ctime=False)
MAX_WRITE = 1 << 20  # what the kernel sends at most in one WRITE


class _Ctx:
    uid = os.getuid()
    gid = os.getgid()
    umask = 0o022
    pid = os.getpid()


class _KernelStandIn:
    """What the kernel's passthrough does for the core, without a kernel: ids handed out and
    taken back (OpsTarget then does each passed-through read and write on the file itself)."""

    def __init__(self) -> None:
        self._next = 0
        self.held: set[int] = set()

    def available(self) -> bool:
        return True

    def why_not(self) -> str:
        return ""

    def open(self, fd: int) -> int:
        self._next += 1
        self.held.add(self._next)
        return self._next

    def close(self, backing_id: int) -> None:
        self.held.remove(backing_id)


class OpsTarget:
    """The file under test through ``LzfsOperations``, driven from the exerciser's thread
    into a trio loop on a thread of its own, the way the kernel would call it: writes cut at
    1 MiB, a mapped write as the page-aligned WRITE its writeback sends (after a truncate up
    when it extends the file), a lookup counted and forgotten for each use of a name."""

    def __init__(self, work: Path, mode: str) -> None:
        assert mode in MODES, mode
        self.mode = mode
        self.work = work
        self.fast = ModelReplier()  # the core's fast-read maps, checked at every read
        if mode == "node":
            from lzfs.cluster.bucket import remote_mkfs
            from lzfs.objectstore.backend import open_backend

            self.bucket = work / "bucket"
            self.bucket.mkdir(parents=True)
            remote_mkfs(open_backend(f"file://{self.bucket}"), 16, 64)
        else:
            mkfs(work / "store")
        self._token: trio.lowlevel.TrioToken | None = None
        self._up = threading.Event()
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=trio.run, args=(self._host,),
                                        name="exerciser-trio", daemon=True)
        self._thread.start()
        self._up.wait()
        self.ops: LzfsOperations
        self.fh = -1
        self.ino = 0
        self.kernel_fd = -1  # the staging file, when the open was given a backing id
        self.mount()
        self.dir_ino = self._call(self._mkdir)

    # ---- the trio side ---------------------------------------------------------------------

    async def _host(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        self._up.set()
        await self._stop.wait()

    def _call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        try:
            return trio.from_thread.run(fn, *args, trio_token=self._token)
        except pyfuse3.FUSEError as exc:
            raise OSError(exc.errno, os.strerror(exc.errno)) from None

    async def _mount(self) -> None:
        self.node = None
        if self.mode == "node":
            from lzfs.cluster.attach import open_node
            from lzfs.cluster.options import RemoteOptions
            from lzfs.cluster.sync import ClusterSync

            store, self.node = open_node(f"file://{self.bucket}",
                                         RemoteOptions(cache=str(self.work / "cache"),
                                                       refresh=0))
        else:
            store = Store(self.work / "store")
        self.store = store
        node = self.node

        def hooks(core: Core) -> ClusterSync:
            assert node is not None
            return ClusterSync(core, node, 0)

        self.fast.clear()  # a mount of its own, as pyfuse3.close() leaves it
        core = Core(store, self._failed,
                    MountOptions(commit_interval=COMMIT_INTERVAL, settle_idle=SETTLE_IDLE,
                                 stage_backlog=0 if self.mode == "stage" else None),
                    staging=self.mode in ("stage", "passthrough"),
                    hooks=hooks if node is not None else None,
                    passthrough=_KernelStandIn() if self.mode == "passthrough" else None,
                    replier=self.fast)
        self.ops = LzfsOperations(core)
        self._served = trio.Event()
        self._unmount = trio.Event()
        assert self._token is not None
        started = trio.Event()

        async def serve() -> None:
            async with trio.open_nursery() as nursery:
                core.attach(nursery)
                nursery.start_soon(core.committer)
                nursery.start_soon(core.settler)
                started.set()
                await self._unmount.wait()
                await core.shutdown()
                nursery.cancel_scope.cancel()
            store.close()
            if self.node is not None:
                self.node.close()
            self._served.set()

        trio.lowlevel.spawn_system_task(serve)
        await started.wait()

    def _failed(self) -> None:
        raise RuntimeError("a commit failed")

    async def _umount(self) -> None:
        self._unmount.set()
        await self._served.wait()

    def mount(self) -> None:
        self._call(self._mount)

    def umount(self) -> None:
        self._call(self._umount)

    def close_all(self) -> None:
        self.close()
        self.umount()
        assert self._stop is not None
        trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join()

    async def _mkdir(self) -> int:
        attrs = await self.ops.mkdir(ROOT_INODE, DIR.encode(), 0o755, _Ctx())
        await self.ops.forget([(attrs.st_ino, 1)])
        return int(attrs.st_ino)

    async def _lookup(self, name: str) -> int:
        """A counted lookup of ``name`` (the caller forgets it), through the directory as
        the kernel walks a path (on a node, that imports a snapshot known by name only)."""
        d = await self.ops.lookup(ROOT_INODE, DIR.encode(), _Ctx())
        self.dir_ino = int(d.st_ino)
        await self.ops.forget([(self.dir_ino, 1)])
        return int((await self.ops.lookup(self.dir_ino, name.encode(), _Ctx())).st_ino)

    # ---- the operations --------------------------------------------------------------------

    async def _open(self, name: str, truncate: bool) -> None:
        try:
            ino = await self._lookup(name)
            info = await self.ops.open(ino, os.O_RDWR | (os.O_TRUNC if truncate else 0),
                                       _Ctx())
        except pyfuse3.FUSEError as exc:
            if exc.errno != errno.ENOENT:
                raise
            info, attrs = await self.ops.create(self.dir_ino, name.encode(), 0o644, os.O_RDWR,
                                                _Ctx())
            ino = attrs.st_ino
        self.ino, self.fh = int(ino), int(info.fh)
        if getattr(info, "backing_id", 0):  # the kernel would serve it from the staging file
            self.kernel_fd = os.open(self.store.staging.path(self.ino), os.O_RDWR)

    def open(self, name: str, truncate: bool = False) -> None:
        self._call(self._open, name, truncate)

    async def _close(self) -> None:
        if self.kernel_fd >= 0:
            os.close(self.kernel_fd)
            self.kernel_fd = -1
        fh, self.fh = self.fh, -1
        try:
            await self.ops.flush(fh)
        finally:
            await self.ops.release(fh)
            await self.ops.forget([(self.ino, 1)])

    def close(self) -> None:
        if self.fh >= 0:
            self._call(self._close)

    async def _write(self, off: int, data: bytes) -> None:
        for i in range(0, len(data), MAX_WRITE):
            await self.ops.write(self.fh, off + i, data[i:i + MAX_WRITE])

    def write(self, off: int, data: bytes) -> None:
        if self.kernel_fd >= 0:
            os.pwrite(self.kernel_fd, data, off)
            return
        self._call(self._write, off, data)

    async def _mwrite(self, new_size: int, lo: int, pages: bytes) -> None:
        if new_size > (await self.ops.getattr(self.ino)).st_size:
            await self._truncate(new_size)
        await self._write(lo, pages)

    def mwrite(self, off: int, data: bytes, new_size: int, lo: int, pages: bytes) -> None:
        if self.kernel_fd >= 0:
            if new_size > os.fstat(self.kernel_fd).st_size:
                self.truncate(new_size)
            os.pwrite(self.kernel_fd, data, off)
            return
        self._call(self._mwrite, new_size, lo, pages)

    async def _read(self, off: int, n: int) -> bytes:
        """A READ through the handler; what pyfuse3's fast reads would have answered instead
        from the maps the core registered (the model of them) must be the same bytes."""
        fast = self.fast.answer(self.ops.handles[self.fh].ino, off, n)
        got = bytes(await self.ops.read(self.fh, off, n))
        if fast is not None and fast != got:
            raise AssertionError(f"a fast read of [{off}, +{n}) would answer other bytes than "
                                 f"the handler: a map outlived a change of the file")
        return got

    def read(self, off: int, n: int) -> bytes:
        if self.kernel_fd >= 0:
            return os.pread(self.kernel_fd, n, off)
        return self._call(self._read, off, n)

    def mread(self, off: int, n: int, size: int) -> bytes:
        return self.read(off, min(n, size - off))

    async def _truncate(self, size: int) -> None:
        await self.ops.setattr(self.ino, SimpleNamespace(st_size=size), _SIZE_ONLY, self.fh,
                               _Ctx())

    def truncate(self, size: int) -> None:
        self._call(self._truncate, size)

    def fsync(self) -> None:
        self._call(self.ops.fsync, self.fh, False)

    async def _size(self) -> int:
        return int((await self.ops.getattr(self.ino)).st_size)

    def size(self) -> int:
        return self._call(self._size)

    def rename(self, old: str, new: str) -> None:
        self._call(self.ops.rename, self.dir_ino, old.encode(), self.dir_ino, new.encode(), 0,
                   _Ctx())

    async def _link(self, old: str, new: str) -> None:
        ino = await self._lookup(old)
        await self.ops.link(ino, self.dir_ino, new.encode(), _Ctx())
        await self.ops.forget([(ino, 2)])

    def link(self, old: str, new: str) -> None:
        self._call(self._link, old, new)

    def unlink(self, name: str) -> None:
        self._call(self.ops.unlink, self.dir_ino, name.encode(), _Ctx())

    async def _listdir(self) -> list[str]:
        return [name.decode() for name, _ in self.ops.core.ns.children(self.dir_ino)]

    def listdir(self) -> list[str]:
        return self._call(self._listdir)

    def remount(self) -> None:
        self.umount()
        root = self.work / ("cache" if self.mode == "node" else "store")
        fsck_clean(lambda: fsck(root))
        self.mount()

    async def _verify(self) -> list[str]:
        fm = self.ops.core.files.get(self.ino)
        return [] if fm is None else fm.broken_invariants()

    def verify(self) -> list[str]:
        return self._call(self._verify)

    async def _settle(self) -> None:
        await self.ops.setxattr(CONTROL_DIR, b"user.lzfs.gc", b"1", _Ctx())
        if self.mode == "node":
            await self.ops.fsyncdir(self.dir_ino, False)

    def settle(self) -> None:
        self._call(self._settle)

    def pause(self, seconds: float) -> None:
        self._call(trio.sleep, seconds)

    async def _read_file(self, name: str) -> bytes:
        ino = await self._lookup(name)
        try:
            size = (await self.ops.getattr(ino)).st_size
            info = await self.ops.open(ino, os.O_RDONLY, _Ctx())
            try:
                return bytes(await self.ops.read(info.fh, 0, size + 1))
            finally:
                await self.ops.release(info.fh)
        finally:
            await self.ops.forget([(ino, 1)])

    def read_file(self, name: str) -> bytes:
        return self._call(self._read_file, name)


def fsck_clean(run: Callable[[], Any]) -> None:
    """Run fsck (a CompletedProcess of `lzfs fsck`, or an FsckResult) and raise Mismatch
    with what it found unless the store is clean."""
    res = run()
    if isinstance(res, subprocess.CompletedProcess):
        if res.returncode != 0:
            raise Mismatch(f"fsck after unmount: {res.stdout.strip()} {res.stderr.strip()}")
    elif not res.clean:
        raise Mismatch("fsck after unmount: " + "; ".join(p.message for p in res.errors))


def make_target(layer: str, work: Path, mode: str) -> MountTarget | OpsTarget:
    if layer == "mount":
        return MountTarget(work, mode)
    if layer == "ops":
        return OpsTarget(work, mode)
    raise ValueError(f"unknown layer {layer!r} (mount or ops)")
