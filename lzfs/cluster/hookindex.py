"""The bucket's published page index: dedup against every snapshot in the bucket without
importing any of them.

A node deduplicates through its own sparse index (store/index.py): hooks, 1 page in 8 chosen
by content, each naming a frame whose page table is then matched in full. Imported snapshots
bring their frames' hooks with them, but a node imports only the few newest (``--import-recent``)
and those it restores, so a replica of a model published long ago would be stored again. The
bucket therefore publishes the hooks too:

* **delta objects** ``index/delta/TIME-NODE-RAND.lzi``: each publication PUTs one, after its
  manifest, with the hooks of the frames this node wrote (frames it shares with other
  manifests are in theirs);
* **a base in shards** ``index/base/TIME/S.lzi`` (S = 0..f, by the top 4 bits of the hook):
  `lzfs gc` rebuilds it from the live manifests it reads anyway, one entry per hook naming
  the newest live manifest that holds it, and then PUTs ``index/BASE`` (which base is current
  and which deltas it merged) and deletes what the new base replaces. That is how the index
  stays true: a deleted snapshot leaves it at the next gc, and until then an entry naming a
  manifest that is gone costs one failed GET and a page stored again, never a wrong byte
  (every page is matched by its 128-bit hash in the frame's own page table).

An entry is (hook key, manifest, frame index in that manifest). A node loads the BASE pointer
and the unmerged deltas when a dump first misses its own index, and a shard when a hook of its
range is first looked up; a hit fetches that manifest once and adds its frames (not its tree)
to the working store (``Exchange.adopt``), after which the node's own index finds every page
of the model. Cost: a hook per 8 pages at 16 bytes, so 512 KiB per GiB of unique data before
zlib (docs/cluster.md has the measured figures).

Object format: 8 bytes magic ``LZFSIDX`` + version 1, 8 bytes XXH3-64 of the body, body
zlib-compressed: u32 length of a JSON list of manifest keys, that JSON, then n u64 hook keys
(sorted), n u32 manifest ordinals, n u32 frame indexes, little-endian.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import xxhash

from lzfs.cluster import manifest
from lzfs.errors import CorruptDataError
from lzfs.objectstore.protocol import Backend, NoSuchObject

log = logging.getLogger(__name__)

MAGIC = b"LZFSIDX\x01"
PREFIX = "index/"
DELTAS = "index/delta/"
BASES = "index/base/"
POINTER = "index/BASE"
SHARD_BITS = 4
SHARDS = 1 << SHARD_BITS
SUFFIX = ".lzi"
RELOAD_S = 120.0  # a node looks for newer deltas at most this often (when it misses)


def shard_of(keys: np.ndarray) -> np.ndarray:
    """Shard number of 63-bit hook keys."""
    return (keys >> np.uint64(63 - SHARD_BITS)).astype(np.int64)


def frame_hooks(table_b64: str) -> np.ndarray:
    """The hook keys of one manifest frame's page table (pagetable.hook_key, vectorised)."""
    blob = base64.b64decode(table_b64) if table_b64 else b""
    if not blob:
        return np.zeros(0, np.uint64)
    rows = np.frombuffer(blob, np.uint8).reshape(-1, 20)
    hooks = rows[(rows[:, 4] & 7) == 0]
    return np.ascontiguousarray(hooks[:, 4:12]).view("<u8").ravel() >> np.uint64(1)


@dataclass
class Part:
    """One index object, decoded: sorted hook keys, and per key a manifest and a frame."""
    manifests: list[str]
    keys: np.ndarray
    mref: np.ndarray
    fidx: np.ndarray

    @classmethod
    def empty(cls) -> Part:
        return cls([], np.zeros(0, np.uint64), np.zeros(0, np.uint32), np.zeros(0, np.uint32))

    def find(self, keys: np.ndarray) -> Iterable[tuple[str, int]]:
        """(manifest key, frame index) for each of ``keys`` (uint64) this part holds."""
        if not len(self.keys) or not len(keys):
            return []
        at = np.searchsorted(self.keys, keys)
        at[at == len(self.keys)] = 0
        hit = at[self.keys[at] == keys]
        return [(self.manifests[m], int(f)) for m, f in zip(self.mref[hit], self.fidx[hit],
                                                             strict=True)]

    @property
    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.keys, self.mref, self.fidx

    @property
    def nbytes(self) -> int:
        return int(self.keys.nbytes + self.mref.nbytes + self.fidx.nbytes)


def encode(part: Part) -> bytes:
    head = json.dumps(part.manifests, separators=(",", ":")).encode()
    body = zlib.compress(struct.pack("<I", len(head)) + head
                         + part.keys.astype("<u8").tobytes() + part.mref.astype("<u4").tobytes()
                         + part.fidx.astype("<u4").tobytes(), 6)
    return MAGIC + struct.pack("<Q", xxhash.xxh3_64_intdigest(body)) + body


def decode(data: bytes, key: str) -> Part:
    if data[:8] != MAGIC:
        raise CorruptDataError(f"index object {key}: not an lzfs index (or a newer format)")
    body = data[16:]
    if struct.unpack("<Q", data[8:16])[0] != xxhash.xxh3_64_intdigest(body):
        raise CorruptDataError(f"index object {key}: checksum mismatch")
    try:
        raw = zlib.decompress(body)
        (hl,) = struct.unpack_from("<I", raw)
        manifests = json.loads(raw[4:4 + hl])
        rest = raw[4 + hl:]
        n, left = divmod(len(rest), 16)
        if left or not isinstance(manifests, list):
            raise ValueError("bad lengths")
        keys = np.frombuffer(rest, "<u8", n)
        mref = np.frombuffer(rest, "<u4", n, 8 * n)
        fidx = np.frombuffer(rest, "<u4", n, 12 * n)
        if n and (int(mref.max()) >= len(manifests) or np.any(np.diff(keys.astype(np.int64))
                                                               < 0)):
            raise ValueError("entries out of range or unsorted")
    except (zlib.error, ValueError, struct.error) as exc:
        raise CorruptDataError(f"index object {key}: does not decode: {exc}") from None
    return Part([str(m) for m in manifests], keys, mref, fidx)


def build(entries: Iterable[tuple[str, list[tuple[int, np.ndarray]]]]) -> Part:
    """One part from (manifest key, [(frame index, its hook keys)]) in publication order: one
    entry per hook key, naming the newest manifest that holds it."""
    manifests: list[str] = []
    k_parts, m_parts, f_parts = [], [], []
    for mkey, frames in entries:
        mi = len(manifests)
        manifests.append(mkey)
        for fi, hooks in frames:
            if len(hooks):
                k_parts.append(hooks)
                m_parts.append(np.full(len(hooks), mi, np.uint32))
                f_parts.append(np.full(len(hooks), fi, np.uint32))
    if not k_parts:
        return Part([], *Part.empty().arrays)
    keys, mref, fidx = np.concatenate(k_parts), np.concatenate(m_parts), np.concatenate(f_parts)
    order = np.lexsort((-mref.astype(np.int64), keys))  # by key, newest manifest first
    keys, mref, fidx = keys[order], mref[order], fidx[order]
    first = np.ones(len(keys), bool)
    first[1:] = keys[1:] != keys[:-1]
    return _compact(Part(manifests, keys[first], mref[first], fidx[first]))


def _compact(part: Part) -> Part:
    """Drop manifests no entry names, renumbering the rest."""
    used = np.unique(part.mref)
    if len(used) == len(part.manifests):
        return part
    remap = np.zeros(max(len(part.manifests), 1), np.uint32)
    remap[used] = np.arange(len(used), dtype=np.uint32)
    return Part([part.manifests[i] for i in used], part.keys, remap[part.mref], part.fidx)


def split(part: Part) -> list[Part]:
    """The part in SHARDS shards by hook key."""
    shard = shard_of(part.keys)
    bounds = np.searchsorted(shard, np.arange(SHARDS + 1))
    return [_compact(Part(part.manifests, part.keys[a:b], part.mref[a:b], part.fidx[a:b]))
            for a, b in itertools.pairwise(bounds.tolist())]


def doc_frames(doc: dict, own_packs: set[str] | None = None) -> list[tuple[int, np.ndarray]]:
    """(frame index, hook keys) of a manifest's frames; only those in ``own_packs`` if given."""
    packs = doc["packs"]
    return [(i, frame_hooks(f[6] if len(f) > 6 else ""))
            for i, f in enumerate(doc["frames"])
            if own_packs is None or packs[f[0]] in own_packs]


# ---- writing: a publication's delta, gc's base ------------------------------------------------

def delta_key(node: str, now_ns: int | None) -> str:
    return f"{DELTAS}{manifest.stamp(now_ns)}Z-{node}-{uuid.uuid4().hex[:8]}{SUFFIX}"


def put_delta(backend: Backend, mkey: str, doc: dict, own_packs: set[str], node: str,
              now_ns: int | None) -> str | None:
    """PUT the delta of one publication (after its manifest): the hooks of the frames in packs
    this node wrote. None when there are none (a snapshot made only of shared frames)."""
    part = build([(mkey, doc_frames(doc, own_packs))])
    if not len(part.keys):
        return None
    key = delta_key(node, now_ns)
    backend.put(key, encode(part))
    return key


@dataclass
class BaseResult:
    entries: int = 0
    bytes: int = 0
    merged: int = 0  # delta objects the base replaced, deleted
    dropped: int = 0  # objects of older bases, deleted


class BaseBuilder:
    """The frames of the manifests gc reads, as they stream by: one entry per distinct frame
    (pack, offset), from the newest manifest that names it, so memory grows with the bucket's
    distinct frames, not with its snapshots (900 replicas of one model are one model)."""

    def __init__(self) -> None:
        self._frames: dict[tuple[str, int], tuple[str, int, str]] = {}  # -> (mkey, idx, table)

    def add(self, mkey: str, doc: dict) -> None:
        packs = doc["packs"]
        t = manifest.time_of(mkey)
        for i, f in enumerate(doc["frames"]):
            if len(f) <= 6 or not f[6]:
                continue
            where = (packs[f[0]], f[1])
            old = self._frames.get(where)
            if old is None or manifest.time_of(old[0]) < t:
                self._frames[where] = (mkey, i, f[6])

    def entries(self) -> list[tuple[str, list[tuple[int, np.ndarray]]]]:
        by_manifest: dict[str, list[tuple[int, np.ndarray]]] = {}
        for mkey, i, table in self._frames.values():
            by_manifest.setdefault(mkey, []).append((i, frame_hooks(table)))
        return sorted(by_manifest.items(), key=lambda e: manifest.time_of(e[0]))


def write_base(backend: Backend, live: list[tuple[str, list[tuple[int, np.ndarray]]]],
               merged: list[str], now_ns: int | None) -> BaseResult:
    """gc: a new base from the live manifests (key, doc_frames), then the pointer, then delete
    the deltas it merged (listed before the manifests were) and the objects of older bases."""
    part = build(sorted(live, key=lambda e: manifest.time_of(e[0])))
    prefix = f"{BASES}{manifest.stamp(now_ns)}Z-{uuid.uuid4().hex[:6]}/"
    res = BaseResult(entries=len(part.keys))
    for s, shard in enumerate(split(part)):
        data = encode(shard)
        backend.put(f"{prefix}{s:x}{SUFFIX}", data)
        res.bytes += len(data)
    backend.put(POINTER, json.dumps({"base": prefix, "shards": SHARDS,
                                     "merged": merged}).encode())
    for key in merged:
        backend.delete(key)
        res.merged += 1
    for o in backend.list(BASES):  # older bases only: a gc beside this one may be newer
        if o.key[:len(prefix)] < prefix:
            backend.delete(o.key)
            res.dropped += 1
    return res


# ---- reading: what a node looks up -------------------------------------------------------------

@dataclass
class Loaded:
    base: str | None = None
    shards: dict[int, Part] = field(default_factory=dict)
    deltas: list[Part] = field(default_factory=list)
    at: float = 0.0


class BucketIndex:
    """The published index as a node sees it (blocking methods: run them in a thread)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.view = Loaded()
        self.gets = 0
        self.get_bytes = 0
        self._lock = threading.Lock()

    def _get(self, key: str) -> bytes:
        data = self.backend.get(key)
        with self._lock:
            self.gets += 1
            self.get_bytes += len(data)
        return data

    def stale(self) -> bool:
        return time.monotonic() - self.view.at > RELOAD_S

    def load(self) -> None:
        """Read the pointer and every delta it has not merged; shards come when needed."""
        try:
            pointer = json.loads(self._get(POINTER))
            base, merged = str(pointer["base"]), set(pointer.get("merged", []))
        except NoSuchObject:
            base, merged = None, set()
        except (ValueError, KeyError, TypeError):
            log.warning("%s is unreadable: deduplicating against the deltas only", POINTER)
            base, merged = None, set()
        keys = [k for k in list_deltas(self.backend) if k not in merged]
        deltas = [p for p in self._fetch_parts(keys) if p is not None]
        shards = self.view.shards if base == self.view.base else {}
        self.view = Loaded(base, shards, deltas, time.monotonic())

    def _fetch_parts(self, keys: list[str]) -> list[Part | None]:
        """Each object decoded; None where it is gone (a gc merged or replaced it), an
        empty part where it is damaged (logged: the next gc writes the index anew)."""
        def one(key: str) -> Part | None:
            try:
                return decode(self._get(key), key)
            except NoSuchObject:
                return None
            except CorruptDataError as exc:
                log.warning("%s: skipped (dedup against its snapshots is lost until the next "
                            "gc rebuilds the index)", exc)
                return Part.empty()
        if len(keys) <= 1:
            return [one(k) for k in keys]
        with ThreadPoolExecutor(8, thread_name_prefix="lzfs-index") as pool:
            return list(pool.map(one, keys))

    def find(self, keys: np.ndarray) -> dict[str, set[int]]:
        """manifest key -> frame indexes named by any of the hook ``keys``, fetching the
        shards of the base they fall in on first use."""
        view = self.view
        out: dict[str, set[int]] = {}
        parts: list[Part] = list(view.deltas)
        if view.base is not None and len(keys):
            want = sorted(set(shard_of(keys).tolist()) - view.shards.keys())
            if want:
                got = self._fetch_parts([f"{view.base}{s:x}{SUFFIX}" for s in want])
                if any(p is None for p in got):  # a gc replaced the base: read it again
                    self.load()
                    if self.view.base != view.base:
                        return self.find(keys)
                view.shards.update((s, p or Part.empty()) for s, p in zip(want, got,
                                                                           strict=True))
            parts += view.shards.values()
        for part in parts:
            for mkey, fi in part.find(keys):
                out.setdefault(mkey, set()).add(fi)
        return out

    def describe(self) -> dict[str, int]:
        v = self.view
        return {"index_gets": self.gets, "index_get_bytes": self.get_bytes,
                "index_shards_loaded": len(v.shards), "index_deltas": len(v.deltas),
                "index_bytes_in_memory": sum(p.nbytes for p in [*v.deltas,
                                                                *v.shards.values()])}


def hook_keys_of(hashes: Iterable[bytes]) -> np.ndarray:
    """The hook keys among page hashes, as uint64 (pagetable.hook_key)."""
    return np.array([int.from_bytes(h[:8], "little") >> 1 for h in hashes if not h[0] & 7],
                    np.uint64)



def list_deltas(backend: Backend) -> list[str]:
    return [o.key for o in backend.list(DELTAS) if o.key.endswith(SUFFIX)]
