"""`lzfs report`: what each snapshot, file or memory region costs and shares."""

from __future__ import annotations

import argparse
import json
from typing import Any

from lzfs.cli.common import (
    awaiting,
    command,
    locate_snapshot,
    open_readonly,
    print_awaiting,
    remote_args,
    remote_options,
)
from lzfs.errors import LzfsError


def register(sub: Any) -> None:
    s = command(sub, "report", "what each snapshot costs: logical, stored, unique, shared", """\
What each snapshot (a directory of CRIU images), file or memory region costs: when it was
written, logical and stored bytes, the bytes unique to it (what deleting it frees) and those
shared, and with whom. Given a mount point, the daemon commits first, so the figures are
current; given a snapshot directory (MNT/NAME or STORE/NAME), the report is of that one.
Columns and the JSON schema are in docs/report.md.""", """\
  lzfs report /mnt/ckpt
  lzfs report /mnt/ckpt/server-1           one snapshot: its row, --by file its files
  lzfs report --by region /mnt/ckpt
  lzfs report --json /var/lib/lzfs/store > report.json
  lzfs report s3://ckpt/models --endpoint http://s3.internal:8333     every published one""")
    s.add_argument("path", metavar="STORE_OR_MOUNT",
                   help="a store directory, its mount point, a snapshot in either "
                        "(MNT/NAME), or s3://BUCKET/PREFIX")
    remote_args(s)
    s.add_argument("--by", choices=["snapshot", "file", "region"], default="snapshot",
                   help="one row per snapshot (default), per file, or per memory region the "
                        "pages came from ([heap], [anon], mapped files)")
    s.add_argument("--json", action="store_true", help="machine-readable (docs/report.md)")
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from lzfs.report import dedup, render

    fn = {"snapshot": dedup.snapshot_report, "file": dedup.file_report,
          "region": dedup.region_report}[args.by]
    remote = remote_options(args, args.path)
    where = args.path
    if remote is not None:  # every published snapshot, from the manifests alone
        from lzfs.cluster.attach import snapshot_view
        from lzfs.cluster.bucket import pack_bytes
        from lzfs.objectstore.backend import open_backend

        with snapshot_view(args.path, remote) as store:
            data = fn(store)
        data["store"] = args.path  # not the throwaway working store it was read through
        if "totals" in data:
            data["totals"]["pack_bytes"] = pack_bytes(
                open_backend(args.path, args.endpoint, args.profile))
    else:
        from lzfs.cluster.attach import attach_readonly

        root, names, mount = locate_snapshot(args.path)
        where = str(mount.mountpoint if mount else root)
        store = open_readonly(where)
        node = attach_readonly(store)  # a node cache: remote packs are read remotely
        try:
            data = fn(store)
        finally:
            store.close()
            if node is not None:
                node.close()
        if names:
            data = only(data, b"/".join(names).decode(errors="replace"), args.path)
    if args.json:
        if remote is None:
            left = awaiting(where)
            if left is not None:
                data["unpublished"] = left
        print(json.dumps(data, indent=2))
    else:
        render.print_report(data)
        if remote is None:
            print_awaiting(where)


def only(data: dict, snap: str, path: str) -> dict:
    """The report of one snapshot, cut from the store's: its row (and its row of the
    matrix), its files, or its memory regions; the store's totals stay as they are."""
    if data["by"] == "region":
        data["snapshots"] = [s for s in data["snapshots"] if s["snapshot"] == snap]
        found = bool(data["snapshots"])
    else:
        keep = (lambda n: n == snap) if data["by"] == "snapshot" else (
            lambda n: n.startswith(snap + "/"))
        data["groups"] = [g for g in data["groups"] if keep(g["name"])]
        found = bool(data["groups"])
        if "matrix" in data:
            data["matrix"] = {snap: data["matrix"].get(snap, {})}
    if not found:
        raise LzfsError(f"{path}: no snapshot there (a directory of CRIU images)")
    data["snapshot"] = snap
    return data
