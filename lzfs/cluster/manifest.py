"""Snapshot manifests: everything another node needs to mount one snapshot directory.

A manifest is one immutable object, written with a single PUT once every pack it names is in
the object store, so a snapshot is either wholly visible or not at all. Layout (docs/cluster.md):

    8 bytes   magic "LZFSMAN" + format version (1)
    8 bytes   XXH3-64 of the body, little-endian
    body      zlib-compressed JSON: name, node, time, chunking config, pack keys, frames,
              blocks (content hash, frame, offset in frame, length), entries (path, mode,
              owner, mtime, size, symlink target, extents as [offset, length, block index])
              and figures (files, logical, referenced, distinct and stored bytes)

Frames carry their pack object key and offset, so a reader fetches frames by ranged GET without
any index of the pack; blocks carry their hash, so a writer on another node deduplicates
against them without reading a byte of data.
"""

from __future__ import annotations

import json
import stat
import struct
import time
import uuid
import zlib
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

import xxhash

from ..errors import CorruptDataError
from ..namespace import ROOT_INODE, Namespace

MAGIC = b"LZFSMAN\x01"
FORMAT = "lzfs-manifest/1"
PREFIX = "snapshots/"
SUFFIX = ".lzm"


def encode(doc: dict) -> bytes:
    body = zlib.compress(json.dumps(doc, separators=(",", ":")).encode(), 6)
    return MAGIC + struct.pack("<Q", xxhash.xxh3_64_intdigest(body)) + body


def decode(data: bytes, key: str) -> dict:
    if data[:8] != MAGIC:
        raise CorruptDataError(f"manifest {key}: not an lzfs manifest (or a newer format: "
                               f"upgrade lzfs)")
    body = data[16:]
    if struct.unpack("<Q", data[8:16])[0] != xxhash.xxh3_64_intdigest(body):
        raise CorruptDataError(f"manifest {key}: checksum mismatch")
    try:
        doc = json.loads(zlib.decompress(body))
    except (zlib.error, ValueError) as exc:
        raise CorruptDataError(f"manifest {key}: does not decode: {exc}") from None
    if doc.get("format") != FORMAT:
        raise CorruptDataError(f"manifest {key}: unknown format {doc.get('format')!r}")
    return doc


def new_key(name: bytes, node: str) -> str:
    """A name nobody else can pick: time first (so the newest sorts last), node, random."""
    us = time.time_ns() // 1000  # one clock read: seconds and fraction always agree
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(us // 1_000_000)) + f".{us % 1_000_000:06d}"
    return f"{PREFIX}{quote(name, safe='')}/{stamp}Z-{node}-{uuid.uuid4().hex[:8]}{SUFFIX}"


def name_of(key: str) -> bytes | None:
    """The snapshot name a manifest key publishes, or None for anything else."""
    if not key.startswith(PREFIX) or not key.endswith(SUFFIX):
        return None
    part = key[len(PREFIX):].split("/")
    return unquote(part[0]).encode("utf-8", "surrogateescape") if len(part) == 2 else None


def newest_per_name(keys: list[str]) -> dict[bytes, str]:
    """Snapshot name -> its newest manifest key (keys sort by time within a name)."""
    out: dict[bytes, str] = {}
    for k in sorted(keys):
        n = name_of(k)
        if n is not None:
            out[n] = k
    return out


# ---- building a manifest from the working store -------------------------------------------

@dataclass
class Snapshot:
    """A snapshot directory as rows, with packs still as local pack ids."""
    name: bytes
    entries: list[dict] = field(default_factory=list)
    frames: dict[int, tuple] = field(default_factory=dict)   # frame id -> (pack, off, rlen, ...)
    blocks: dict[int, tuple] = field(default_factory=dict)   # block id -> (hash, frame, foff, len)

    @property
    def packs(self) -> set[int]:
        return {f[0] for f in self.frames.values()}

    def doc(self, pack_keys: dict[int, str], node: str, config: dict) -> dict:
        packs = sorted({pack_keys[p] for p in self.packs})
        pidx = {k: i for i, k in enumerate(packs)}
        fidx = {f: i for i, f in enumerate(self.frames)}
        bidx = {b: i for i, b in enumerate(self.blocks)}
        frames = [[pidx[pack_keys[p]], off, rlen, st, raw, codec]
                  for p, off, rlen, st, raw, codec in self.frames.values()]
        blocks = [[h.hex(), fidx[fr], foff, n] for h, fr, foff, n in self.blocks.values()]
        entries = []
        logical = referenced = 0
        for e in self.entries:
            e = dict(e)
            e["x"] = [[off, n, bidx[b]] for off, n, b in e.get("x", [])]
            referenced += sum(x[1] for x in e["x"])
            if stat.S_ISREG(e["m"]):
                logical += e["s"]
            entries.append(e)
        distinct = sum(b[3] for b in blocks)
        stored = sum(b[3] * f[2] / f[4] for b in blocks for f in (frames[b[1]],) if f[4])
        return {"format": FORMAT, "name": self.name.decode("utf-8", "surrogateescape"),
                "node": node, "created": time.time(), "config": config, "packs": packs,
                "frames": frames, "blocks": blocks, "entries": entries,
                "figures": {"files": sum(1 for e in entries if stat.S_ISREG(e["m"])),
                            "logical": logical, "referenced": referenced,
                            "distinct": distinct, "stored": round(stored)}}


def collect(db, dir_ino: int, name: bytes) -> Snapshot:
    """Read one snapshot directory's tree and block maps from the database (DB thread, no
    checkpoint: the result is one consistent moment)."""
    snap = Snapshot(name)
    stack = [(dir_ino, "")]
    while stack:
        parent, base = stack.pop()
        for ename, ino in db.execute("SELECT name, ino FROM dentries WHERE parent=? "
                                     "ORDER BY id", (parent,)).fetchall():
            mode, uid, gid, size, mtime, target = db.execute(
                "SELECT mode, uid, gid, size, mtime_ns, target FROM inodes WHERE id=?",
                (ino,)).fetchone()
            path = f"{base}{ename.decode('utf-8', 'surrogateescape')}"
            e: dict = {"p": path, "m": mode, "u": uid, "g": gid, "t": mtime, "s": size}
            if target is not None:
                e["l"] = bytes(target).decode("utf-8", "surrogateescape")
            if stat.S_ISDIR(mode):
                stack.append((ino, path + "/"))
            elif stat.S_ISREG(mode):
                rows = db.execute(
                    "SELECT e.off, e.len, b.id, b.hash, b.frame, b.foff, b.len, f.pack, f.off, "
                    "f.rlen, f.stored, f.raw, f.codec FROM extents e JOIN blocks b ON "
                    "b.id = e.block JOIN frames f ON f.id = b.frame WHERE e.ino=? "
                    "ORDER BY e.off", (ino,)).fetchall()
                e["x"] = []
                for off, n, bid, h, fr, foff, blen, *floc in rows:
                    e["x"].append((off, n, bid))
                    snap.blocks[bid] = (bytes(h), fr, foff, blen)
                    snap.frames[fr] = tuple(floc)
            snap.entries.append(e)
    return snap


def digest(snap: Snapshot) -> str:
    """What the snapshot holds (names, attributes, block hashes), independent of where the
    blocks are stored and when: equal digests mean publishing again would change nothing."""
    h = xxhash.xxh3_128()
    for e in sorted(snap.entries, key=lambda e: e["p"]):
        h.update(json.dumps([e["p"], e["m"], e["s"], e.get("l"),
                             [(o, n, snap.blocks[b][0].hex()) for o, n, b in e.get("x", [])]]
                            ).encode())
    return h.hexdigest()


# ---- installing a manifest into the working store -----------------------------------------

def install(db, ns: Namespace, doc: dict, pack_id: dict[str, int]) -> int:
    """Create the snapshot's tree under the root from a manifest, sharing blocks the store
    already holds. ``pack_id`` maps every pack key of the manifest to a pack id. Returns the
    snapshot directory's inode."""
    name = doc["name"].encode("utf-8", "surrogateescape")
    frame_ids: dict[int, int] = {}
    block_ids: list[int] = []
    frames = doc["frames"]
    for h_hex, fi, foff, n in doc["blocks"]:
        h = bytes.fromhex(h_hex)
        row = db.execute("SELECT id FROM blocks WHERE hash=?", (h,)).fetchone()
        if row is None:
            if fi not in frame_ids:
                p, off, rlen, st, raw, codec = frames[fi]
                pid = pack_id[doc["packs"][p]]
                fr = db.execute("SELECT id FROM frames WHERE pack=? AND off=?",
                                (pid, off)).fetchone()
                frame_ids[fi] = fr[0] if fr else db.execute(
                    "INSERT INTO frames(pack, off, rlen, stored, raw, codec) VALUES "
                    "(?,?,?,?,?,?)", (pid, off, rlen, st, raw, codec)).lastrowid
            row = (db.execute("INSERT INTO blocks(hash, frame, foff, len, refs) VALUES "
                              "(?,?,?,?,0)", (h, frame_ids[fi], foff, n)).lastrowid,)
        block_ids.append(row[0])
    top = ns.create(ROOT_INODE, name, stat.S_IFDIR | 0o755, 0, 0)
    inos = {"": top.id}
    for e in sorted(doc["entries"], key=lambda e: e["p"].count("/")):
        parent_path, _, leaf = e["p"].rpartition("/")
        target = e["l"].encode("utf-8", "surrogateescape") if "l" in e else None
        node = ns.create(inos[parent_path], leaf.encode("utf-8", "surrogateescape"), e["m"],
                         e["u"], e["g"], target=target)
        inos[e["p"]] = node.id
        exts = [(node.id, off, n, block_ids[bi]) for off, n, bi in e.get("x", [])]
        if exts:
            db.executemany("INSERT INTO extents(ino, off, len, block) VALUES (?,?,?,?)", exts)
            db.executemany("UPDATE blocks SET refs = refs + 1 WHERE id=?",
                           [(x[3],) for x in exts])
        stored = 0.0
        for b in {x[3] for x in exts}:
            n, rlen, raw = db.execute("SELECT b.len, f.rlen, f.raw FROM blocks b JOIN frames f "
                                      "ON f.id = b.frame WHERE b.id=?", (b,)).fetchone()
            stored += n * rlen / raw if raw else 0.0
        ns.set_attrs(node.id, size=e["s"] if target is None else len(target),
                     stored=int(stored), mtime_ns=e["t"])
    return top.id


def remove_tree(db, ns: Namespace, dir_ino: int) -> None:
    """Drop a snapshot directory and everything under it, giving back its block references
    (used at mount, before the kernel knows any inode, to replace an older imported version)."""
    inos, stack = [], [dir_ino]
    while stack:
        d = stack.pop()
        inos.append(d)
        for (ino,) in db.execute("SELECT ino FROM dentries WHERE parent=?", (d,)).fetchall():
            stack.append(ino)
    for ino in inos:
        db.execute("UPDATE blocks SET refs = refs - (SELECT COUNT(*) FROM extents "
                   "WHERE ino=? AND block=blocks.id) WHERE id IN "
                   "(SELECT block FROM extents WHERE ino=?)", (ino, ino))
        db.execute("DELETE FROM extents WHERE ino=?", (ino,))
        db.execute("DELETE FROM dentries WHERE ino=? OR parent=?", (ino, ino))
        db.execute("DELETE FROM inodes WHERE id=?", (ino,))
    db.execute("UPDATE inodes SET nlink = nlink - 1 WHERE id=?", (ROOT_INODE,))
