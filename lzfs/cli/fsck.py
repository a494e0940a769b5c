"""`lzfs fsck`: verify (and mend) an unmounted store."""

from __future__ import annotations

import argparse
import json
import sqlite3
from typing import Any

from lzfs.cli.common import command, fail
from lzfs.errors import LzfsError

FAILED = 8  # fsck(8)'s "operational error": it could not check


def register(sub: Any) -> None:
    s = command(sub, "fsck", "verify every frame, page and the metadata of an unmounted store",
                """\
Check an unmounted store: the SQLite file, pack files, every frame and page hash, reference
and link counts, staging files, the directory tree and which snapshots are complete. Names
each damaged file with its byte ranges. With --repair, mends what can be mended without
losing intact data (docs/reliability.md).

Exit status: 0 clean, 1 errors found and all repaired, 4 errors left (or found, without
--repair), 8 fsck could not run (not a store, mounted or busy, unreadable).""", """\
  lzfs umount /mnt/ckpt && lzfs fsck /var/lib/lzfs/store
  lzfs fsck --repair /var/lib/lzfs/store""")
    s.add_argument("store", help="the store directory (unmounted)")
    s.add_argument("--repair", action="store_true",
                   help="mend what can be mended without losing intact data (see docs/"
                        "reliability.md)")
    s.add_argument("--json", action="store_true",
                   help="print the result as JSON (no progress bar)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lzfs.mount.mountinfo import find_mount
    from lzfs.objectstore.backend import is_remote
    from lzfs.report import render
    from lzfs.report.fsck import fsck

    if is_remote(args.store):
        fail(f"{args.store} is an object store: fsck checks a store directory or a node's "
             f"cache directory (lzfs fsck CACHE, which fetches what only the bucket holds); "
             f"'lzfs verify {args.store}' checks every published snapshot")
        return FAILED
    if find_mount(args.store) is not None:
        fail(f"{args.store} is a mount point: fsck wants the unmounted store "
             f"('lzfs umount {args.store}' first)")
        return FAILED
    try:
        with render.byte_progress("verifying frames", quiet=args.quiet or args.json) as progress:
            result = fsck(args.store, repair=args.repair, progress=progress)
    except (LzfsError, OSError, sqlite3.Error) as exc:
        # fsck could not do its job: not "clean", not "repaired" (fsck(8) says 8)
        text = str(exc).replace("; run 'lzfs fsck' on the store", "")
        if isinstance(exc, sqlite3.Error) or "metadata database is damaged" in text:
            text += " (the SQLite file itself is damaged: fsck cannot mend it)"
        fail(text)
        return FAILED
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        render.print_fsck(result)
    if result.clean:
        return 0
    return 4 if not args.repair or result.remaining else 1
