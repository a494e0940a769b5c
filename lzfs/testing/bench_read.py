"""`scripts/bench --profile random-read`: random 4 KiB reads of a pages image, through a fresh
lzfs mount and from a plain directory, side by side.

This is the read pattern of `criu lazy-pages`: every page the restored process touches first
is one 4 KiB read of its pages image, wherever it lies. The file is an llm-profile pages image
(float16 weights, a zeroed KV cache, text) written straight into both places, so no CRIU is
needed. Each pass starts cold (fresh daemon, page cache dropped) and reads the same seeded
offsets: ``uniform`` draws them from the whole file (first touches scattered over memory),
``local`` from a window of 16 MiB that moves through the file (a process working through its
memory, which is where the decoded-frame cache and readahead have to earn their keep).
"""

from __future__ import annotations

import os
import random
import shutil
import time
from pathlib import Path
from statistics import median

from lzfs.testing.bench import LzfsMount, Throttle, drop_caches
from lzfs.testing.workload import build
from lzfs.units import human

PAGE = 4096
LOCAL_WINDOW = 16 << 20


def write_pages_image(path: Path, size: int, seed: int = 10) -> None:
    """An llm-profile memory image of ``size`` bytes (what CRIU would write for it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for a in build("llm", size, seed, 1234):
            f.writelines(a if isinstance(a, list) else [a])
        pad = -f.tell() % PAGE
        f.write(bytes(pad))


def offsets(size: int, n: int, pattern: str, seed: int = 1) -> list[int]:
    """``n`` page-aligned offsets into a file of ``size`` bytes (see the module docstring)."""
    rnd = random.Random(seed)
    pages = max(size // PAGE, 1)
    if pattern == "uniform":
        return [rnd.randrange(pages) * PAGE for _ in range(n)]
    win = min(LOCAL_WINDOW // PAGE, pages)
    out = []
    for i in range(n):
        base = (i * (pages - win)) // max(n - 1, 1)
        out.append((base + rnd.randrange(win)) * PAGE)
    return out


def time_reads(path: Path, offs: list[int]) -> float:
    """MB/s of 4 KiB preads at ``offs``, one after another (as the lazy-pages daemon reads)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        t = time.monotonic()
        for off in offs:
            if len(os.pread(fd, PAGE, off)) != PAGE:
                raise RuntimeError(f"short read of {path} at {off}")
        return len(offs) * PAGE / (time.monotonic() - t) / 1e6
    finally:
        os.close(fd)


def run(work: Path, size: int, reads: int, rounds: int) -> list[dict]:
    """Rows of MB/s: plain and lzfs, each pattern, ``rounds`` cold passes each, every cold
    pass followed by a warm one over the same offsets (lzfs: frames in the decoded-frame
    cache, every read still a FUSE round trip; plain: the page cache)."""
    work.mkdir(parents=True)
    plain = work / "plain" / "snap" / "pages-1.img"
    write_pages_image(plain, size)
    fs = LzfsMount(work, Throttle(None))
    try:
        (fs.mnt / "snap").mkdir()
        shutil.copyfile(plain, fs.mnt / "snap" / "pages-1.img")
        fs.commit()
        rows = []
        for pattern in ("uniform", "local"):
            offs = offsets(plain.stat().st_size, reads, pattern)
            for method in ("plain", "lzfs"):
                cold, warm = [], []
                for _ in range(rounds):
                    if method == "lzfs":
                        fs.umount()
                        fs.mount()
                    drop_caches()
                    path = plain if method == "plain" else fs.mnt / "snap" / "pages-1.img"
                    cold.append(time_reads(path, offs))
                    warm.append(time_reads(path, offs))
                rows.append({"method": method, "pattern": pattern, "cold_runs": cold,
                             "warm_runs": warm, "cold_MBps": median(cold),
                             "warm_MBps": median(warm)})
        return rows
    finally:
        fs.umount()
        shutil.rmtree(work, ignore_errors=True)


def report(rows: list[dict], size: int, reads: int) -> str:
    title = (f"random 4 KiB reads of a {human(size)} llm pages image, {reads} reads per pass "
             f"(median MB/s; cold: fresh daemon, page cache dropped; warm: the same reads again)")
    lines = [title, f"{'method':<6} {'pattern':<8} {'cold':>8} {'warm':>8}"]
    for r in rows:
        lines.append(f"{r['method']:<6} {r['pattern']:<8} {r['cold_MBps']:8.1f} "
                     f"{r['warm_MBps']:8.1f}")
    return "\n".join(lines)
