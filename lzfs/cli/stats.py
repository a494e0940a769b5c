"""`lzfs stats`: the store's figures."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from lzfs.cli.common import awaiting, command, open_readonly, print_awaiting


def register(sub: Any) -> None:
    s = command(sub, "stats", "store-wide sizes: logical, after dedup, after compression", """\
Print the store's figures: logical size, zero pages, what dedup and then compression leave,
and the unreferenced blocks gc would remove. Given a store that is mounted (or its mount
point), the daemon first settles and commits, so the figures are current. For a node's cache
of an object store, also the snapshots that wait to be published.""", """\
  lzfs stats /var/lib/lzfs/store
  lzfs stats /mnt/ckpt
  lzfs stats --json /var/lib/lzfs/store | jq .stored""")
    s.add_argument("store", metavar="STORE_OR_MOUNT",
                   help="a store directory, or its mount point")
    s.add_argument("--json", action="store_true",
                   help="print the figures as one JSON object (bytes and counts)")
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from lzfs.report.render import STATS_SCHEMA, stats_text

    store = open_readonly(args.store)
    try:
        st = store.stats()
    finally:
        store.close()
    if args.json:
        out = {"schema": STATS_SCHEMA, **asdict(st)}
        left = awaiting(args.store)
        if left is not None:
            out["unpublished"] = left
        print(json.dumps(out, indent=2))
        return
    print(stats_text(asdict(st)), end="")
    print_awaiting(args.store)
