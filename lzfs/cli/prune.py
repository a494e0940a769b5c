"""`lzfs prune`: remove the snapshots a retention policy does not keep."""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path
from typing import Any

from lzfs.cli.common import (
    command,
    open_readonly,
    pack_bytes_of,
    remote_args,
    remote_options,
)
from lzfs.errors import LzfsError
from lzfs.units import human, plural


def register(sub: Any) -> None:
    s = command(sub, "prune", "remove the snapshots a retention policy does not keep", """\
Remove old snapshots, series by series, as borg prune and restic forget do. A series is the
snapshots whose names differ only in a numeric suffix (vllm-7b-0001, vllm-7b-0002, ... or
vllm-7b-20261207T0412), or those starting with a --prefix. In each series the newest complete
snapshot is always kept, with the --keep-last N newest complete ones and every complete one
written within --keep-within of the newest. An incomplete snapshot (a failed dump) is removed
once a complete one is newer; one newer than every complete snapshot is kept (it may be a dump
in progress). On a mount the snapshot directories are removed and the daemon gives their
space back at once; on an object store each gets a tombstone (as lzfs rm), and the bucket's gc
deletes its packs after the grace period. Try --dry-run first.""", """\
  lzfs prune /mnt/ckpt --keep-last 3 --dry-run
  lzfs prune /mnt/ckpt --keep-last 2 --keep-within 7d --prefix vllm-
  lzfs prune s3://ckpt/models --keep-within 30d --endpoint http://s3.internal:8333""")
    s.add_argument("target", metavar="MNT_OR_URL",
                   help="a mount point, or s3://BUCKET/PREFIX")
    remote_args(s)
    s.add_argument("--keep-last", type=int, default=0, metavar="N",
                   help="keep the N newest complete snapshots of each series")
    s.add_argument("--keep-within", default=None, metavar="INTERVAL",
                   help="keep every complete snapshot written within INTERVAL of its series' "
                        "newest: 36h, 7d, 4w, 1y")
    s.add_argument("--prefix", action="append", default=[], metavar="P",
                   help="a series is the snapshots whose names start with P (repeatable); the "
                        "others are left alone")
    s.add_argument("-n", "--dry-run", action="store_true",
                   help="say what would be removed, remove nothing")
    s.add_argument("--json", action="store_true", help="the decisions as JSON")
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from lzfs.report.retention import parse_interval, plan

    if args.keep_last < 0:
        raise LzfsError("--keep-last must be 1 or more")
    try:
        within = parse_interval(args.keep_within) if args.keep_within else 0.0
    except ValueError as exc:
        raise LzfsError(f"--keep-within: {exc}") from None
    if not args.keep_last and not within:
        raise LzfsError("say what to keep: --keep-last N and/or --keep-within INTERVAL")
    remote = remote_options(args, args.target)
    snapshots = _remote_listing(args, remote) if remote is not None else _mount_listing(args)
    decisions = plan(snapshots, args.keep_last, within, args.prefix)
    gone = [d for d in decisions if not d.keep]
    freed = 0
    if not args.dry_run and gone:
        freed = (_remove_remote(args, [d.snapshot.name for d in gone]) if remote is not None
                 else _remove_mounted(args, [d.snapshot.name for d in gone]))
    if args.json:
        print(json.dumps({"schema": "lzfs-prune/1", "dry_run": args.dry_run,
                          "decisions": [d.to_json() for d in decisions],
                          "freed": None if remote is not None else freed}, indent=2))
        return
    _print(decisions, args.dry_run, freed if remote is None else None)


def _mount_listing(args: argparse.Namespace) -> list:
    from lzfs.mount.mountinfo import find_mount
    from lzfs.report.retention import listing

    m = find_mount(args.target)
    if m is None or m.mountpoint != Path(args.target).resolve():
        raise LzfsError(f"{args.target} is not an lzfs mount point: prune works on a mount "
                        f"(or on s3://...), where removing is what rm -r does")
    store = open_readonly(str(m.mountpoint))  # the daemon commits first: figures current
    try:
        return listing(store)
    finally:
        store.close()


def _remote_listing(args: argparse.Namespace, remote) -> list:
    from lzfs.cluster.attach import snapshot_view
    from lzfs.report.retention import listing

    with snapshot_view(args.target, remote) as store:
        return listing(store, top_level_only=True)


def _remove_mounted(args: argparse.Namespace, names: list[str]) -> int:
    """rm -r each snapshot directory through the mount, then have the daemon collect: the
    bytes the packs gave back."""
    from lzfs.mount.mountinfo import find_mount

    m = find_mount(args.target)
    assert m is not None  # _mount_listing found it
    before = pack_bytes_of(str(m.mountpoint))
    for name in names:
        shutil.rmtree(m.mountpoint / name)
    os.setxattr(m.mountpoint / ".lzfs", "user.lzfs.gc", b"1")
    return max(before - pack_bytes_of(str(m.mountpoint)), 0)


def _remove_remote(args: argparse.Namespace, names: list[str]) -> int:
    from lzfs.cluster.remove import remove
    from lzfs.objectstore.backend import open_backend

    backend = open_backend(args.target, args.endpoint, args.profile)
    for name in names:
        remove(backend, os.fsencode(name))
    return 0


def _print(decisions: list, dry_run: bool, freed: int | None) -> None:
    from lzfs.report.render import when

    series = None
    for d in decisions:
        if d.series != series:
            series = d.series
            print(f"series {series or '(no name)'}:")
        verb = "keep" if d.keep else ("would remove" if dry_run else "removed")
        print(f"  {verb:<12} {d.snapshot.name}  {when(d.snapshot.created)}  "
              f"{human(d.snapshot.logical)}  ({d.why})")
    gone = sum(not d.keep for d in decisions)
    kept = len(decisions) - gone
    if dry_run:
        print(f"would remove {plural(gone, 'snapshot')}, keep {kept} (dry run: nothing removed)")
    elif freed is None:
        print(f"removed {plural(gone, 'snapshot')}, kept {kept}; the bucket's gc deletes their "
              f"packs after its grace period")
    else:
        print(f"removed {plural(gone, 'snapshot')}, kept {kept}; gave back {human(freed)}")
