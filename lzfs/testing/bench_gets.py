"""`scripts/bench --profile gets`: what a cold node's GET threads spend per GiB they fetch.

A cold-node restore fetches about half a GiB of pack segments per GiB it restores, on the same
two cores as CRIU and the decoders, so every CPU-second the fetch saves is a second of restore
work. This fetches one random object in 4 MiB ranges on 8 threads (as the segment cache does)
from SeaweedFS on loopback, three ways, alternating in each round:

- ``boto3``: ``S3Backend.get``, boto3's ``get_object``: a new ``bytes`` per range (what the
  segment cache did before ``objectstore/ranged.py``);
- ``fresh``: ``S3Backend.get_into`` into a new ``bytearray`` per range: the ranged GET path
  without buffer reuse, to separate the HTTP client's cost from fresh memory's;
- ``reused``: ``S3Backend.get_into`` into one buffer per thread, reused: the segment cache now.

It reports this process's CPU-seconds (user and system: the client side only; SeaweedFS runs
in its own process) and wall seconds per GiB fetched, with medians over the rounds.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SEGMENT = 4 << 20
THREADS = 8
WAYS = ("boto3", "fresh", "reused")


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(size: int, rounds: int) -> list[dict]:
    from lzfs.objectstore.s3 import S3Backend
    from lzfs.testing.seaweed import Seaweed

    work = Path(tempfile.mkdtemp(prefix="lzfs-bench-gets-"))
    server = Seaweed(work / "seaweed")
    server.start()
    saved = dict(os.environ)
    os.environ.update(server.env())
    try:
        server.create_bucket("lzfs-bench-gets")
        backend = S3Backend("lzfs-bench-gets", "", server.endpoint)
        n = max(1, size // SEGMENT)
        blob = os.urandom(SEGMENT * n)
        backend.put("object", blob)
        local = threading.local()

        def fetch(way: str) -> Callable[[int], int]:
            def boto3(i: int) -> int:
                return len(backend.get("object", i * SEGMENT, SEGMENT))

            def into(i: int) -> int:
                buf = getattr(local, "buf", None) if way == "reused" else None
                if buf is None:
                    buf = local.buf = bytearray(SEGMENT)
                return backend.get_into("object", i * SEGMENT, memoryview(buf))
            return boto3 if way == "boto3" else into

        got: dict[str, list[tuple[float, float]]] = {w: [] for w in WAYS}
        for r in range(rounds):
            for way in WAYS:
                print(f"[bench] gets {way} round {r + 1}/{rounds} ...", flush=True)
                with ThreadPoolExecutor(THREADS) as pool:
                    c0, t0 = _cpu_s(), time.monotonic()
                    total = sum(pool.map(fetch(way), range(n)))
                    wall, cpu = time.monotonic() - t0, _cpu_s() - c0
                if total != n * SEGMENT:
                    raise RuntimeError(f"{way}: fetched {total} bytes of {n * SEGMENT}")
                gib = total / (1 << 30)
                got[way].append((cpu / gib, wall / gib))
        rows: list[dict] = [{"way": w, "cpu_s_per_gib": statistics.median(c for c, _ in got[w]),
                 "wall_s_per_gib": statistics.median(t for _, t in got[w]),
                 "rounds_cpu": [round(c, 3) for c, _ in got[w]]} for w in WAYS]
        print(f"\nGETs of {SEGMENT >> 20} MiB ranges, {THREADS} threads, "
              f"{n * SEGMENT / (1 << 30):.2f} GiB per way and round, {rounds} rounds")
        print(f"{'way':8} {'CPU s/GiB':>10} {'wall s/GiB':>11}  CPU per round")
        for w, row in zip(WAYS, rows, strict=True):
            per_round = " ".join(f"{c:.2f}" for c, _ in got[w])
            print(f"{w:8} {row['cpu_s_per_gib']:10.3f} {row['wall_s_per_gib']:11.3f}  "
                  f"{per_round}")
        return rows
    finally:
        os.environ.clear()
        os.environ.update(saved)
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
