"""`lzfs gc`: give back the space of frames no file uses (a mount, a store, a bucket)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from lzfs.cli.common import command, pack_bytes_of, remote_args, remote_options
from lzfs.units import human, plural


def register(sub: Any) -> None:
    s = command(sub, "gc", "give back the space of frames no file uses", """\
Remove frames no file uses any more and give their space back. The daemon also does this by
itself; this is for now. On a mount point it asks the daemon; on an unmounted store it works
on the store; on an object store it deletes pack objects no manifest names, once they are
older than the bucket's grace period (safe while other nodes work), and rebuilds the bucket's
page index from the live snapshots (what lets a dump on any node deduplicate against every
snapshot: run it daily, say).""", """\
  lzfs gc /mnt/ckpt
  lzfs gc s3://ckpt/models --endpoint http://s3.internal:8333""")
    s.add_argument("store", metavar="STORE_OR_MOUNT",
                   help="a mount point, an unmounted store directory, or s3://BUCKET/PREFIX")
    remote_args(s)
    s.add_argument("--grace", type=float, default=None, metavar="SECONDS",
                   help="object store: override the bucket's grace period")
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from lzfs.mount.mountinfo import find_mount
    from lzfs.store.store import Store

    if remote_options(args, args.store) is not None:
        from lzfs.cluster import gc
        from lzfs.objectstore.backend import open_backend

        res = gc.collect(open_backend(args.store, args.endpoint, args.profile), args.grace)
        named = res.packs - res.deleted - res.young
        print(f"{plural(res.manifests, 'manifest')} name{'s' if res.manifests == 1 else ''} "
              f"{named} of {plural(res.packs, 'pack object')}; deleted {res.deleted} "
              f"({human(res.deleted_bytes)}), kept {res.young} unreferenced within the grace "
              f"period"
              + (f"; removed {res.retired} manifests and tombstones of deleted snapshots"
                 if res.retired else "")
              + ("; stopped after a quarter of the grace period: run it again"
                 if res.stopped else ""))
        if res.index is not None:
            print(f"page index: {plural(res.index.entries, 'hook')} of the live snapshots in "
                  f"{human(res.index.bytes)}, {plural(res.index.merged, 'delta')} merged")
        return

    m = find_mount(args.store)
    if m is not None:  # the daemon owns the store: ask it (setxattr on .lzfs runs its gc)
        before = pack_bytes_of(args.store)
        os.setxattr(m.mountpoint / ".lzfs", "user.lzfs.gc", b"1")
        print(f"gave back {human(max(before - pack_bytes_of(args.store), 0))}")
        return
    store = Store(args.store)
    try:
        removed, freed = store.gc()
    finally:
        store.close()
    print(f"removed {plural(removed, 'unreferenced frame')}, gave back {human(freed)}")
