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
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lzfs.cluster.bucket import PACKS_PREFIX, remote_mkfs
from lzfs.objectstore.backend import open_backend
from lzfs.objectstore.protocol import Backend
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


def model_image(mib: int, seed: int = 7) -> bytes:
    """A model server's pages, roughly: a third incompressible, the rest compressible."""
    rng = random.Random(seed)
    return b"".join(rng.randbytes(4096) if i % 3 == 0
                    else ((b"weights %d; " % rng.randrange(1 << 30)) * 400)[:4096]
                    for i in range(mib * 256))


def _pack_bytes(backend: Backend) -> int:
    return sum(o.size for o in backend.list(PACKS_PREFIX))


def run(count: int, import_recent: int, workdir: Path, model_mib: int = 64,
        model_age: int = 900) -> None:
    server = Seaweed(workdir / "seaweed")
    server.start()
    os.environ.update(server.env())
    url = "s3://lzfs-bench/store"
    ep = ["--endpoint", server.endpoint]
    mounted: list[Path] = []

    def mount(name: str, recent: int = import_recent) -> tuple[Path, float]:
        mnt = workdir / name
        mnt.mkdir()
        t = time.monotonic()
        _lzfs("mount", url, str(mnt), *ep, "--cache", str(workdir / f"{name}-cache"),
              "--refresh", "0", "--import-recent", str(recent))
        mounted.append(mnt)
        return mnt, time.monotonic() - t

    def umount(mnt: Path) -> None:
        _lzfs("umount", str(mnt))
        mounted.remove(mnt)

    def replica(mnt: Path, name: str, model: bytes, what: str) -> None:
        """Dump the model again on a node that never imported it: what it adds."""
        before, remote0 = _pack_bytes(backend), _remote(mnt)
        t = time.monotonic()
        (mnt / name).mkdir()
        (mnt / name / "pages-1.img").write_bytes(model)
        _lzfs("publish", str(mnt / name))
        secs = time.monotonic() - t
        added, remote = _pack_bytes(backend) - before, _remote(mnt)
        rss, peak = _daemon_rss(mnt)
        print(f"replica of the model ({what}): {secs:.2f} s to write and publish; added "
              f"{added / 2**20:.2f} MiB of packs = {100 * added / len(model):.2f}% of its "
              f"{len(model) / 2**20:.0f} MiB; index GETs "
              f"{remote['index_gets'] - remote0.get('index_gets', 0)} "
              f"({remote['index_get_bytes'] / 2**20:.2f} MiB), shards "
              f"{remote['index_shards_loaded']}, deltas {remote['index_deltas']}, manifests "
              f"adopted {remote['index_manifests_adopted']}; index in memory "
              f"{remote['index_bytes_in_memory'] / 2**20:.2f} MiB; daemon RSS "
              f"{rss / 2**20:.0f} MiB (peak {peak / 2**20:.0f} MiB)")

    try:
        server.create_bucket("lzfs-bench")
        backend = open_backend(url, server.endpoint)
        remote_mkfs(backend, 16, 64)
        t = time.monotonic()
        model = model_image(model_mib) if model_mib else b""
        newer = min(model_age, count - 1) if model else 0
        syn = synthetic.publish(backend, count - newer - bool(model), index=True)
        if model:  # published through a real node, then ``after`` newer snapshots
            mnt, _ = mount("publisher", 0)
            (mnt / "model").mkdir()
            (mnt / "model" / "pages-1.img").write_bytes(model)
            _lzfs("publish", str(mnt / "model"))
            umount(mnt)
            # the node's key time is the store's clock read to a second (clock.py); the
            # synthetic ones use this host's: wait, so that they sort after the model
            time.sleep(2.5)
            synthetic.publish(backend, newer, prefix="snap-z", index=True, seed=3,
                              journal=True)  # after a catalogue: announced
        print(f"bucket filled: {count} snapshots in {time.monotonic() - t:.1f} s"
              + (f" (a {model_mib} MiB model published {newer} snapshots before the newest, "
                 f"through a node; the others synthetic)" if model else ""))

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
            i = len(syn.keys) // 2
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
            if model:
                replica(mnt, "replica", model, "deltas only: no gc has run")
        finally:
            for m in list(mounted):
                umount(m)
        secs, peak, _ = _timed_peak("report", url, *ep, "--json")
        print(f"lzfs report of the bucket: {secs:.1f} s, peak RSS {peak / 2**20:.0f} MiB")
        _lzfs("rm", url, *ep, next(iter(syn.keys)))
        if model:  # the first replica goes too, or the next node would import it as recent
            _lzfs("rm", url, *ep, "replica")
        secs, peak, out = _timed_peak("gc", url, *ep, "--grace", "0")
        print(f"lzfs gc of the bucket ({'two snapshots' if model else 'one snapshot'} deleted, "
              f"--grace 0): {secs:.1f} s, peak "
              f"RSS {peak / 2**20:.0f} MiB: {' '.join(out.split())}")
        if model:
            try:
                mnt, mount_s = mount("after-gc")
                rss, _ = _daemon_rss(mnt)
                print(f"fresh node after the gc: mount {mount_s:.2f} s, daemon RSS "
                      f"{rss / 2**20:.0f} MiB")
                replica(mnt, "replica-2", model, "through the base gc wrote")
            finally:
                for m in list(mounted):
                    umount(m)
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--snapshots", type=int, default=10000)
    ap.add_argument("--import-recent", type=int, default=16)
    ap.add_argument("--model-mib", type=int, default=64,
                    help="a model published through a node, and dumped again on a fresh "
                         "node (0: none)")
    ap.add_argument("--model-age", type=int, default=900,
                    help="snapshots published after the model")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="lzfs-bench-cluster-") as tmp:
        run(args.snapshots, args.import_recent, Path(tmp), args.model_mib, args.model_age)


if __name__ == "__main__":
    main()
