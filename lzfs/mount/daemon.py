"""Running a mount: open the store, mount, serve until unmounted or signalled, then store every
pending byte, commit, and let go of the store lock (which `lzfs umount` waits for).

`lzfs mount` without -f starts this same code as a detached child process and returns once the
child reports the mount is live (or prints why it is not): simpler and safer than fork() under
trio, and the child's log goes to STORE/lzfs.log.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket

import pyfuse3
import trio

from lzfs.core.core import Core
from lzfs.core.options import MountOptions
from lzfs.errors import LzfsError
from lzfs.fuse.fastread import PATCHED as FAST_READS
from lzfs.fuse.fastread import KernelReplies
from lzfs.fuse.operations import LzfsOperations
from lzfs.fuse.passthrough import KernelPassthrough
from lzfs.mount.mounts import READ_AHEAD_KB, set_readahead
from lzfs.mount.spawn import check_mountpoint
from lzfs.objectstore.backend import is_remote
from lzfs.store import codec
from lzfs.store.store import Store, domain_seed

log = logging.getLogger(__name__)


def fuse_options(store: Store, opts: MountOptions) -> set[str]:
    out = set(pyfuse3.default_options)  # default_permissions: the kernel checks modes
    out.add(f"fsname={store.root}")
    out.add("subtype=lzfs")
    if opts.allow_other:
        out.add("allow_other")
    out.update(opts.fuse)
    return out


def _forget_attrs(ino: int) -> None:
    """The kernel forgets an inode's cached attributes (no writeback cache: never blocks)."""
    with contextlib.suppress(OSError):  # an inode the kernel does not know: nothing cached
        pyfuse3.invalidate_inode(ino, attr_only=True)


def _say_how_frames_decode() -> None:
    """Once in the log, when the native decoder is not used (``decoder`` in `lzfs stats`)."""
    if codec.WHY_PYTHON:
        log.warning("frames are decoded in Python (%s): reads cost more CPU", codec.WHY_PYTHON)


def serve(store_path: str, mountpoint: str, opts: MountOptions, ready_fd: int = -1) -> None:
    """Mount and serve in this process until unmounted, or until SIGTERM or SIGINT (which
    unmount cleanly); SIGHUP reopens the log, SIGUSR1 logs what every task waits on. For an
    object store URL, the node's cache (``opts.cache``) is the store."""
    mnt = check_mountpoint(mountpoint, opts.nonempty)
    keep_freed_memory()
    where = mnt.resolve()  # as mountinfo names it; resolved now, not once we serve it
    node = None
    if is_remote(store_path):
        from lzfs.cluster.attach import open_node

        store, node = open_node(store_path, opts.remote())
        store.domain, store.seed = opts.domain, domain_seed(opts.domain)
    else:
        store = Store(store_path, domain=opts.domain)

    def readahead() -> None:
        why = set_readahead(where, READ_AHEAD_KB)
        if why:
            log.info("readahead of %s left as it was: %s", mnt, why)

    try:
        hooks = None
        if node is not None:
            from lzfs.cluster.sync import ClusterSync

            def hooks(core: Core) -> ClusterSync:
                return ClusterSync(core, node, opts.refresh)

        # a node's manifests name the frames it wrote: it never stages (settling would
        # change a snapshot after its publication)
        core = Core(store, pyfuse3.terminate, opts, staging=node is None,
                    invalidate=_forget_attrs, hooks=hooks, on_first_open=readahead,
                    passthrough=KernelPassthrough(),
                    replier=KernelReplies() if opts.fast_reads and FAST_READS else None)
        core.time_the_disk()
        # listen before mounting: a port in use fails the mount, not a live daemon
        url = serve_metrics(opts.metrics, core.metrics.registry) if opts.metrics else None
        try:
            pyfuse3.init(LzfsOperations(core), str(mnt), fuse_options(store, opts))
        except RuntimeError as exc:
            raise LzfsError(f"cannot mount on {mountpoint}: {exc} (is /dev/fuse there, "
                            f"and are you root or in group fuse?)") from None
    except BaseException:
        _close(store, node, commit=True)
        raise
    log.info("mounted %s on %s%s", store.root, mnt,
             f" (dedup domain {opts.domain!r})" if opts.domain else "")
    _say_how_frames_decode()
    if url:
        log.info("Prometheus metrics at http://%s/metrics", url)
    if ready_fd >= 0:
        os.write(ready_fd, b"ok\n")
        os.close(ready_fd)
    sd_notify(f"READY=1\nSTATUS=serving {store.root} on {mnt}")
    signalled = False
    try:
        signalled = trio.run(_main, core)
    except BaseException:
        log.exception("daemon failed; unmounting")
        try:
            pyfuse3.close(unmount=True)
        finally:
            _close(store, node, commit=core.failed is None)
        raise
    sd_notify("STOPPING=1")
    try:
        pyfuse3.close(unmount=signalled or core.failed is not None)
    finally:
        _close(store, node, commit=core.failed is None)
    if core.failed is not None:
        raise LzfsError(f"stopped serving {mnt}: a commit failed ({core.failed}); the store is "
                        f"at its last commit")
    log.info("unmounted %s; store closed", mnt)


def keep_freed_memory() -> None:
    """Have glibc keep the memory the daemon frees instead of giving it back at once. Each
    decoded frame (256 KiB) is a fresh allocation, freed when the cache evicts it; with
    glibc's defaults the heap top is trimmed after each free and grown again for the next
    frame, and every page of it is faulted in and zeroed anew. That made decoding 2.6x
    slower than LZ4 itself (479 against 185 us a frame, measured on the 2-core test machine;
    LZ4 alone 352 against 121 us), and decoding is most of a restore's daemon CPU. Trimming
    only past 256 MiB of free heap, and serving blocks up to 4 MiB from the heap, keeps the
    cache's churn on pages that stay mapped; the frame cache bounds what is held."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20)
        libc.mallopt(_M_MMAP_THRESHOLD, 4 << 20)
    except (OSError, AttributeError):  # not glibc: its own allocator, its own policy
        log.debug("mallopt unavailable: freed memory goes back as the allocator likes")


_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3


def serve_metrics(spec: str, registry) -> str:
    """Start prometheus_client's HTTP server on a thread of its own at ``spec`` ([ADDR:]PORT,
    loopback unless an address is given); returns where it listens."""
    from prometheus_client import start_http_server

    addr, _, port = spec.rpartition(":")
    addr = addr.strip("[]") or "127.0.0.1"
    try:
        start_http_server(int(port), addr, registry=registry)
    except (OSError, ValueError) as exc:
        raise LzfsError(f"--metrics {spec}: cannot listen there: {exc}") from None
    return f"{addr}:{port}"


def sd_notify(state: str) -> None:
    """Tell systemd (Type=notify) how the daemon is doing: READY=1 once it serves the mount,
    STOPPING=1 as it unmounts. Nothing without $NOTIFY_SOCKET (not started by systemd)."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    addr = "\0" + path[1:] if path.startswith("@") else path  # an abstract socket
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(state.encode(), addr)


def reopen_logs() -> None:
    """Close and reopen every log file the daemon writes: after logrotate moved the old one
    away, the daemon writes to a new file of that name (the daemon convention for SIGHUP)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.acquire()
            try:
                handler.close()
                handler.stream = handler._open()
            finally:
                handler.release()


def _close(store: Store, node, commit: bool) -> None:
    """Close the store (``commit`` False: drop what the last commit does not hold), then
    the object-store node, if any."""
    try:
        store.close(commit=commit)
    finally:
        if node is not None:
            node.close()


async def _main(core: Core) -> bool:
    signalled = False
    async with trio.open_nursery() as nursery:
        core.attach(nursery)
        nursery.start_soon(core.committer)
        nursery.start_soon(core.settler)
        nursery.start_soon(core.scrubber)
        nursery.start_soon(core.metrics_refresher, core.opts.metrics_file)

        async def on_signal() -> None:
            nonlocal signalled
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
                async for signum in sigs:
                    if signum == signal.SIGHUP:  # logrotate's postrotate: a new log file
                        reopen_logs()
                        log.info("SIGHUP: log reopened")
                        continue
                    log.info("signal %d (%s): unmounting", signum,
                             signal.Signals(signum).name)
                    signalled = True
                    pyfuse3.terminate()
                    return

        nursery.start_soon(on_signal)
        nursery.start_soon(_dump_tasks_on_sigusr1)
        await pyfuse3.main()
        await core.shutdown()
        nursery.cancel_scope.cancel()
    return signalled


async def _dump_tasks_on_sigusr1() -> None:
    """`kill -USR1 DAEMON` logs every trio task and where it waits: for diagnosing a hang."""
    with trio.open_signal_receiver(signal.SIGUSR1) as sigs:
        async for _ in sigs:
            root = trio.lowlevel.current_root_task()
            lines: list[str] = []
            if root is not None:
                _task_tree(root, 0, lines)
            log.warning("trio tasks:\n%s", "\n".join(lines))


def _task_tree(task: trio.lowlevel.Task, depth: int, lines: list[str]) -> None:
    """One line per task under ``task``, indented by depth: its name and where it waits."""
    where = " <- ".join(f"{f.f_code.co_name}:{lineno}" for f, lineno in task.iter_await_frames())
    lines.append(f"{'  ' * depth}{task.name}: {where}")
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            _task_tree(child, depth + 1, lines)
