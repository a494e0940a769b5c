"""`scripts/demo`: checkpoint a model-server-like process into lzfs and restore it from there."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lzfs.testing.criu import Workload, criu_command, criu_unusable_reason, run_criu
from lzfs.units import human


def sh(*cmd: str) -> str:
    """Run a command, echo it and its output as a user would see them."""
    print(f"$ {' '.join(cmd)}", flush=True)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    if out.strip():
        print(out.rstrip(), flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", default="300M", help="process memory (default 300M)")
    ap.add_argument("--profile", default="llm", choices=["llm", "random"])
    ap.add_argument("--keep", help="keep the store in this directory (default: a temp dir)")
    args = ap.parse_args()
    reason = criu_unusable_reason()
    if reason:
        print(f"demo: cannot run CRIU here: {reason}", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="lzfs-demo-"))
    store = Path(args.keep) if args.keep else work / "store"
    mnt = work / "mnt"
    mnt.mkdir()
    lzfs = [sys.executable, "-m", "lzfs"]
    w = None
    try:
        print(f"CRIU: {' '.join(criu_command() or [])}")
        sh(*lzfs, "mkfs", str(store))
        sh(*lzfs, "mount", str(store), str(mnt))
        print(f"\n# a model server with {args.size} of memory: float16 weights, a zeroed KV cache, "
              f"a text heap ({args.profile} profile)")
        w = Workload.start(work / "ctl", size=args.size, profile=args.profile)
        print(f"started pid {w.pid}; memory checksum {w.checksum}")
        snap = mnt / "server-1"
        snap.mkdir()
        t = time.monotonic()
        run_criu("dump", snap, "-t", str(w.pid), "--shell-job")
        dump_s = time.monotonic() - t
        w.wait_gone()
        print(f"\n# criu dump -t {w.pid} -D {snap} --shell-job   ({dump_s:.2f} s); the process "
              f"is {'still there' if w.alive() else 'gone'}")
        sh("ls", "-l", str(snap))
        sh("du", "-sh", "--apparent-size", str(snap))
        sh("du", "-sh", str(snap))
        print("\n# CRIU wrote the pages raw, through FUSE passthrough, at the disk's speed; the "
              "daemon\n# compresses and deduplicates them once idle (lzfs report waits for "
              "that, and says what the snapshot costs)")
        sh(*lzfs, "report", str(mnt))
        sh("du", "-sh", str(snap))
        print("\n# remount, so the restore reads what is on disk")
        sh(*lzfs, "umount", str(mnt))
        sh(*lzfs, "mount", str(store), str(mnt))
        t = time.monotonic()
        run_criu("restore", snap, "--shell-job", "-d")
        restore_s = time.monotonic() - t
        print(f"\n# criu restore -D {snap} --shell-job -d   ({restore_s:.2f} s)")
        after = w.ask_checksum()
        same = after == w.checksum
        print(f"restored pid {w.pid} is running; memory checksum {after}: "
              f"{'intact' if same else 'DIFFERENT'}")
        logical = sum(p.stat().st_size for p in snap.iterdir() if p.is_file())
        stored = sum(p.stat().st_blocks * 512 for p in snap.iterdir() if p.is_file())
        print(f"\nsnapshot: {human(logical)} logical, {human(stored)} stored "
              f"({stored / logical:.1%} of logical, {logical / max(stored, 1):.2f}x smaller)")
        w.stop()
        w = None
        sh(*lzfs, "umount", str(mnt))
        sh(*lzfs, "stats", str(store))
        print("\n# every frame read back and every page checked against its hash, and the metadata")
        sh(*lzfs, "fsck", str(store))
        return 0 if same else 1
    finally:
        if w is not None:
            w.stop()
        if os.path.ismount(mnt):
            subprocess.run([*lzfs, "umount", str(mnt)], capture_output=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
