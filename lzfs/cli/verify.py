"""`lzfs verify`: check every frame and page of snapshots while they stay mounted."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from lzfs.cli.common import command, fail, locate_snapshot, remote_args, remote_options
from lzfs.errors import LzfsError
from lzfs.units import human, plural

DAMAGED = 4  # as fsck: errors found


def register(sub: Any) -> None:
    s = command(sub, "verify", "check every frame and page of snapshots, mounted or not", """\
Read every frame the files of a snapshot (or of all of them) name, from the packs on disk or
the objects of a bucket, and check each record's checksum and every page against its hash,
while the store stays mounted and serves restores: reads are paced (--rate) at the lowest
CPU priority. Names each damaged file with its byte ranges. Files a dump wrote through
passthrough and that are not settled yet are counted, not checked. For a whole unmounted
store, lzfs fsck checks the metadata too; a mount can verify every snapshot by itself now
and then (-o scrub_hours=N).

Exit status: 0 all sound, 4 damage found, 1 could not verify.""", """\
  lzfs verify /mnt/ckpt/server-1                 before restoring it on 200 nodes
  lzfs verify /mnt/ckpt --rate 50                every snapshot, at most 50 MiB/s
  lzfs verify s3://ckpt/models --endpoint http://s3.internal:8333""")
    s.add_argument("path", metavar="MNT[/SNAP]",
                   help="a mount point or a snapshot directory in it, an unmounted store "
                        "(STORE or STORE/SNAP), or s3://BUCKET/PREFIX")
    remote_args(s)
    s.add_argument("--rate", type=float, default=100.0, metavar="MIB_S",
                   help="MiB of stored data read per second at most (default 100)")
    s.add_argument("--json", action="store_true", help="the results as JSON")
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lzfs.cluster.attach import attach_readonly
    from lzfs.report.verify import lowest_priority, still_named
    from lzfs.store.namespace import ROOT_INODE
    from lzfs.store.store import Store

    lowest_priority()
    rate = args.rate * (1 << 20)
    remote = remote_options(args, args.path)
    if remote is not None:
        from lzfs.cluster.attach import snapshot_view

        with snapshot_view(args.path, remote) as store:
            results = _verify_all(store, ROOT_INODE, [], rate, args.json)
        return _print(results, args)
    root, names, mount = locate_snapshot(args.path)
    if mount is not None:  # what the daemon holds in memory, committed first
        fd = os.open(mount.mountpoint, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    store = Store(root, readonly=True)
    node = attach_readonly(store)
    try:
        top = ROOT_INODE
        for name in names:
            child = store.ns.child(top, name)
            if child is None or not store.ns.get(child).is_dir:
                raise LzfsError(f"{args.path}: no such snapshot directory")
            top = child
        results = _verify_all(store, top, names, rate, args.json)
    finally:
        store.close()
        if node is not None:
            node.close()
    bad = {f for r in results for f in r.bad}
    if bad:  # collected meanwhile (a file deleted during the verify) is no damage
        again = Store(root, readonly=True)
        try:
            named = still_named(again, bad)
        finally:
            again.close()
        for r in results:
            for f in list(r.bad):
                if f not in named:
                    del r.bad[f]
    return _print(results, args)


def _verify_all(store, top: int, names: list[bytes], rate: float, quiet: bool) -> list:
    """One result per snapshot: ``top`` itself, or each directory at the root."""
    from lzfs.report import render
    from lzfs.report.verify import verify
    from lzfs.store.namespace import ROOT_INODE

    if top != ROOT_INODE:
        todo = [(b"/".join(names).decode(errors="replace"), top)]
    else:
        todo = [(n.decode(errors="replace"), i) for n, i in store.ns.children(ROOT_INODE)
                if store.ns.get(i).is_dir]
    out = []
    with render.byte_progress("verifying", quiet=quiet) as progress:
        for name, ino in todo:
            out.append(verify(store, ino, name, rate, progress))
    return out


def _print(results: list, args) -> int:
    if args.json:
        print(json.dumps({"schema": "lzfs-verify/1", "snapshots": [r.to_json() for r in results],
                          "clean": all(r.clean for r in results)}, indent=2))
    else:
        for r in results:
            staged = f", {plural(r.staged, 'staged file')} not checked" if r.staged else ""
            state = "sound" if r.clean else "DAMAGED"
            print(f"{r.snapshot}: {state}: {plural(r.files, 'file')}, "
                  f"{plural(r.frames, 'frame')} ({human(r.frame_bytes)}) verified{staged}")
            for path, ranges in r.damaged.items():
                where = ", ".join(f"{off}+{n}" for off, n in ranges)
                fail(f"{path}: damaged at {where} (reads there fail with EIO)")
        if not results:
            print("no snapshots to verify")
    return 0 if all(r.clean for r in results) else DAMAGED
