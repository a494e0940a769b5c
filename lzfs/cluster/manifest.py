"""Snapshot manifests: everything another node needs to mount one snapshot directory.

A manifest is one immutable object, written with a single PUT once every pack it names is in
the object store, so a snapshot is either wholly visible or not at all. Layout (docs/cluster.md):

    8 bytes   magic "LZFSMAN" + format version (2; 1 is still read)
    8 bytes   XXH3-64 of the body, little-endian
    body      zlib-compressed JSON: name, node, time, config, pack keys, frames (pack, offset,
              record, stored and raw length, codec, page table in base64), entries (path,
              mode, owner, mtime, size, symlink target, runs as [offset, length, frame index,
              offset in the frame]) and figures (files, logical, referenced, distinct and
              stored bytes)

Frames carry their pack object key and offset, so a reader fetches frames by ranged GET without
any index of the pack; they carry their page tables (the store's own, store/index.py), so a
writer on another node deduplicates against them without reading a byte of data. Format 1
named content-defined blocks instead of runs; installing one turns its blocks into runs.
"""

from __future__ import annotations

import base64
import json
import stat
import struct
import time
import uuid
import zlib
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

import xxhash

from lzfs.errors import CorruptDataError
from lzfs.store.blockmap import Run
from lzfs.store.namespace import ROOT_INODE, Namespace
from lzfs.store.pagetable import decode_table, encode_table
from lzfs.store.store import Store

MAGIC = b"LZFSMAN\x02"
MAGIC_1 = b"LZFSMAN\x01"
FORMAT = "lzfs-manifest/2"
FORMAT_1 = "lzfs-manifest/1"
PREFIX = "snapshots/"
SUFFIX = ".lzm"
TOMBSTONE = ".rm"  # a deletion: the name's newest key being one hides every older manifest


def encode(doc: dict) -> bytes:
    body = zlib.compress(json.dumps(doc, separators=(",", ":")).encode(), 6)
    return MAGIC + struct.pack("<Q", xxhash.xxh3_64_intdigest(body)) + body


def decode(data: bytes, key: str) -> dict:
    if data[:8] not in (MAGIC, MAGIC_1):
        raise CorruptDataError(f"manifest {key}: not an lzfs manifest (or a newer format: "
                               f"upgrade lzfs)")
    body = data[16:]
    if struct.unpack("<Q", data[8:16])[0] != xxhash.xxh3_64_intdigest(body):
        raise CorruptDataError(f"manifest {key}: checksum mismatch")
    try:
        doc = json.loads(zlib.decompress(body))
    except (zlib.error, ValueError) as exc:
        raise CorruptDataError(f"manifest {key}: does not decode: {exc}") from None
    if doc.get("format") not in (FORMAT, FORMAT_1):
        raise CorruptDataError(f"manifest {key}: unknown format {doc.get('format')!r}")
    return doc


def stamp(t_ns: int | None = None) -> str:
    """UTC time as keys carry it: sorts as the time does, to the microsecond."""
    us = (time.time_ns() if t_ns is None else t_ns) // 1000  # one clock read
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(us // 1_000_000)) + f".{us % 1_000_000:06d}"


def new_key(name: bytes, node: str, suffix: str = SUFFIX, now_ns: int | None = None) -> str:
    """A name nobody else can pick: time first (so the newest sorts last), node, random.
    ``suffix`` TOMBSTONE makes the key of a deletion. ``now_ns``: the object store's time
    (clock.py; nodes' clocks may disagree), this process's clock when not given."""
    return (f"{PREFIX}{quote(name, safe='')}/{stamp(now_ns)}Z-{node}-{uuid.uuid4().hex[:8]}"
            f"{suffix}")


def entry_of(key: str) -> tuple[bytes, bool] | None:
    """(snapshot name, is a deletion) of a manifest or tombstone key, None for anything else."""
    if not key.startswith(PREFIX) or not key.endswith((SUFFIX, TOMBSTONE)):
        return None
    part = key[len(PREFIX):].split("/")
    if len(part) != 2:
        return None
    return unquote(part[0]).encode("utf-8", "surrogateescape"), key.endswith(TOMBSTONE)


def name_of(key: str) -> bytes | None:
    """The snapshot name a manifest key publishes, or None for anything else."""
    e = entry_of(key)
    return e[0] if e is not None and not e[1] else None


def is_tombstone(key: str) -> bool:
    return key.endswith(TOMBSTONE)


def time_of(key: str) -> str:
    """The time part of a manifest or tombstone key (sorts as publication time)."""
    return key.rpartition("/")[2][:22]


def newest_per_name(keys: list[str]) -> dict[bytes, str]:
    """Snapshot name -> its newest manifest or tombstone key (keys of one name sort by time)."""
    out: dict[bytes, str] = {}
    for k in sorted(keys):
        e = entry_of(k)
        if e is not None:
            out[e[0]] = k
    return out


# ---- building a manifest from the working store -------------------------------------------

@dataclass
class Snapshot:
    """A snapshot directory as rows, with packs still as local pack ids."""
    name: bytes
    entries: list[dict] = field(default_factory=list)
    # frame id -> (pack, off, rlen, stored, raw, codec, page table)
    frames: dict[int, tuple] = field(default_factory=dict)

    @property
    def packs(self) -> set[int]:
        return {f[0] for f in self.frames.values()}

    def doc(self, pack_keys: dict[int, str], node: str, config: dict) -> dict:
        packs = sorted({pack_keys[p] for p in self.packs})
        pidx = {k: i for i, k in enumerate(packs)}
        fidx = {f: i for i, f in enumerate(self.frames)}
        frames = [[pidx[pack_keys[p]], off, rlen, st, raw, codec,
                   base64.b64encode(table or b"").decode()]
                  for p, off, rlen, st, raw, codec, table in self.frames.values()]
        entries = []
        logical = referenced = 0
        for e in self.entries:
            e = dict(e)
            e["x"] = [[off, n, fidx[fr], foff] for off, n, fr, foff in e.get("x", [])]
            referenced += sum(x[1] for x in e["x"])
            if stat.S_ISREG(e["m"]):
                logical += e["s"]
            entries.append(e)
        distinct = sum(f[4] for f in frames)
        stored = sum(f[2] for f in frames)
        return {"format": FORMAT, "name": self.name.decode("utf-8", "surrogateescape"),
                "node": node, "created": time.time(), "config": config, "packs": packs,
                "frames": frames, "entries": entries,
                "figures": {"files": sum(1 for e in entries if stat.S_ISREG(e["m"])),
                            "logical": logical, "referenced": referenced,
                            "distinct": distinct, "stored": round(stored)}}


def collect(store: Store, dir_ino: int, name: bytes) -> Snapshot:
    """Read one snapshot directory's tree and block maps from the database (DB thread, no
    checkpoint: the result is one consistent moment)."""
    snap = Snapshot(name)
    for path, node in store.ns.walk(dir_ino):
        e: dict = {"p": path, "m": node.mode, "u": node.uid, "g": node.gid,
                   "t": node.mtime_ns, "s": node.size}
        if node.target is not None:
            e["l"] = bytes(node.target).decode("utf-8", "surrogateescape")
        if node.is_reg:
            runs = store.maps.load(node.id)
            e["x"] = [tuple(r) for r in runs]
            for fr in {r.frame for r in runs} - snap.frames.keys():
                row = store.frames.row(fr)
                if row is None:
                    raise CorruptDataError(f"{path}: its frame {fr} is lost; run lzfs fsck")
                snap.frames[fr] = tuple(row)
        snap.entries.append(e)
    return snap


def digest(snap: Snapshot) -> str:
    """What the snapshot holds (names, attributes, page hashes), independent of where the
    pages are stored and when: equal digests mean publishing again would change nothing."""
    tables = {f: decode_table(t[6]) for f, t in snap.frames.items()}
    h = xxhash.xxh3_128()
    for e in sorted(snap.entries, key=lambda e: e["p"]):
        runs = []
        for o, n, fr, foff in e.get("x", []):
            hashes = [hh.hex() for fo, hh in tables[fr] if foff <= fo < foff + n]
            runs.append((o, n, hashes or [fr, foff]))
        h.update(json.dumps([e["p"], e["m"], e["s"], e.get("l"), runs]).encode())
    return h.hexdigest()


# ---- installing a manifest into the working store -----------------------------------------

def frames_and_tables(doc: dict) -> tuple[list[list], list[bytes | None]]:
    """(frames as [pack, off, rlen, stored, raw, codec], page table per frame), and each
    entry's "x" turned into runs [off, len, frame index, foff]: format 2 as it is, format 1
    from its content-defined blocks (a one-page block is a page of the table)."""
    if doc["format"] == FORMAT:
        frames = [f[:6] for f in doc["frames"]]
        tables: list[bytes | None] = [base64.b64decode(f[6]) if len(f) > 6 and f[6] else None
                                      for f in doc["frames"]]
        return frames, tables
    blocks = doc["blocks"]
    pages: dict[int, list[tuple[int, bytes]]] = {}
    for h_hex, fi, foff, n in blocks:
        if n == 4096 and len(h_hex) == 32:
            pages.setdefault(fi, []).append((foff, bytes.fromhex(h_hex)))
    for e in doc["entries"]:
        e["x"] = [[off, n, blocks[bi][1], blocks[bi][2]] for off, n, bi in e.get("x", [])]
    frames = [f[:6] for f in doc["frames"]]
    return frames, [encode_table(sorted(pages[i])) if i in pages else None
                    for i in range(len(frames))]


def install(store: Store, ns: Namespace, doc: dict, pack_id: dict[str, int],
            top: int | None = None) -> int:
    """Create the snapshot's tree under the root from a manifest, sharing frames the store
    already holds. ``pack_id`` maps every pack key of the manifest to a pack id. ``top`` is
    an empty directory to fill (a snapshot known by name until now), else it is created.
    Returns the snapshot directory's inode."""
    name = doc["name"].encode("utf-8", "surrogateescape")
    frames, tables = frames_and_tables(doc)
    frame_ids: list[int] = []
    for (p, off, rlen, st, raw, codec), table in zip(frames, tables, strict=True):
        pid = pack_id[doc["packs"][p]]
        fid = store.frames.at(pid, off)
        if fid is None:
            fid = store.add_frame(pid, off, rlen, st, raw, codec, decode_table(table))
        frame_ids.append(fid)
    if top is None:
        top = ns.create(ROOT_INODE, name, stat.S_IFDIR | 0o755, 0, 0).id
    inos = {"": top}
    for e in sorted(doc["entries"], key=lambda e: e["p"].count("/")):
        parent_path, _, leaf = e["p"].rpartition("/")
        target = e["l"].encode("utf-8", "surrogateescape") if "l" in e else None
        node = ns.create(inos[parent_path], leaf.encode("utf-8", "surrogateescape"), e["m"],
                         e["u"], e["g"], target=target)
        inos[e["p"]] = node.id
        runs = [Run(off, n, frame_ids[fi], foff) for off, n, fi, foff in e.get("x", [])]
        store.maps.insert(node.id, runs)
        ns.set_attrs(node.id, size=e["s"] if target is None else len(target),
                     stored=int(store.maps.coverage(runs).stored), mtime_ns=e["t"])
    return top


def remove_tree(store: Store, ns: Namespace, dir_ino: int) -> None:
    """Drop a snapshot directory and everything under it, giving back its frame references
    (used at mount, before the kernel knows any inode, to replace an older imported version)."""
    ns.remove_tree(dir_ino, store.maps.purge)
