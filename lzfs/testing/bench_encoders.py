"""`scripts/bench --profile encoders`: would encoder processes let lzfs store a dump at the
speed of a plain one on a host with many cores?

The design in question (docs/benchmarks.md, "Encoder processes"): the daemon keeps the FUSE
request thread and the metadata; each WRITE's data is copied once into a shared-memory ring,
and N worker processes cut, hash, compress and append frames of whole 4 MiB batches to packs
of their own, sending back only page tables and frame places. This runs that pipeline with
lzfs's own stages (chunker.split, codec.encode_frame_parts, ``pwritev`` into a pack file) on
llm-profile data, with 1 MiB "requests" copied into the ring as the request thread would, and
measures:

- the producer's CPU per GiB (copy into the ring, hand-off, results): what the design adds to
  the request thread, the one part that does not scale with cores;
- the workers' CPU per GiB (all of them together): what each GiB costs in cores;
- wall throughput with 0 (the producer encodes itself, as one process does today) to N
  workers.

With more workers than cores the wall figure flattens, but the CPU figures per GiB stay what
they are, and they give the arithmetic for a host with C cores: the request thread's ceiling
is 1 / (receive + producer + metadata) GiB/s, and it takes ceiling x workers' CPU per GiB
cores to feed it. Pass ``verify`` to read every frame back and compare (the test does).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path

import numpy as np

from lzfs.store import chunker
from lzfs.store.codec import FRAME_MAX, decode_frame, encode_frame_parts
from lzfs.testing.workload import build

BATCH = 4 << 20    # bytes per hand-off to a worker (filemap.BATCH)
REQUEST = 1 << 20  # one FUSE WRITE (max_write)
GiB = 1 << 30

# From docs/benchmarks.md ("What bounds the dump"), measured in the daemon: the pyfuse3
# request path alone (a do-nothing daemon: CRIU dumps 2 GiB in 1.35 s, about as fast as
# into a plain directory) and the block and extent rows per GiB.
RECEIVE_S_PER_GIB = 0.67
METADATA_S_PER_GIB = 0.10


@dataclass
class Row:
    workers: int
    wall_s: float
    gib_per_s: float
    producer_cpu_per_gib: float
    workers_cpu_per_gib: float
    stored_ratio: float


def llm_data(size: int, seed: int = 10) -> bytes:
    """What a pages image of the llm workload holds: weights, a zeroed KV cache, text."""
    weights, kv, heap = build("llm", size, seed, seed)
    return (weights.tobytes() + kv.tobytes() + b"".join(heap))[:size]


def encode_batch(view: memoryview, base: int, fd: int, end: int
                 ) -> tuple[list[tuple[int, int, int]], int]:
    """Cut, hash, compress and append one batch's non-zero pages to the pack ``fd`` from
    offset ``end``: frames of at most FRAME_MAX raw bytes of consecutive pages. Returns
    (file offset, pack offset, record length) per frame and the new end."""
    pieces, _ = chunker.split(view, base, True)
    places = []
    run: list[tuple[int, int, bytes | None]] = []

    def flush() -> None:
        nonlocal end
        lo, hi = run[0][0], run[-1][0] + run[-1][1]
        _, parts = encode_frame_parts(view[lo:hi], [(n, h) for _, n, h in run])  # type: ignore[misc]
        size = os.pwritev(fd, parts, end)
        places.append((base + lo, end, size))
        end += size
        run.clear()

    for p in pieces:
        if (p[2] is None or (run and (run[-1][0] + run[-1][1] != p[0]
                                     or p[0] + p[1] - run[0][0] > FRAME_MAX))) and run:
            flush()
        if p[2] is not None:
            run.append(p)
    if run:
        flush()
    return places, end


def _worker(shm_name: str, tasks: mp.Queue, results: mp.Queue, pack: str) -> None:
    shm = SharedMemory(name=shm_name)
    fd = os.open(pack, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    end = 0
    try:
        while (task := tasks.get()) is not None:
            slot, nbytes, base = task
            assert shm.buf is not None
            view = shm.buf[slot * BATCH:slot * BATCH + nbytes]
            places, end = encode_batch(view, base, fd, end)
            view.release()
            results.put((slot, pack, places))
    finally:
        os.close(fd)
        shm.close()


def run(data: bytes, workers: int, work: Path, verify: bool = False) -> Row:
    """Store ``data`` through the pipeline with ``workers`` processes (0: in this one)."""
    frames: list[tuple[str, int, int, int]] = []  # (pack, file offset, pack offset, length)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0, t0 = time.process_time(), time.monotonic()
    view = memoryview(data)
    if workers == 0:
        pack = str(work / "inline.pack")
        fd = os.open(pack, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        end = 0
        buf = bytearray(BATCH)
        for base in range(0, len(data), BATCH):
            n = min(BATCH, len(data) - base)
            for off in range(0, n, REQUEST):  # the same copy the ring costs
                buf[off:off + min(REQUEST, n - off)] = view[base + off:base + min(off + REQUEST, n)]
            places, end = encode_batch(memoryview(buf)[:n], base, fd, end)
            frames += [(pack, *p) for p in places]
        os.close(fd)
    else:
        slots = 2 * workers + 2
        shm = SharedMemory(create=True, size=slots * BATCH)
        ctx = mp.get_context("fork")
        tasks: mp.Queue = ctx.Queue()
        results: mp.Queue = ctx.Queue()
        procs = [ctx.Process(target=_worker, args=(shm.name, tasks, results,
                                                    str(work / f"w{i}.pack")))
                 for i in range(workers)]
        for p in procs:
            p.start()
        ring = shm.buf
        assert ring is not None
        try:
            free = list(range(slots))
            pending = 0
            for base in range(0, len(data), BATCH):
                if not free:
                    slot, pack, places = results.get()
                    frames += [(pack, *pl) for pl in places]
                    free.append(slot)
                    pending -= 1
                slot = free.pop()
                n = min(BATCH, len(data) - base)
                at = slot * BATCH
                for off in range(0, n, REQUEST):  # one copy per WRITE request, as it comes
                    k = min(REQUEST, n - off)
                    ring[at + off:at + off + k] = view[base + off:base + off + k]
                tasks.put((slot, n, base))
                pending += 1
            for _ in range(pending):
                slot, pack, places = results.get()
                frames += [(pack, *pl) for pl in places]
            for _ in procs:
                tasks.put(None)
            for p in procs:
                p.join()
        finally:
            del ring
            shm.close()
            shm.unlink()
    wall = time.monotonic() - t0
    producer = time.process_time() - cpu0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    children = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    stored = sum(length for *_, length in frames)
    if verify:
        _verify(data, frames)
    gib = len(data) / GiB
    return Row(workers, round(wall, 3), round(gib / wall, 3), round(producer / gib, 3),
               round((children if workers else producer) / gib, 3),
               round(stored / len(data), 3))


def _verify(data: bytes, frames: list[tuple[str, int, int, int]]) -> None:
    """Every frame decodes to the bytes it was cut from; every byte not in a frame is zero."""
    covered = np.zeros(len(data), dtype=bool)
    fds: dict[str, int] = {}
    try:
        for pack, foff, poff, length in frames:
            fd = fds.get(pack) or fds.setdefault(pack, os.open(pack, os.O_RDONLY))
            _, raw = decode_frame(os.pread(fd, length, poff))
            if raw != data[foff:foff + len(raw)]:
                raise AssertionError(f"frame at file offset {foff} decodes to other bytes")
            covered[foff:foff + len(raw)] = True
    finally:
        for fd in fds.values():
            os.close(fd)
    rest = np.frombuffer(data, dtype=np.uint8)[~covered]
    if rest.any():
        raise AssertionError("bytes outside every frame are not all zero")


def main(size: int, workers: list[int], verify: bool = False) -> list[Row]:
    """Run every worker count on the same data and print the table and the arithmetic."""
    data = llm_data(size)
    rows = []
    work = Path(tempfile.mkdtemp(prefix="lzfs-encoders-", dir="/var/tmp"))
    try:
        for n in workers:
            rows.append(run(data, n, work, verify))
            for p in work.iterdir():
                p.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"encoder processes, llm data {size >> 20} MiB, {os.cpu_count()} cores here")
    print(f"{'workers':>7} {'wall s':>7} {'GiB/s':>6} {'producer CPU s/GiB':>19} "
          f"{'encoder CPU s/GiB':>18} {'stored':>6}")
    for r in rows:
        print(f"{r.workers:>7} {r.wall_s:7.2f} {r.gib_per_s:6.2f} {r.producer_cpu_per_gib:19.3f} "
              f"{r.workers_cpu_per_gib:18.3f} {r.stored_ratio:6.3f}")
    with_workers = [r for r in rows if r.workers]
    if with_workers:
        producer = min(r.producer_cpu_per_gib for r in with_workers)
        encoder = min(r.workers_cpu_per_gib for r in with_workers)
        thread = RECEIVE_S_PER_GIB + producer + METADATA_S_PER_GIB
        ceiling = 1 / thread
        print(f"request thread per GiB: receive {RECEIVE_S_PER_GIB} + producer {producer:.3f} "
              f"+ metadata {METADATA_S_PER_GIB} = {thread:.2f} s: at most {ceiling:.2f} GiB/s "
              f"whatever the cores")
        print(f"encoder cores to keep up with that: {ceiling * encoder:.1f} "
              f"({encoder:.2f} CPU s per GiB); a host with C cores stores at "
              f"min({ceiling:.2f}, (C - 2) / {encoder:.2f}) GiB/s (CRIU and the request "
              f"thread take the other two)")
    return rows


def as_dicts(rows: list[Row]) -> list[dict]:
    return [asdict(r) for r in rows]
