"""Where file data is cut: at file pages.

Dedup works on single pages: CRIU's pages images are page-aligned, so a page of memory is a
4 KiB page of the file wherever it sits, and a page that did not change between two dumps is
the same 4 KiB of bytes in both. No content-defined cutting is needed for shifts (pages
inserted or removed earlier in a pages image move whole pages, never bytes inside them), and
a single changed page costs one page, not a 16-page block (docs/format.md has the numbers that
made us drop the content-defined 16-page blocks of format 1).

All-zero pages are never stored: they come back as holes. A file's unaligned head (a write
batch that starts inside a page) and its short tail (protobuf images) are pieces of their own.

The zero test is vectorised with numpy (telling zero pages by their hash instead was slower:
measured); the content hash is XXH3-128 per page (0.24 us per page here, against 4.6 us for
one SQLite index insert: hashing every page is cheap, indexing every page is not, see
store/index.py).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import xxhash

from lzfs.store.codec import PAGE, block_hash

_WORDS = PAGE // 8


class Piece(NamedTuple):
    """(start, length, hash): offset in the buffer handed to split(), length, and the content
    hash, None for an all-zero page (never stored). split() returns plain tuples of this
    shape (a NamedTuple per page costs more than hashing the page); Piece names them."""
    start: int
    length: int
    hash: bytes | None


def zero_pages(buf: bytes | bytearray | memoryview, start: int, npages: int) -> np.ndarray:
    """Which of the ``npages`` whole pages of ``buf`` from ``start`` are all zero."""
    words = np.frombuffer(buf, dtype="<u8", count=npages * _WORDS, offset=start)
    return np.logical_not(words.reshape(npages, _WORDS).any(axis=1))


def split(buf: bytes | bytearray | memoryview, base: int, final: bool, seed: int = 0
          ) -> tuple[list[tuple[int, int, bytes | None]], int]:
    """Cut ``buf``, which holds the file's bytes from absolute offset ``base``, at file pages.

    Returns the pieces and how many bytes of ``buf`` they cover. Unless ``final``, a trailing
    partial page is left out (the next write may complete it), so the caller keeps
    ``buf[consumed:]`` for next time."""
    n = len(buf)
    view = memoryview(buf)
    pieces: list[tuple[int, int, bytes | None]] = []
    head = min((-base) % PAGE, n)
    if head and (final or head == (-base) % PAGE):
        pieces.append(_piece(view, 0, head, seed))
    elif head:  # the batch ends inside its first page: wait for the rest of it
        return [], 0
    npages = (n - head) // PAGE
    if npages:
        zero = zero_pages(buf, head, npages).tolist()
        h = xxhash.xxh3_128_digest  # codec.block_hash, without a Python call per page
        pieces.extend([(s, PAGE, None if z else h(view[s:s + PAGE], seed))
                       for s, z in zip(range(head, head + npages * PAGE, PAGE), zero,
                                       strict=True)])
    consumed = head + npages * PAGE
    if final and consumed < n:
        pieces.append(_piece(view, consumed, n - consumed, seed))
        consumed = n
    return pieces, consumed


def _piece(view: memoryview, start: int, length: int, seed: int
           ) -> tuple[int, int, bytes | None]:
    part = view[start:start + length]
    return (start, length, None if part == bytes(length) else block_hash(part, seed))


def spans(buf: bytes | bytearray | memoryview, base: int, final: bool, limit: int
          ) -> tuple[list[tuple[int, int]], int]:
    """The non-zero stretches of ``buf`` (file bytes from ``base``) as (start, length), each at
    most ``limit`` bytes, cut at file pages, zero pages left out; and how many bytes they
    cover, as split() counts them. For staging (store.stage): no hash, no per-page object,
    only a numpy pass, so a dump that outruns the encoder costs a copy and little else."""
    n = len(buf)
    head = min((-base) % PAGE, n)
    if head and not final and head < (-base) % PAGE:
        return [], 0
    npages = (n - head) // PAGE
    consumed = n if final else head + npages * PAGE
    edges: list[tuple[int, int]] = []  # non-zero stretches, before the limit is applied
    if head and memoryview(buf)[:head] != bytes(head):
        edges.append((0, head))
    if npages:
        zero = zero_pages(buf, head, npages)
        flips = np.flatnonzero(np.diff(np.concatenate(([True], zero, [True])).astype(np.int8)))
        for a, b in zip(flips[0::2].tolist(), flips[1::2].tolist(), strict=True):
            edges.append((head + a * PAGE, (b - a) * PAGE))
    tail = head + npages * PAGE
    if final and tail < n and memoryview(buf)[tail:] != bytes(n - tail):
        edges.append((tail, n - tail))
    out: list[tuple[int, int]] = []
    for start, length in edges:
        if out and out[-1][0] + out[-1][1] == start:  # the head, the tail: join their neighbours
            start, length = out[-1][0], out[-1][1] + length
            out.pop()
        while length > limit:
            out.append((start, limit))
            start, length = start + limit, length - limit
        out.append((start, length))
    return out, consumed
