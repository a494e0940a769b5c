"""Page-granular, content-defined cut points.

Blocks are runs of whole pages. Whether a block ends after a page is decided by that page's own
content (its 64-bit fingerprint), never by its offset, so the same pages produce the same blocks
wherever they sit in a file: pages inserted or removed earlier in a pages image, another VMA
order, other processes' pages in between. After a shift the cuts fall back into step at the
first boundary page, which is on average ``avg_pages`` pages later.

All-zero pages are never stored: a zero page always ends the block before it, and runs of
them are returned as holes.

The per-page work is vectorised with numpy: a page's fingerprint is the dot product of its 512
little-endian u64 words with fixed odd constants (mod 2^64), whose top bits decide the cut. A
Python loop calling XXH3 per page cost 0.1-0.3 s per GiB and held the GIL against the FUSE
thread; the dot product runs at memory speed and the loop below visits only cut points. The
constants are part of the store format: changing them changes where blocks are cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .codec import PAGE

_WORDS = PAGE // 8
_K = np.random.default_rng(0x6C7A6673).integers(0, 2**63, size=_WORDS, dtype=np.uint64)
_K |= np.uint64(1)


class Piece(NamedTuple):
    start: int  # offset in the buffer handed to cut()
    length: int
    zero: bool


@dataclass(frozen=True)
class Chunker:
    avg_pages: int = 16  # a power of two: the cut probability is 1/avg_pages per page
    max_pages: int = 64  # hard upper bound; 64 pages = 256 KiB = one frame

    def __post_init__(self) -> None:
        if self.avg_pages < 1 or self.avg_pages & (self.avg_pages - 1):
            raise ValueError("avg_pages must be a power of two")
        if not 1 <= self.avg_pages <= self.max_pages:
            raise ValueError("need 1 <= avg_pages <= max_pages")

    def page_classes(self, buf, start: int, npages: int) -> tuple[np.ndarray, np.ndarray]:
        """(is_zero, is_boundary) for the ``npages`` whole pages of ``buf`` from ``start``."""
        words = np.frombuffer(buf, dtype="<u8", count=npages * _WORDS, offset=start)
        words = words.reshape(npages, _WORDS)
        zero = ~words.any(axis=1)
        fp = words @ _K
        shift = np.uint64(64 - max(self.avg_pages.bit_length() - 1, 0))
        boundary = (fp >> shift) == 0 if self.avg_pages > 1 else np.ones(npages, dtype=bool)
        return zero, boundary & ~zero

    def cut(self, buf: bytes | bytearray | memoryview, base: int, final: bool
            ) -> tuple[list[Piece], int]:
        """Cut ``buf``, which holds the file's bytes from absolute offset ``base``.

        Returns the pieces and how many bytes of ``buf`` they cover. Unless ``final``, the
        trailing block that has not met a cut point yet is left out (it may still grow), so
        the caller keeps ``buf[consumed:]`` for next time."""
        n = len(buf)
        max_len = self.max_pages * PAGE
        start = min((-base) % PAGE, n)  # an unaligned head is plain data
        npages = (n - start) // PAGE
        pieces: list[Piece] = []
        chunk_start = 0  # start of the open data block

        def close_at(end: int) -> None:
            nonlocal chunk_start
            while end - chunk_start > max_len:
                pieces.append(Piece(chunk_start, max_len, False))
                chunk_start += max_len
            if end > chunk_start:
                pieces.append(Piece(chunk_start, end - chunk_start, False))
                chunk_start = end

        if npages:
            zero, boundary = self.page_classes(buf, start, npages)
            # runs of equal zero-ness, then boundary pages inside the data runs
            edges = np.flatnonzero(zero[1:] != zero[:-1]) + 1
            run_starts = [0, *edges.tolist()]
            run_ends = [*edges.tolist(), npages]
            cuts = np.flatnonzero(boundary).tolist()
            ci = 0
            for s, e in zip(run_starts, run_ends):
                if zero[s]:
                    close_at(start + s * PAGE)
                    pieces.append(Piece(start + s * PAGE, (e - s) * PAGE, True))
                    chunk_start = start + e * PAGE
                    continue
                while ci < len(cuts) and cuts[ci] < s:
                    ci += 1
                while ci < len(cuts) and cuts[ci] < e:
                    close_at(start + (cuts[ci] + 1) * PAGE)
                    ci += 1
                # a block grows to max_pages at most, counted in whole pages
                seg_end = start + e * PAGE
                while seg_end - chunk_start >= max_len:
                    pieces.append(Piece(chunk_start, max_len, False))
                    chunk_start += max_len
        if final:
            close_at(n)
        return pieces, chunk_start
