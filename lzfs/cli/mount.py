"""`lzfs mount` and `lzfs umount`."""

from __future__ import annotations

import argparse
from typing import Any

from lzfs.cli.common import command, setup_logging, unpublished
from lzfs.core.options import MountOptions
from lzfs.errors import LzfsError


def register(sub: Any) -> None:
    s = command(sub, "mount", "mount a store (returns once mounted; -f stays)", """\
Mount a store. Without -f the daemon starts in the background and the command returns once
the mount is live (or prints why it is not); the daemon logs to STORE/lzfs.log. It commits
every --commit-interval seconds, on fsync and on unmount. mount(8) works too, through the
helper scripts/setup installs: mount -t fuse.lzfs STORE MNT, or an fstab line; every option
below can be given there with -o by its name (cache_mb=256, nostage, cache=DIR, ...).""", """\
  lzfs mount /var/lib/lzfs/store /mnt/ckpt
  lzfs mount --domain tenant-a /var/lib/lzfs/store /mnt/tenant-a
  lzfs mount -f --debug /var/lib/lzfs/store /mnt/ckpt     in the foreground, logging to stderr
  lzfs mount s3://ckpt/models /mnt/ckpt --endpoint http://s3.internal:8333 \\
      --cache /var/cache/lzfs --cache-size 50G
  fstab: /var/lib/lzfs/store  /mnt/ckpt  fuse.lzfs  defaults,_netdev,cache_mb=256  0 0""")
    s.add_argument("store", help="a store directory, or s3://BUCKET/PREFIX with --cache")
    s.add_argument("mountpoint", help="an existing directory that nothing is mounted on")
    s.add_argument("-f", "--foreground", action="store_true",
                   help="serve in this process until unmounted; log to stderr unless --log")
    MountOptions.add_arguments(s)
    s.add_argument("--ready-fd", type=int, default=-1, help=argparse.SUPPRESS)
    s.set_defaults(func=run_mount)

    s = command(sub, "umount", "unmount; returns once everything is on disk", """\
Unmount an lzfs mount and wait until its daemon has stored and committed every byte and
exited: when this returns, the store can be copied, checked or mounted elsewhere. A mount with
a file still open is busy and is left mounted (unless -z). A node of an object store publishes
its changed snapshots first; one it cannot publish stays in its cache, and umount names it in
one line and exits 1.""", """\
  lzfs umount /mnt/ckpt
  lzfs umount -z /mnt/ckpt     detach at once; returns when the last open file is closed""")
    s.add_argument("mountpoint", help="where the store is mounted")
    s.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                   help="how long to wait for the daemon to commit and exit after the "
                        "unmount (default 600)")
    s.add_argument("-z", "--lazy", action="store_true",
                   help="detach the mount now even if files are open (as umount -l), then wait "
                        "(up to --timeout) until the last one is closed and the daemon has "
                        "committed and exited")
    s.set_defaults(func=run_umount)


def run_mount(args: argparse.Namespace) -> None:
    from lzfs.objectstore.backend import is_remote

    opts = MountOptions.from_args(args)
    if is_remote(args.store) and not opts.cache:
        raise LzfsError(f"mounting {args.store} needs --cache DIR: a local directory for this "
                        f"node's working store and block cache")
    if not args.foreground:
        from lzfs.mount.spawn import spawn

        spawn(args.store, args.mountpoint, opts)
        return
    from lzfs.mount import daemon

    setup_logging(opts.log, opts.debug)
    daemon.serve(args.store, args.mountpoint, opts, ready_fd=args.ready_fd)


def run_umount(args: argparse.Namespace) -> None:
    from lzfs.mount.mounts import umount

    m = umount(args.mountpoint, timeout=args.timeout, lazy=args.lazy)
    left = unpublished(str(m.store))
    if left:  # a node whose object store failed: unmounted, the data safe in its cache
        names = ", ".join(left)
        why = next(iter(left.values()))
        raise LzfsError(f"unmounted {m.mountpoint}, but {len(left)} snapshot"
                        f"{'s are' if len(left) > 1 else ' is'} not published: {names} "
                        f"({why}); kept in {m.store}: mount it again and 'lzfs publish "
                        f"MNT/NAME' (or unmount again) once the object store is back")
