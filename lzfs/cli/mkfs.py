"""`lzfs mkfs`: an empty store, in a directory or an object-store prefix."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lzfs.cli.common import command, remote_args, remote_options
from lzfs.errors import LzfsError


def register(sub: Any) -> None:
    s = command(sub, "mkfs", "create an empty store (a directory, or s3://BUCKET/PREFIX)", """\
Create an empty lzfs store: a new (or empty) directory, or a prefix in an object-store
bucket. Data is deduplicated page by page (4 KiB) and compressed in frames; nothing about
that is chosen here.""", """\
  lzfs mkfs /var/lib/lzfs/store
  lzfs mkfs s3://ckpt/models --endpoint http://s3.internal:8333 --create-bucket""")
    s.add_argument("store", help="the directory to create, or s3://BUCKET/PREFIX")
    remote_args(s)
    s.add_argument("--create-bucket", action="store_true",
                   help="object store: create the bucket if it does not exist")
    s.add_argument("--grace", type=float, default=24 * 3600.0, metavar="SECONDS",
                   help="object store: how long gc keeps a pack no manifest names, so that "
                        "nodes still writing are safe (default 86400)")
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from lzfs.store.db import SCHEMA_VERSION
    from lzfs.store.layout import mkfs

    if remote_options(args, args.store) is not None:
        from lzfs.cluster.bucket import remote_mkfs
        from lzfs.objectstore.backend import open_backend

        backend = open_backend(args.store, args.endpoint, args.profile)
        if args.create_bucket and hasattr(backend, "create_bucket"):
            backend.create_bucket()
        rcfg = remote_mkfs(backend, grace=args.grace)
        print(f"created lzfs store {backend.url} (bucket format {rcfg.version}, pages "
              f"deduplicated one by one; gc grace {rcfg.gc_grace_s:.0f} s)")
        return

    from lzfs.mount.mountinfo import lzfs_mounts

    target = Path(args.store).absolute()
    for m in lzfs_mounts():
        if target == m.mountpoint or m.mountpoint in target.parents:
            raise LzfsError(f"{args.store} is inside the lzfs mount {m.mountpoint}: a store "
                            f"must be a directory of a local file system, not of a mount")
    cfg = mkfs(args.store)
    print(f"created lzfs store {args.store} (format {cfg.version}, metadata schema "
          f"{SCHEMA_VERSION}: 4 KiB pages deduplicated one by one, compressed in frames)")
