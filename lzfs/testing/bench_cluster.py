"""The cluster benchmark: a bucket of N synthetic published snapshots (synthetic.py) on a real
SeaweedFS, and what a fresh node, a report and a gc cost against it.

    python -m lzfs.testing.bench_cluster --snapshots 10000     (scripts/bench_cluster)

Prints one line per figure: mount time of a fresh node and its daemon's memory, the GETs one
restore makes (from .lzfs/stats.json), the cost of seeing one new snapshot, of publishing a
small one, and the time and peak memory of `lzfs report` and `lzfs gc` on the bucket.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lzfs.cluster.bucket import remote_mkfs
from lzfs.objectstore.backend import open_backend
from lzfs.testing import synthetic
from lzfs.testing.seaweed import Seaweed


def _lzfs(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lzfs", *args], capture_output=True,
                          text=True, check=True)


def _timed_peak(*args: str) -> tuple[float, int, str]:
    """(seconds, peak RSS in bytes, stdout) of one `lzfs` command."""
    probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], "
             "capture_output=True, text=True); sys.stdout.write(r.stdout); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
             "sys.exit(r.returncode)")
    t = time.monotonic()
    out = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "lzfs", *args],
                         capture_output=True, text=True, check=True).stdout
    body, _, peak = out.rstrip("\n").rpartition("\n")
    return time.monotonic() - t, int(peak) * 1024, body


def _daemon_rss(mnt: Path) -> tuple[int, int]:
    """(current, peak) resident bytes of the daemon serving ``mnt``."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"-f" in cmd and str(mnt.resolve()).encode() in cmd:
            status = Path(f"/proc/{pid}/status").read_text()
            vals = {k: int(v.split()[0]) * 1024 for k, _, v in
                    (line.partition(":") for line in status.splitlines())
                    if k in ("VmRSS", "VmHWM")}
            return vals["VmRSS"], vals["VmHWM"]
    raise RuntimeError(f"no daemon serves {mnt}")


def _remote(mnt: Path) -> dict:
    return json.loads((mnt / ".lzfs" / "stats.json").read_text())["remote"]


def run(count: int, import_recent: int, workdir: Path) -> None:
    server = Seaweed(workdir / "seaweed")
    server.start()
    os.environ.update(server.env())
    url = "s3://lzfs-bench/store"
    ep = ["--endpoint", server.endpoint]
    try:
        server.create_bucket("lzfs-bench")
        backend = open_backend(url, server.endpoint)
        remote_mkfs(backend, 16, 64)
        t = time.monotonic()
        syn = synthetic.publish(backend, count)
        print(f"bucket filled: {count} synthetic snapshots in {time.monotonic() - t:.1f} s")
        mounted = []

        def mount(name: str) -> tuple[Path, float]:
            mnt = workdir / name
            mnt.mkdir()
            t = time.monotonic()
            _lzfs("mount", url, str(mnt), *ep, "--cache", str(workdir / f"{name}-cache"),
                  "--refresh", "0", "--import-recent", str(import_recent))
            mounted.append(mnt)
            return mnt, time.monotonic() - t

        try:
            first, mount_s = mount("first")
            rss, _ = _daemon_rss(first)
            print(f"first fresh node: mount {mount_s:.2f} s (lists every key, writes the "
                  f"catalogue), daemon RSS {rss / 2**20:.0f} MiB")
            mnt, mount_s = mount("node")
            t = time.monotonic()
            listed = len(os.listdir(mnt))
            ls_s = time.monotonic() - t
            rss, _ = _daemon_rss(mnt)
            print(f"next fresh node: mount {mount_s:.2f} s (lzfs mount: catalogue "
                  f"{_remote(mnt)['from_catalogue']}, --import-recent {import_recent}); ls "
                  f"of the root: {listed} entries in {ls_s:.2f} s; daemon RSS "
                  f"{rss / 2**20:.0f} MiB")
            before = _remote(mnt)
            i = count // 2
            name = next(n for n, k in syn.keys.items() if n.endswith(f"{i:05d}"))
            t = time.monotonic()
            ok = (mnt / name / "pages-1.img").read_bytes() == syn.content(i)
            after = _remote(mnt)
            gets = after["gets"] - before["gets"]
            mgets = after["manifest_gets"] - before["manifest_gets"]
            print(f"restore (read) of {name}: {time.monotonic() - t:.2f} s, data "
                  f"{'intact' if ok else 'WRONG'}; GETs: {mgets} manifest + {gets} pack "
                  f"segments")
            extra = synthetic.publish(backend, 1, prefix="late-", journal=True, seed=2)
            before = _remote(mnt)
            t = time.monotonic()
            seen = next(iter(extra.keys)) in os.listdir(mnt)
            after = _remote(mnt)
            print(f"one new snapshot published elsewhere: seen {seen} by the next ls "
                  f"({time.monotonic() - t:.2f} s), {after['listings'] - before['listings']} "
                  f"listing of the journal")
            snap = mnt / "small"
            snap.mkdir()
            (snap / "pages-1.img").write_bytes(os.urandom(8192))
            before = _remote(mnt)
            t = time.monotonic()
            _lzfs("publish", str(snap))
            after = _remote(mnt)
            print(f"publish of an 8 KiB snapshot: {time.monotonic() - t:.2f} s (lzfs publish), "
                  f"{after['puts'] - before['puts']} pack PUTs")
            rss, peak = _daemon_rss(mnt)
            print(f"daemon RSS at the end: {rss / 2**20:.0f} MiB (peak {peak / 2**20:.0f} MiB)")
        finally:
            for m in mounted:
                _lzfs("umount", str(m))
        secs, peak, _ = _timed_peak("report", url, *ep, "--json")
        print(f"lzfs report of the bucket: {secs:.1f} s, peak RSS {peak / 2**20:.0f} MiB")
        _lzfs("rm", url, *ep, next(iter(syn.keys)))
        secs, peak, out = _timed_peak("gc", url, *ep, "--grace", "0")
        print(f"lzfs gc of the bucket (one snapshot deleted, --grace 0): {secs:.1f} s, peak "
              f"RSS {peak / 2**20:.0f} MiB: {out.strip()}")
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--snapshots", type=int, default=10000)
    ap.add_argument("--import-recent", type=int, default=16)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="lzfs-bench-cluster-") as tmp:
        run(args.snapshots, args.import_recent, Path(tmp))


if __name__ == "__main__":
    main()
