"""Starting a mount's daemon from `lzfs mount`: check what can be checked here, start `lzfs
mount -f` detached, and wait until it has mounted (or say why not).

Kept apart from daemon.py so that `lzfs mount` itself imports neither pyfuse3, trio nor the
store for an object store (half a second of a fresh node's mount); a local store's checks
import the store when they run.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

from lzfs.core.options import MountOptions
from lzfs.errors import LzfsError

DAEMON_LOG = "lzfs.log"  # the daemon's log in the store (or node cache): store.layout.LOG


def check_mountpoint(mountpoint: str, nonempty: bool = False) -> Path:
    """An existing directory that nothing is mounted on yet, and that holds nothing (a mount
    would hide what it holds until unmounted) unless ``nonempty``."""
    mnt = Path(mountpoint)
    try:
        is_dir = stat.S_ISDIR(os.stat(mnt).st_mode)
    except OSError as exc:
        raise LzfsError(f"mount point {mountpoint}: {exc.strerror}") from None
    if not is_dir:
        raise LzfsError(f"mount point {mountpoint} is not a directory")
    if os.path.ismount(mnt):
        raise LzfsError(f"{mountpoint} is already a mount point; unmount it first")
    if not nonempty:
        with os.scandir(mnt) as entries:
            if next(entries, None) is not None:
                raise LzfsError(f"mount point {mountpoint} is not empty: a mount would hide "
                                f"what it holds (use another directory, or -o nonempty)")
    return mnt



def spawn(store_path: str, mountpoint: str, opts: MountOptions, timeout: float = 60.0
          ) -> None:
    """Start `lzfs mount -f` detached with ``opts`` and wait until it has mounted (or failed).
    What can be checked here is, before anything (the log) is written into the store. A
    remote store's URL is passed on as it is; its log goes to the node cache."""
    from lzfs.objectstore.backend import is_remote

    check_mountpoint(mountpoint, opts.nonempty)
    store_root: str | Path
    if is_remote(store_path):
        store_root = store_path
    else:
        from lzfs.store.layout import StoreLock, read_config
        from lzfs.store.store import Store

        read_config(store_path)
        store_root = Path(store_path).resolve()
        if StoreLock(store_root).held():
            raise StoreLock(store_root).busy()
        Store(store_root, readonly=True, upgradable=True).close()  # a damaged meta.db fails
    log_dir = opts.cache if is_remote(store_path) else None
    made = False
    if log_dir is not None:
        made = check_cache_dir(Path(log_dir))
        Path(log_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        _start(store_root, mountpoint, opts, log_dir, timeout)
    except BaseException:
        if made:  # what this mount created goes with it (the error was said on the console)
            shutil.rmtree(log_dir or "", ignore_errors=True)
        raise


def check_cache_dir(cache: Path) -> bool:
    """A node's cache directory must be new, empty, or a node cache already: anything else
    is refused before a log is written into it (a store's own log among them). Returns
    whether it does not exist yet (the caller makes it, and removes it if the mount fails)."""
    from lzfs.cluster.options import NODE_FILE
    from lzfs.store.layout import CONFIG

    if not cache.exists():
        return True
    if not cache.is_dir():
        raise LzfsError(f"--cache {cache} is not a directory")
    if (cache / CONFIG).exists() and not (cache / NODE_FILE).exists():
        raise LzfsError(f"--cache {cache} is an lzfs store, not a node cache: give --cache an "
                        f"empty or new directory")
    if not (cache / NODE_FILE).exists() and any(cache.iterdir()):
        raise LzfsError(f"--cache {cache} is not empty and not a node cache: give --cache an "
                        f"empty or new directory")
    return False


def _start(store_root: str | Path, mountpoint: str, opts: MountOptions, log_dir: str | None,
           timeout: float) -> None:
    log_path = Path(opts.log) if opts.log else Path(log_dir or store_root) / DAEMON_LOG
    r, w = os.pipe()
    with open(os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab",
              buffering=0) as logf:
        os.fchmod(logf.fileno(), 0o600)
        cmd = [sys.executable, "-m", "lzfs", "mount", "-f", "--ready-fd", str(w),
               str(store_root), str(Path(mountpoint).resolve()),
               *opts.replace(log=str(log_path)).argv()]
        child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                 pass_fds=(w,), start_new_session=True)
    os.close(w)
    deadline = time.monotonic() + timeout
    got = b""
    with os.fdopen(r, "rb") as ready:
        got = ready.read(3)  # "ok\n" once mounted; EOF if the child died first
    if got == b"ok\n":
        return
    try:
        code = child.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        child.kill()
        code = -9
    tail = _last_error(log_path)
    raise LzfsError(f"mount failed (daemon exit {code}): {tail}")


def _last_error(log_path: Path) -> str:
    try:
        lines = log_path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    for line in reversed(lines):
        if "lzfs:" in line or "Error" in line or "error" in line:
            return line.strip()
    return lines[-1].strip() if lines else "no log"
