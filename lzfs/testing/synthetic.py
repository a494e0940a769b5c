"""Synthetic published snapshots for the cluster benchmark and tests: a few real packs and N
manifests naming their frames, written straight into a bucket through the library (no mount,
no CRIU), so that a bucket of 10,000 snapshots takes a minute instead of 10,000 dumps.

The packs are real (written by a throwaway local store's pack writer, verified on every read
like any other), and each snapshot is one ``pages-1.img`` made of a few of their frames, so a
node restores it and compares bytes with ``content(i)``.
"""

from __future__ import annotations

import base64
import random
import stat
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

from lzfs.cluster import hookindex, manifest
from lzfs.cluster.bucket import PACKS_PREFIX
from lzfs.cluster.listing import journal_key
from lzfs.objectstore.protocol import Backend
from lzfs.store.codec import PAGE, block_hash
from lzfs.store.layout import mkfs
from lzfs.store.packs import pack_name
from lzfs.store.pagetable import encode_table
from lzfs.store.store import Store

PAGES_PER_FRAME = 16


@dataclass
class Synthetic:
    """What was written: frame i as [pack key, off, rlen, stored, raw, codec, table], its
    bytes, and the snapshot names with their manifest keys."""
    frames: list[list] = field(default_factory=list)
    data: list[bytes] = field(default_factory=list)
    per_snapshot: int = 4
    keys: dict[str, str] = field(default_factory=dict)

    def frames_of(self, i: int) -> list[int]:
        return [(i * self.per_snapshot + j) % len(self.frames) for j in range(self.per_snapshot)]

    def content(self, i: int) -> bytes:
        return b"".join(self.data[f] for f in self.frames_of(i))

    def doc(self, i: int, name: str) -> dict:
        used = self.frames_of(i)
        order = list(dict.fromkeys(used))
        packs = sorted({self.frames[f][0] for f in order})
        frames = [[packs.index(self.frames[f][0]), *self.frames[f][1:6],
                   base64.b64encode(self.frames[f][6]).decode()] for f in order]
        runs, off = [], 0
        for f in used:
            n = len(self.data[f])
            runs.append([off, n, order.index(f), 0])
            off += n
        t = time.time_ns()
        entries = [{"p": "pages-1.img", "m": stat.S_IFREG | 0o644, "u": 0, "g": 0, "t": t,
                    "s": off, "x": runs}]
        return {"format": manifest.FORMAT, "name": name, "node": "synthetic",
                "created": time.time(), "config": {"avg_pages": 16, "max_pages": 64},
                "packs": packs, "frames": frames, "entries": entries,
                "figures": {"files": 1, "logical": off, "referenced": off,
                            "distinct": sum(f[4] for f in frames),
                            "stored": sum(f[2] for f in frames)}}


def _pages(rng: random.Random, n: int) -> list[bytes]:
    return [rng.randbytes(PAGE) if k % 2 else ((b"synthetic page %d; " % rng.randrange(1 << 30))
                                               * 300)[:PAGE] for k in range(n)]


def make_packs(backend: Backend, nframes: int, seed: int = 1) -> Synthetic:
    """Write ``nframes`` frames of 16 pages into real pack files and upload them."""
    rng = random.Random(seed)
    syn = Synthetic()
    with tempfile.TemporaryDirectory(prefix="lzfs-synth-") as tmp:
        root = Path(tmp) / "store"
        mkfs(root)
        store = Store(root)
        try:
            for _ in range(nframes):
                pages = _pages(rng, PAGES_PER_FRAME)
                buf = b"".join(pages)
                (fw,) = store.pack_new(buf, [(k * PAGE, PAGE, block_hash(p))
                                             for k, p in enumerate(pages)])
                table = encode_table([(k * PAGE, block_hash(p)) for k, p in enumerate(pages)])
                syn.frames.append([fw.pack, fw.off, fw.rlen, fw.header.stored_len,
                                   fw.header.raw_len, fw.header.codec, table])
                syn.data.append(buf)
            store.packs.seal()
            store.packs.sync()
            keys = {}
            for pid in sorted({f[0] for f in syn.frames}):
                blob = (root / "packs" / pack_name(pid)).read_bytes()
                keys[pid] = f"{PACKS_PREFIX}{xxhash.xxh3_128_hexdigest(blob)}.pack"
                backend.put(keys[pid], blob)
        finally:
            store.close(commit=False)
    for f in syn.frames:
        f[0] = keys[f[0]]
    return syn


def publish(backend: Backend, count: int, *, nframes: int = 64, per_snapshot: int = 4,
            prefix: str = "snap-", workers: int = 16, journal: bool = False,
            seed: int = 1, index: bool = False) -> Synthetic:
    """``count`` snapshots ``prefix00000``... published into ``backend`` (an lzfs bucket),
    manifests PUT ``workers`` at a time; ``journal`` also announces each (as a publication
    does; without it they are as if published long ago, found by a mount's listing);
    ``index`` also PUTs each one's delta of the page index (hookindex.py), as a publication
    does."""
    syn = make_packs(backend, nframes, seed)
    syn.per_snapshot = per_snapshot
    width = max(5, len(str(count - 1)))

    def put(i: int) -> tuple[str, str]:
        name = f"{prefix}{i:0{width}d}"
        key = manifest.new_key(name.encode(), "synthetic")
        doc = syn.doc(i, name)
        backend.put(key, manifest.encode(doc))
        if index:
            hookindex.put_delta(backend, key, doc, set(doc["packs"]), "synthetic", None)
        if journal:
            backend.put(journal_key(key), b"")
        return name, key

    with ThreadPoolExecutor(workers) as pool:
        syn.keys = dict(pool.map(put, range(count)))
    return syn
