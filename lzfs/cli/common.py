"""What several commands share: the object-store flags, opening a store beside its daemon,
what a node waits to publish, one-line errors, and the shape of a subcommand's help."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lzfs.cluster.options import RemoteOptions
    from lzfs.mount.mountinfo import Mount
    from lzfs.store.store import Store

RAW = argparse.RawDescriptionHelpFormatter


def command(sub: Any, name: str, help: str, description: str, examples: str
            ) -> argparse.ArgumentParser:
    """A subcommand whose --help shows ``description`` and ``examples`` as written."""
    return sub.add_parser(name, help=help, description=description,
                          epilog="examples:\n" + examples, formatter_class=RAW)


def remote_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--endpoint", metavar="URL",
                   help="object store: S3 endpoint URL (or AWS_ENDPOINT_URL)")
    s.add_argument("--profile", metavar="NAME",
                   help="object store: AWS profile for credentials")


def remote_options(args: argparse.Namespace, spec: str) -> RemoteOptions | None:
    """RemoteOptions from the object-store flags, when ``spec`` is an object store URL."""
    from lzfs.cluster.options import RemoteOptions
    from lzfs.objectstore.backend import is_remote

    if not is_remote(spec):
        return None
    return RemoteOptions(endpoint=args.endpoint, profile=args.profile)


def locate(path: str) -> tuple[Path, Mount | None]:
    """The store a command means by ``path`` (a store directory or its mount point), and the
    live mount of that store, if any. A path inside a mount is neither: said in one line,
    never answered with "create one with lzfs mkfs" as a directory that is not a store is."""
    from lzfs.errors import LzfsError
    from lzfs.mount.mountinfo import lzfs_mounts

    p = Path(path).resolve()
    for m in lzfs_mounts():
        if p in (m.mountpoint, m.store):
            return m.store, m
        if m.mountpoint in p.parents:
            raise LzfsError(f"{path} is inside the lzfs mount {m.mountpoint}: give the mount "
                            f"point, or the store it mounts ({m.store})")
    return p, None


def store_of(path: Path) -> tuple[Path, list[bytes]] | None:
    """(store root, names below it) when ``path`` names a directory inside an lzfs store's
    namespace (STORE/NAME/...), rather than a directory on disk."""
    p = path.absolute()
    for root in [p, *p.parents]:
        if (root / "lzfs.json").is_file() and root != p:
            return root, [os.fsencode(part) for part in p.relative_to(root).parts]
    return None


def locate_snapshot(path: str) -> tuple[Path, list[bytes], Mount | None]:
    """What ``path`` names for commands that take one snapshot or all: a mount point or a
    directory in a mount, a store or STORE/NAME in one (unmounted). Returns (store root,
    the names below the root, the live mount or None)."""
    from lzfs.errors import LzfsError
    from lzfs.mount.mountinfo import lzfs_mounts

    p = Path(path).resolve()
    for m in lzfs_mounts():
        if p == m.mountpoint or m.mountpoint in p.parents:
            return m.store, [os.fsencode(x) for x in p.relative_to(m.mountpoint).parts], m
    if (p / "lzfs.json").is_file():
        return p, [], None
    found = store_of(p)
    if found is None:
        raise LzfsError(f"{path} is neither in an lzfs mount nor in a store")
    return found[0], found[1], None


def open_readonly(path: str) -> Store:
    """A store opened beside a running daemon. Given a mount point, or a store that is
    mounted, first ask the daemon to settle what dumps staged (setxattr user.lzfs.settle on
    .lzfs: compressed and deduplicated, as it would be a second later when idle) and to
    commit (fsync on the mount's root directory), so figures are current and final, never
    those of the last commit."""
    from lzfs.store.store import Store

    store, m = locate(path)
    if m is not None:
        os.setxattr(m.mountpoint / ".lzfs", "user.lzfs.settle", b"1")
        fd = os.open(m.mountpoint, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return Store(m.store, readonly=True)
    return Store(store, readonly=True)


def pack_bytes_of(path: str) -> int:
    """What the packs of a store (or the store a mount serves) occupy, committed first."""
    store = open_readonly(path)
    try:
        return store.stats().pack_bytes
    finally:
        store.close()


def unpublished(cache: str) -> dict[str, str]:
    """What a node's last unmount could not publish (lzfs/cluster/exchange.py)."""
    try:
        return dict(json.loads((Path(cache) / "unpublished.json").read_text()))
    except (OSError, ValueError):
        return {}


def awaiting(path: str) -> dict[str, str] | None:
    """Snapshots of a node cache (or its mount) that wait to be published; None: no node."""
    from lzfs.cluster.attach import attach_readonly

    store = open_readonly(path)
    try:
        node = attach_readonly(store)
        if node is None:
            return None
        try:
            return node.exchange.awaiting()
        finally:
            node.close()
    finally:
        store.close()


def print_awaiting(path: str) -> None:
    from lzfs.errors import LzfsError

    try:
        left = awaiting(path)
    except LzfsError:
        return
    if left:
        print(f"awaiting publication ({len(left)}): " + ", ".join(
            f"{n} ({why})" for n, why in left.items()))


def setup_logging(path: str | None, debug: bool) -> None:
    """Log to ``path``, or to stderr: with timestamps for a terminal or a file, as journal
    lines (``<N>`` priority prefixes, no timestamps: the journal adds its own) when stderr
    is the stream systemd connected to the journal."""
    handler: logging.Handler = logging.FileHandler(path) if path else logging.StreamHandler()
    if path is None and to_journal(sys.stderr):
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)


def to_journal(stream: Any) -> bool:
    """Whether ``stream`` is the journal: systemd sets $JOURNAL_STREAM to the device and
    inode of the stream it connected, so a stream redirected elsewhere is not taken for it."""
    want = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return want == f"{st.st_dev}:{st.st_ino}"


# syslog priorities of the logging levels, as the journal reads them
PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
            logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    """Each line prefixed with its syslog priority, as systemd's stream reader parses it
    (a traceback's lines too, or they would land as notices)."""

    def format(self, record: logging.LogRecord) -> str:
        prio = PRIORITY.get(record.levelno, 5)
        return "\n".join(f"<{prio}>{line}" for line in super().format(record).splitlines())


def fail(msg: str) -> None:
    """One line on stderr, whatever the message holds (a file name may hold a newline)."""
    print("lzfs: " + msg.replace("\n", "\\n").replace("\r", "\\r"), file=sys.stderr)
