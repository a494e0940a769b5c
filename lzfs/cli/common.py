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


def open_readonly(path: str) -> Store:
    """A store opened beside a running daemon. Given a mount point, first ask the daemon to
    settle what dumps staged (setxattr user.lzfs.settle on .lzfs: compressed and
    deduplicated, as it would be a second later when idle) and to commit (fsync on the
    mount's root directory), so figures are current and final."""
    from lzfs.mount.mountinfo import find_mount
    from lzfs.store.store import Store

    m = find_mount(path)
    if m is not None:
        os.setxattr(m.mountpoint / ".lzfs", "user.lzfs.settle", b"1")
        fd = os.open(m.mountpoint, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return Store(m.store, readonly=True)
    return Store(path, readonly=True)


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
    handler: logging.Handler = logging.FileHandler(path) if path else logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)


def fail(msg: str) -> None:
    """One line on stderr, whatever the message holds (a file name may hold a newline)."""
    print("lzfs: " + msg.replace("\n", "\\n").replace("\r", "\\r"), file=sys.stderr)
