"""`scripts/bench --profile lazy|page-server|random-read`: the other ways a snapshot comes back
or arrives, side by side with plain CRIU (see docs/benchmarks.md, "Lazy restore and the page
server").

``lazy``: one llm process dumped, then brought back four ways: ``plain`` (a full restore from
a plain directory, the baseline of every ratio), ``plain-lazy`` (`criu lazy-pages` beside
`criu restore --lazy-pages`, from a plain directory), ``lzfs-lazy`` (the same from a remounted
lzfs store) and ``lzfs`` (a full restore from lzfs); ``lzfs-lazy-pyread`` is ``lzfs-lazy``
with every read answered by the daemon's Python handler (``-o nofast_reads``, the read path
before fast reads), ``lzfs-lazy-pydecode`` with frames decoded in Python
(``LZFS_PYTHON_DECODE=1``, before the native decoder). For each: the time until `criu restore`
returns, until the process has answered a request that touches a tenth of its memory (a
server's first answer), and until it has touched all of it (checksummed: intact). The
lazy-pages daemon is started before the clock (an operator starts it in advance); the clock
starts with `criu restore`.

``page-server``: the process is dumped with `criu dump --page-server` to `criu page-server`
on 127.0.0.1, whose images directory is a plain directory or an lzfs mount; the dump counts
until the page server has exited and its directory is durable. The other images are then
copied over and the process restored from there (a full restore, timed too).

``random-read``: lzfs.testing.bench_read.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from statistics import median

from lzfs.testing import bench_read
from lzfs.testing.bench import (
    MOUNTS,
    WORK_ROOT,
    LzfsMount,
    Throttle,
    criu,
    drop_caches,
    sh,
    throttle_unavailable,
)
from lzfs.testing.criu import Workload, free_port, start_lazy_pages, start_page_server
from lzfs.units import human

LAZY_METHODS = ("plain", "plain-lazy", "lzfs-lazy", "lzfs")
LAZY_EXTRA = ("lzfs-lazy-pyread", "lzfs-lazy-pydecode")  # on request only
SERVER_METHODS = ("plain", "lzfs")
FIRST = 0.1  # the share of memory a server's first answer touches
LAZY_KEYS = ("restore_s", "first_s", "all_s")
SERVER_KEYS = ("dump_s", "restore_s")


def _durable(fs: LzfsMount | None, base: Path, throttle: Throttle) -> None:
    if fs:
        fs.commit()
    else:
        sh(*throttle.prefix(), "sync", "-f", str(base))


def run_lazy(method: str, work: Path, size: int, throttle: Throttle) -> dict:
    work.mkdir(parents=True)
    w = Workload.start(work / "ctl", size=str(size), profile="llm", seed=10)
    # lzfs-lazy-pyread mounts as lzfs-pyread does; plain and plain-lazy mount nothing
    fs = MOUNTS[method.replace("-lazy", "")](work, throttle) if method.startswith("lzfs") else None
    try:
        first = w.ask_checksum(fraction=FIRST)
        snap = (fs.mnt if fs else work / "images") / "snap"
        snap.mkdir(parents=True)
        criu(throttle, "dump", snap, "-t", str(w.pid), "--shell-job")
        _durable(fs, snap, throttle)
        w.wait_gone()
        if fs:  # restored from its packs, as the full-restore profile is: a settler still
            fs.settle()  # encoding the dump's staging files would share the cores with it
            fs.umount()
            fs.mount()
        lazy = "-lazy" in method
        drop_caches()
        server = start_lazy_pages(snap, throttle.prefix(), verbose=False) if lazy else None
        try:
            t = time.monotonic()
            criu(throttle, "restore", snap, "--shell-job", "-d",
                 *(["--lazy-pages"] if lazy else []))
            row = {"method": method, "restore_s": time.monotonic() - t}
            ok = w.ask_checksum(fraction=FIRST) == first
            row["first_s"] = time.monotonic() - t
            ok = w.ask_checksum() == w.checksum and ok
            row["all_s"] = time.monotonic() - t
            row["intact"] = ok
            if server:
                server.wait(timeout=600)
                row["lazy_done_s"] = time.monotonic() - t
        finally:
            if server:
                server.kill()
        w.stop()
        return row
    finally:
        w.stop()
        if fs:
            fs.umount()
        shutil.rmtree(work, ignore_errors=True)


def run_page_server(method: str, work: Path, size: int, throttle: Throttle) -> dict:
    work.mkdir(parents=True)
    w = Workload.start(work / "ctl", size=str(size), profile="llm", seed=10)
    fs = LzfsMount(work, throttle) if method == "lzfs" else None
    try:
        src = work / "src"
        src.mkdir()
        snap = (fs.mnt if fs else work / "images") / "snap"
        snap.mkdir(parents=True)
        drop_caches()
        port = free_port()
        t = time.monotonic()
        server = start_page_server(snap, port, throttle.prefix(), verbose=False)
        try:
            criu(throttle, "dump", src, "-t", str(w.pid), "--shell-job", "--page-server",
                 "--address", "127.0.0.1", "--port", str(port))
            server.wait(timeout=600)
        finally:
            server.kill()
        _durable(fs, snap, throttle)
        row = {"method": method, "dump_s": time.monotonic() - t}
        w.wait_gone()
        if fs:  # the page server's pages went raw to staging files: stored once settled
            t = time.monotonic()
            fs.settle()
            row["settle_s"] = time.monotonic() - t
        row["stored"] = fs.stored() if fs else sum(
            p.stat().st_blocks * 512 for p in snap.iterdir() if p.is_file())
        for p in src.iterdir():
            if p.is_file() and p.suffix == ".img":
                shutil.copyfile(p, snap / p.name)
        if fs:
            fs.umount()
            fs.mount()
        drop_caches()
        t = time.monotonic()
        criu(throttle, "restore", snap, "--shell-job", "-d")
        row["restore_s"] = time.monotonic() - t
        row["intact"] = w.ask_checksum() == w.checksum
        return row
    finally:
        w.stop()
        if fs:
            fs.umount()
        shutil.rmtree(work, ignore_errors=True)


def summarize(runs: list[dict], keys: tuple[str, ...]) -> list[dict]:
    """Median times per method, and each ratio the median of the per-round ratios to
    ``plain`` of the same round (as lzfs.testing.bench.summarize does)."""
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(r["method"], []).append(r)
    base = {r["round"]: r for r in runs if r["method"] == "plain"}
    rows = []
    for method, rs in groups.items():
        row: dict = {"method": method, "rounds": len(rs),
                     "intact": all(r["intact"] for r in rs)}
        for k in keys:
            row[f"{k[:-2]}_runs"] = [r[k] for r in rs]
            row[k] = median(row[f"{k[:-2]}_runs"])
            row[f"{k[:-2]}_ratio"] = median(r[k] / base[r["round"]][k] for r in rs)
        if "stored" in rs[-1]:
            row["stored"] = rs[-1]["stored"]
        rows.append(row)
    return rows


def _table(rows: list[dict], keys: tuple[str, ...], titles: tuple[str, ...]) -> str:
    head = f"{'method':<11}" + "".join(f" {t:>10} {'x':>5}" for t in titles) + " intact"
    lines = [head]
    for r in rows:
        lines.append(f"{r['method']:<11}" + "".join(
            f" {r[k]:10.2f} {r[k[:-2] + '_ratio']:5.2f}" for k in keys) + f" {r['intact']}")
    return "\n".join(lines)


def main(profile: str, size: int, rounds: int, mbps: int, out: Path, methods: list[str],
         reads: int) -> int:
    """Run one of these profiles; results on stdout and in OUT/bench-PROFILE.json."""
    work = WORK_ROOT / f"lzfs-bench-paths-{os.getpid()}"
    meta: dict = {"profile": profile, "size": size, "rounds": rounds, "throttle_mbps": mbps,
                  "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    if profile == "random-read":
        rows = bench_read.run(work, size, reads, rounds)
        print(bench_read.report(rows, size, reads))
        meta.update(reads=reads, results=rows)
        ok = True
    else:
        lazy = profile == "lazy"
        runner = run_lazy if lazy else run_page_server
        keys = LAZY_KEYS if lazy else SERVER_KEYS
        if mbps and throttle_unavailable():
            print(f"bench: storage throttling unavailable ({throttle_unavailable()}): "
                  f"unthrottled run", flush=True)
            mbps = 0
        throttle = Throttle(mbps or None)
        runs = []
        try:
            for rnd in range(rounds):
                for method in methods:
                    print(f"[bench] {profile} {human(size)} {method} round {rnd + 1}/{rounds}"
                          " ...", flush=True)
                    row = runner(method, work / f"{method}-{rnd}", size, throttle)
                    row["round"] = rnd
                    runs.append(row)
        finally:
            throttle.close()
        rows = summarize(runs, keys)
        storage = f"{mbps} MB/s" if mbps else "unthrottled"
        print(f"\nprofile {profile}, {human(size)}, {storage}, {rounds} round(s); seconds, "
              f"x = median of per-round ratios to plain")
        titles = ("restore", "first", "all") if lazy else ("dump", "restore")
        print(_table(rows, keys, titles))
        meta["results"] = rows
        ok = all(r["intact"] for r in rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"bench-{profile}.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"\nwrote {out}/bench-{profile}.json")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


def methods_for(profile: str, given: str | None) -> list[str]:
    """The methods of a profile (all by default); exits with a one-line error on others."""
    default = LAZY_METHODS if profile == "lazy" else SERVER_METHODS
    allowed = default + LAZY_EXTRA if profile == "lazy" else default
    methods = given.split(",") if given else list(default)
    unknown = [m for m in methods if m not in allowed]
    if unknown or "plain" not in methods:
        sys.exit(f"bench: --profile {profile} takes methods {', '.join(allowed)} "
                 f"(plain included: every ratio is to it)")
    return methods
