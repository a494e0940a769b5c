"""A model-server-like process to checkpoint: float16 weights, a zeroed but touched KV cache,
a text heap. It checksums its memory when asked, so a restore can be shown to be intact.

    python -m lzfs.testing.workload --dir D --size 300M [--profile llm|random|replica] [--seed N]

writes D/ready (its pid and checksum) once its memory is built, then every 10 ms looks for
D/trigger: when present, it recomputes the checksum into D/result and removes the trigger.
A trigger holding a fraction (``0.1``) checksums only that first share of its memory, as a
server answering its first request after a lazy restore touches only part of it. D/stop makes
it exit. It opens files only briefly, so CRIU finds nothing open to restore.
D/mutate (holding "FRACTION SEED") changes one byte in that fraction of its array pages,
scattered at random, as a serving process does between two snapshots, then writes the new
checksum to D/mutated.

With --children N it forks N workers after building its memory, as a server that preloads a
model and then forks its workers does: they share every page copy-on-write, which CRIU
restores page by page (lzfs/criu/cow.py). Their pids follow the checksum in D/ready, and each
answers D/childI/trigger with D/childI/result.

Profiles: `llm` weights, zeroed KV cache and text heap, a third each;
`random` incompressible bytes; `replica` weights 60%, KV cache 30%, heap 10%, the weights
depending on --weights-seed only, so several replicas share them while their heaps differ.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import xxhash

from lzfs.units import parse_size

_WORDS = ["the", "model", "attends", "to", "every", "token", "in", "the", "context", "window",
          "and", "the", "cache", "keeps", "keys", "and", "values", "for", "each", "layer", "so",
          "that", "generation", "does", "not", "recompute", "them", "prompt", "completion",
          "request", "latency", "batch", "scheduler", "sampling", "temperature", "logits"]


def build(profile: str, size: int, seed: int, weights_seed: int) -> list:
    rng = np.random.default_rng(seed)
    arrays: list = []
    if profile == "random":
        arrays.append(np.frombuffer(rng.bytes(size), dtype=np.uint8).copy())
        return arrays
    if profile == "replica":  # a served model: the weights dominate
        w_bytes, kv_bytes = size * 6 // 10, size * 3 // 10
    else:
        w_bytes, kv_bytes = size // 3, size // 3
    heap_bytes = size - w_bytes - kv_bytes
    wrng = np.random.default_rng(weights_seed if profile == "replica" else seed)
    weights = (wrng.standard_normal(w_bytes // 2, dtype=np.float32) * 0.02).astype(np.float16)
    arrays.append(weights)
    kv = np.empty(kv_bytes, dtype=np.uint8)
    kv.fill(0)  # touched: real pages that hold zeros, as a warmed-up KV cache pool does
    arrays.append(kv)
    words = np.array(_WORDS)
    # text in chunks of ~64 KiB, like tokenizer vocabularies, prompts and logs on a heap
    made = 0
    heap: list[bytes] = []
    while made < heap_bytes:
        n = min(heap_bytes - made, 1 << 16)
        picks = rng.integers(0, len(words), size=n // 6 + 1)
        chunk = (" ".join(words[picks]).encode())[:n]
        heap.append(chunk)
        made += len(chunk)
    arrays.append(heap)
    return arrays


def checksum(arrays: list, fraction: float = 1.0) -> str:
    """XXH3 of the memory, or of its first ``fraction`` (which touches only those pages)."""
    h = xxhash.xxh3_128()
    parts = [memoryview(b) for a in arrays
             for b in (a if isinstance(a, list) else [memoryview(a).cast("B")])]
    left = sum(len(p) for p in parts) if fraction >= 1 else int(
        sum(len(p) for p in parts) * fraction)
    for p in parts:
        if left <= 0:
            break
        h.update(p[:left])
        left -= len(p)
    return h.hexdigest()


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.rename(tmp, path)


def mutate(arrays: list, fraction: float, seed: int) -> int:
    """Change one byte in ``fraction`` of the pages of the numpy arrays (weights, KV cache),
    chosen at random: scattered changes, as a serving process makes between two snapshots.
    Returns the number of pages changed."""
    rng = np.random.default_rng(seed)
    changed = 0
    for a in arrays:
        if isinstance(a, list):
            continue  # the heap is immutable bytes
        flat = memoryview(a).cast("B")
        npages = len(flat) // 4096
        k = int(npages * fraction)
        for page in rng.choice(npages, size=k, replace=False):
            off = int(page) * 4096 + int(rng.integers(0, 4096))
            flat[off] = (flat[off] + 1 + int(rng.integers(0, 255))) % 256
        changed += k
    return changed


def _serve(ctl: Path, arrays: list, stop: Path) -> None:
    """Answer checksum and mutate triggers in ``ctl`` until ``stop`` appears."""
    trigger = ctl / "trigger"
    change = ctl / "mutate"
    while not stop.exists():
        if trigger.exists():
            ask = trigger.read_text().strip()
            # removed before the answer: once the result is there the asker may write its
            # next trigger, which must survive
            trigger.unlink()
            _write(ctl / "result", checksum(arrays, float(ask) if ask else 1.0) + "\n")
        if change.exists():
            fraction, seed = change.read_text().split()
            change.unlink()  # before the answer, as above
            n = mutate(arrays, float(fraction), int(seed))
            _write(ctl / "mutated", f"{n} {checksum(arrays)}\n")
        time.sleep(0.01)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--size", default="300M")
    ap.add_argument("--profile", default="llm", choices=["llm", "random", "replica"])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--weights-seed", type=int, default=1234)
    ap.add_argument("--children", type=int, default=0,
                    help="forked workers sharing the memory copy-on-write")
    args = ap.parse_args()
    d = Path(args.dir)
    arrays = build(args.profile, parse_size(args.size), args.seed, args.weights_seed)
    kids = []
    for i in range(args.children):
        (d / f"child{i}").mkdir(exist_ok=True)
        pid = os.fork()
        if pid == 0:
            try:
                _serve(d / f"child{i}", arrays, d / "stop")
            finally:
                os._exit(0)
        kids.append(pid)
    _write(d / "ready", " ".join([str(os.getpid()), checksum(arrays), *map(str, kids)]) + "\n")
    _serve(d, arrays, d / "stop")
    for pid in kids:
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
