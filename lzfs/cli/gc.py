"""`lzfs gc`: give back the space of frames no file uses (a mount, a store, a bucket)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from lzfs.cli.common import command, open_readonly, remote_args, remote_options
from lzfs.units import human


def register(sub: Any) -> None:
    s = command(sub, "gc", "give back the space of blocks no file uses", """\
Remove blocks no file uses any more and give their space back. The daemon also does this by
itself; this is for now. On a mount point it asks the daemon; on an unmounted store it works
on the store; on an object store it deletes pack objects no manifest names, once they are
older than the bucket's grace period (safe while other nodes work).""", """\
  lzfs gc /mnt/ckpt
  lzfs gc s3://ckpt/models --endpoint http://s3.internal:8333""")
    s.add_argument("store", metavar="STORE_OR_MOUNT",
                   help="a mount point, an unmounted store directory, or s3://BUCKET/PREFIX")
    remote_args(s)
    s.add_argument("--grace", type=float, default=None, metavar="SECONDS",
                   help="object store: override the bucket's grace period")
    s.set_defaults(func=run)


def _pack_bytes(path: str) -> int:
    store = open_readonly(path)
    try:
        return store.stats().pack_bytes
    finally:
        store.close()


def run(args: argparse.Namespace) -> None:
    from lzfs.mount.mountinfo import find_mount
    from lzfs.store.store import Store

    if remote_options(args, args.store) is not None:
        from lzfs.cluster import gc
        from lzfs.objectstore.backend import open_backend

        res = gc.collect(open_backend(args.store, args.endpoint, args.profile), args.grace)
        print(f"{res.manifests} manifests name {res.packs - res.deleted - res.young} of "
              f"{res.packs} pack objects; deleted {res.deleted} ({human(res.deleted_bytes)}), "
              f"kept {res.young} unreferenced within the grace period"
              + (f"; removed {res.retired} manifests and tombstones of deleted snapshots"
                 if res.retired else "")
              + ("; stopped after a quarter of the grace period: run it again"
                 if res.stopped else ""))
        return

    m = find_mount(args.store)
    if m is not None:  # the daemon owns the store: ask it (setxattr on .lzfs runs its gc)
        before = _pack_bytes(args.store)
        os.setxattr(m.mountpoint / ".lzfs", "user.lzfs.gc", b"1")
        print(f"gave back {human(max(before - _pack_bytes(args.store), 0))}")
        return
    store = Store(args.store)
    try:
        removed, freed = store.gc()
    finally:
        store.close()
    print(f"removed {removed} unreferenced frames, gave back {human(freed)}")
