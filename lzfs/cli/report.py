"""`lzfs report`: what each snapshot, file or memory region costs and shares."""

from __future__ import annotations

import argparse
import json
from typing import Any

from lzfs.cli.common import (
    awaiting,
    command,
    open_readonly,
    print_awaiting,
    remote_args,
    remote_options,
)


def register(sub: Any) -> None:
    s = command(sub, "report", "what each snapshot costs: logical, stored, unique, shared", """\
What each snapshot (top-level directory), file or memory region costs: logical and stored
bytes, the bytes unique to it (what deleting it frees) and those shared, and with whom.
Given a mount point, the daemon commits first, so the figures are current. Columns and the
JSON schema are in docs/report.md.""", """\
  lzfs report /mnt/ckpt
  lzfs report --by region /mnt/ckpt
  lzfs report --json /var/lib/lzfs/store > report.json
  lzfs report s3://ckpt/models --endpoint http://s3.internal:8333     every published one""")
    s.add_argument("path", metavar="STORE_OR_MOUNT",
                   help="a store directory, its mount point, or s3://BUCKET/PREFIX")
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
    if remote is not None:  # every published snapshot, from the manifests alone
        from lzfs.cluster.attach import snapshot_view

        with snapshot_view(args.path, remote) as store:
            data = fn(store)
    else:
        from lzfs.cluster.attach import attach_readonly

        store = open_readonly(args.path)
        node = attach_readonly(store)  # a node cache: remote packs are read remotely
        try:
            data = fn(store)
        finally:
            store.close()
            if node is not None:
                node.close()
    if args.json:
        if remote is None:
            left = awaiting(args.path)
            if left is not None:
                data["unpublished"] = left
        print(json.dumps(data, indent=2))
    else:
        render.print_report(data)
        if remote is None:
            print_awaiting(args.path)
