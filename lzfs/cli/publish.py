"""`lzfs publish` and `lzfs rm`: a node's snapshot up to the object store now, and published
snapshots out of it."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from lzfs.cli.common import command, remote_args
from lzfs.errors import LzfsError


def register(sub: Any) -> None:
    s = command(sub, "publish", "publish a snapshot directory to the object store now", """\
Upload a snapshot's packs and then its manifest, so other nodes see it. Unmounting publishes
too, and so does 'sync MNT/NAME'. Prints the manifest's key.""", """\
  lzfs publish /mnt/ckpt/server-1""")
    s.add_argument("snapshot", metavar="MNT/NAME",
                   help="a top-level directory of an object-store mount")
    s.set_defaults(func=run_publish)

    s = command(sub, "rm", "delete published snapshots from an object store", """\
Delete published snapshots from an object store: a tombstone per name hides it from every
node at its next look (a node that imported it keeps it until its next mount), and the first
gc after the grace period (lzfs gc) deletes its manifests and the packs only they used.
Publishing the name again later makes it a new snapshot.""", """\
  lzfs rm s3://ckpt/models server-1 --endpoint http://s3.internal:8333""")
    s.add_argument("store", metavar="URL", help="s3://BUCKET/PREFIX (or file:///DIR)")
    s.add_argument("names", metavar="NAME", nargs="+", help="published snapshot names")
    remote_args(s)
    s.set_defaults(func=run_rm)


def run_publish(args: argparse.Namespace) -> None:
    from lzfs.cli.transfer import inside_mount

    path = os.path.abspath(args.snapshot)
    if not os.path.isdir(path) or not inside_mount(Path(path)):
        raise LzfsError(f"{args.snapshot} is not a snapshot directory inside an lzfs mount")
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)  # the daemon publishes on fsyncdir of a top-level directory
    except OSError as exc:
        try:
            why = os.getxattr(path, "user.lzfs.error").decode()
        except OSError:
            why = exc.strerror or str(exc)
        raise LzfsError(f"publishing {args.snapshot} failed: {why}") from None
    finally:
        os.close(fd)
    try:
        key = os.getxattr(path, "user.lzfs.manifest").decode()
    except OSError:
        raise LzfsError(f"{args.snapshot} is not on an object-store mount (nothing to "
                        f"publish to)") from None
    print(f"published {args.snapshot} as {key}")


def run_rm(args: argparse.Namespace) -> None:
    from lzfs.cluster.remove import remove
    from lzfs.objectstore.backend import is_remote, open_backend

    if not is_remote(args.store):
        raise LzfsError(f"{args.store} is not an object store URL: on a mount, rm -r "
                        f"MNT/NAME removes a snapshot")
    backend = open_backend(args.store, args.endpoint, args.profile)
    for name in args.names:
        key, n = remove(backend, os.fsencode(name))
        print(f"deleted {name} ({n} manifest{'s' if n != 1 else ''}, tombstone {key}); its "
              f"packs go with the first gc after the grace period")
