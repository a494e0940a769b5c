"""A frame's page table: what each of its pages is (offset in the frame's raw data and
XXH3-128 hash), packed as it is stored in ``frames.pages`` and in manifests, and which of
those pages are hooks of the sparse page index (index.py). Pure functions over bytes: the
schema upgrade (db.py), the index, manifests and fsck all read and write tables the same way.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

ENTRY = struct.Struct("<I16s")  # one page table entry: offset in the frame's raw data, hash
HOOK_MASK = 7                   # a page is a hook when hash[0] & HOOK_MASK == 0: 1 in 8


def hook_key(h: bytes) -> int | None:
    """The hook key of a page hash (a 63-bit SQLite integer), or None when it is not one."""
    if h[0] & HOOK_MASK:
        return None
    return int.from_bytes(h[:8], "little") >> 1


_FOFF = [struct.pack("<I", i * 4096) for i in range(65)]  # page offsets in a frame, packed


def encode_table(entries: Iterable[tuple[int, bytes]]) -> bytes:
    return b"".join([_FOFF[foff >> 12] + h if not foff & 4095 and foff < 65 * 4096
                     else ENTRY.pack(foff, h) for foff, h in entries])


def decode_table(blob: bytes | None) -> list[tuple[int, bytes]]:
    if not blob:
        return []
    return [ENTRY.unpack_from(blob, i) for i in range(0, len(blob) - ENTRY.size + 1, ENTRY.size)]


def hook_rows(frame: int, entries: Iterable[tuple[int, bytes]]) -> list[tuple[int, int]]:
    """(hook key, frame) for each page of a frame's table that is a hook."""
    return [(k, frame) for _, h in entries if (k := hook_key(h)) is not None]
