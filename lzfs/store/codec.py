"""Block hashing and frame encoding.

Two units, on purpose:

* a *block* is the unit of deduplication: a run of whole pages cut by the chunker, named by its
  XXH3-128 content hash (optionally keyed by a dedup domain, see :func:`block_hash`);
* a *frame* is the unit of compression and of I/O: consecutive new blocks compressed together
  as one raw LZ4 block (no size prefix, the format nvCOMP's batched LZ4 decompressor takes), at
  most ``FRAME_MAX`` bytes of raw data, so a random 4 KiB read never decompresses more than that.

Small blocks compress worse than large ones (64 KiB groups of pages: 2.81x against 3.29x for the
whole file, see docs/format.md); grouping them into frames wins most of that back without
giving up page-granular dedup.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

import lz4.block
import xxhash

from lzfs.errors import CorruptDataError

_native_decode: Callable[[bytes | memoryview, int], tuple[int, int, bytes]] | None = None
# LZFS_PYTHON_DECODE=1 decodes in Python although the native module is there: the A/B of
# docs/benchmarks.md ("Native decoding"), and a way around a suspected fault in the C code
WHY_PYTHON: str | None = "LZFS_PYTHON_DECODE is set"  # None while the native decoder is used
if not os.environ.get("LZFS_PYTHON_DECODE"):
    # lzfs/store/_codec.c, built by `pip install` (scripts/setup); without a C compiler or
    # liblz4-dev it is not there, and the Python reference decodes
    WHY_PYTHON = "lzfs/store/_codec.c was not built; run scripts/setup"
    with contextlib.suppress(ImportError):
        from lzfs.store._codec import decode_record as _native_decode
        WHY_PYTHON = None
NATIVE = _native_decode is not None

PAGE = 4096
FRAME_MAX = 256 * 1024


class Codec(IntEnum):
    RAW = 1
    LZ4 = 2


# A frame is stored incompressed unless LZ4 saves at least this fraction: an incompressible
# frame then costs one memcpy to read instead of a decompression.
MIN_SAVING = 1 / 32

HASH_LEN = 16


def block_hash(data: bytes | memoryview, seed: int = 0) -> bytes:
    """XXH3-128 of a block. ``seed`` is the store's dedup-domain key: blocks hashed under
    different seeds never match, so tenants that must not share cannot probe each other."""
    return xxhash.xxh3_128_digest(data, seed)


def payload_checksum(payload: bytes | bytearray | memoryview) -> int:
    return xxhash.xxh3_64_intdigest(payload)


def _looks_incompressible(raw: bytes | bytearray | memoryview) -> bool:
    """Compress four pages sampled across the frame: if LZ4 saves nothing on them, the frame
    is almost surely weights or other high-entropy data, and compressing it whole would cost
    ~0.7 s per GiB for nothing (measured on float16 weights: ratio 1.00 at 1.4 GB/s)."""
    n = len(raw)
    if n < 8 * PAGE:
        return False
    view = memoryview(raw)
    sample = b"".join(view[i:i + PAGE] for i in (0, n // 4, n // 2, (3 * n) // 4 - PAGE))
    return len(lz4.block.compress(sample, store_size=False)) > len(sample) * (1 - MIN_SAVING)


def compress(raw: bytes | bytearray | memoryview) -> tuple[Codec, bytes | bytearray | memoryview]:
    """(codec, payload); a RAW payload is ``raw`` itself, not a copy."""
    if _looks_incompressible(raw):
        return Codec.RAW, raw
    packed = lz4.block.compress(raw, store_size=False)
    if len(packed) <= len(raw) * (1 - MIN_SAVING):
        return Codec.LZ4, packed
    return Codec.RAW, raw


def decompress(codec: int, payload: bytes | memoryview, raw_len: int) -> bytes:
    if codec == Codec.RAW:
        if len(payload) != raw_len:
            raise CorruptDataError(f"raw frame is {len(payload)} bytes, expected {raw_len}")
        return bytes(payload)  # no copy of a bytes; the frame cache keeps exact bytes
    if codec == Codec.LZ4:
        try:
            out = lz4.block.decompress(payload, uncompressed_size=raw_len)
        except lz4.block.LZ4BlockError as exc:
            raise CorruptDataError(f"LZ4 frame does not decode: {exc}") from None
        if len(out) != raw_len:
            raise CorruptDataError(f"LZ4 frame decodes to {len(out)} bytes, expected {raw_len}")
        return out
    raise CorruptDataError(f"unknown codec {codec}")


# ---- frame records, as laid down in pack files (docs/format.md) ------------------------------

FRAME_MAGIC = b"LZFR"
FRAME_VERSION = 1
# magic, version, codec, block count, raw length, stored (payload) length, payload checksum
_FRAME_HEAD = struct.Struct("<4sBBHIIQ")
# per block: length, content hash
_FRAME_ENTRY = struct.Struct(f"<I{HASH_LEN}s")
_PAGE_ENTRY = struct.pack("<I", PAGE)  # a whole page's entry is this, then its hash


@dataclass(frozen=True, slots=True)
class FrameHeader:
    codec: int
    raw_len: int
    stored_len: int
    checksum: int
    blocks: tuple[tuple[int, bytes], ...]  # (length, hash) in frame order

    @property
    def header_len(self) -> int:
        return _FRAME_HEAD.size + _FRAME_ENTRY.size * len(self.blocks)

    @property
    def record_len(self) -> int:
        return self.header_len + self.stored_len


def encode_frame_parts(raw: bytes | bytearray | memoryview, table: list[tuple[int, bytes]],
                       compressed: bool = True
                       ) -> tuple[FrameHeader, tuple[bytes, bytes | bytearray | memoryview]]:
    """One frame record as (header and block table, payload), not joined: the write path
    hands both to one ``pwritev``, and an incompressible frame's payload is ``raw`` itself,
    so a frame of weights is never copied between the request buffer and the pack file.
    ``table`` lists (length, hash) of the blocks that make up ``raw``, in order. With
    ``compressed`` False the frame is stored raw without trying (a staged frame)."""
    if len(raw) > 0xFFFFFFFF or len(table) > 0xFFFF:
        raise ValueError("frame too large")
    if sum(n for n, _ in table) != len(raw):
        raise ValueError("block table does not add up to the frame's raw length")
    codec, payload = compress(raw) if compressed else (Codec.RAW, raw)
    head = FrameHeader(
        codec=codec,
        raw_len=len(raw),
        stored_len=len(payload),
        checksum=payload_checksum(payload),
        blocks=tuple(table),
    )
    header = b"".join([
        _FRAME_HEAD.pack(FRAME_MAGIC, FRAME_VERSION, codec, len(table), head.raw_len,
                         head.stored_len, head.checksum),
        *[_PAGE_ENTRY + h if n == PAGE else _FRAME_ENTRY.pack(n, h) for n, h in table],
    ])
    return head, (header, payload)


def parse_frame_header(buf: bytes | memoryview) -> FrameHeader:
    """Parse the header and block table at the start of ``buf``.

    Raises CorruptDataError when ``buf`` does not hold a well-formed header (too short, wrong
    magic or version, a block table that does not add up)."""
    if len(buf) < _FRAME_HEAD.size:
        raise CorruptDataError("truncated frame header")
    magic, version, codec, count, raw_len, stored_len, checksum = _FRAME_HEAD.unpack_from(buf)
    if magic != FRAME_MAGIC:
        raise CorruptDataError("bad frame magic")
    if version != FRAME_VERSION:
        raise CorruptDataError(f"frame version {version} is not supported")
    if codec not in (Codec.RAW, Codec.LZ4):
        raise CorruptDataError(f"unknown codec {codec}")
    if count == 0:
        raise CorruptDataError("frame holds no blocks")  # never written
    if raw_len > FRAME_MAX:  # never written; decoding it would allocate up to 4 GiB
        raise CorruptDataError(f"frame raw length {raw_len} exceeds {FRAME_MAX}")
    end = _FRAME_HEAD.size + count * _FRAME_ENTRY.size
    if len(buf) < end:
        raise CorruptDataError("truncated frame block table")
    # one C loop over the table, not a Python call per entry: a restore parses ~4,000 of
    # them per GiB on its decoding threads, whose GIL-held time is what keeps them apart
    blocks = tuple(_FRAME_ENTRY.iter_unpack(memoryview(buf)[_FRAME_HEAD.size:end]))
    if sum(n for n, _ in blocks) != raw_len:
        raise CorruptDataError("frame block table does not add up to its raw length")
    return FrameHeader(codec, raw_len, stored_len, checksum, blocks)


def decode_frame(record: bytes | memoryview, seed: int = 0) -> tuple[FrameHeader, bytes]:
    """Decode a whole frame record and verify it: payload checksum, then every block's content
    hash. Any mismatch raises CorruptDataError; wrong bytes are never returned."""
    head = parse_frame_header(record)
    payload = memoryview(record)[head.header_len:]  # RAW: copied into bytes by decompress
    if len(payload) != head.stored_len:
        raise CorruptDataError(
            f"frame payload is {len(payload)} bytes, header says {head.stored_len}")
    if payload_checksum(payload) != head.checksum:
        raise CorruptDataError("frame payload checksum mismatch")
    raw = decompress(head.codec, payload, head.raw_len)
    view = memoryview(raw)
    pos = 0
    digest = xxhash.xxh3_128_digest
    for n, h in head.blocks:
        if digest(view[pos:pos + n], seed) != h:
            raise CorruptDataError(f"block at frame offset {pos} fails its content hash")
        pos += n
    return head, raw


def decode_record(record: bytes | memoryview, seed: int = 0) -> tuple[int, int, bytes]:
    """(raw length, stored length, raw bytes) of a frame record, verified as by
    :func:`decode_frame`, which it is the fast form of: the read path needs no block table, and
    the native decoder checks and decompresses with the GIL released, so the decoding threads
    run beside pyfuse3's request thread instead of taking turns with it."""
    if _native_decode is None:
        head, raw = decode_frame(record, seed)
        return head.raw_len, head.stored_len, raw
    try:
        return _native_decode(record, seed)
    except ValueError as exc:
        raise CorruptDataError(str(exc)) from None
