"""Page-granular, content-defined cut points.

Blocks are runs of whole pages. Whether a block ends after a page is decided by that page's own
content (its 64-bit fingerprint), never by its offset, so the same pages produce the same blocks
wherever they sit in a file: pages inserted or removed earlier in a pages image, another VMA
order, other processes' pages in between. After a shift the cuts fall back into step at the
first boundary page, which is on average ``avg_pages`` pages later.

All-zero pages are never stored: a zero page always ends the block before it, and runs of
them are returned as holes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .codec import PAGE, ZERO_PAGE, page_fingerprint


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

    def cut(self, buf: bytes | bytearray | memoryview, base: int, final: bool
            ) -> tuple[list[Piece], int]:
        """Cut ``buf``, which holds the file's bytes from absolute offset ``base``.

        Returns the pieces and how many bytes of ``buf`` they cover. Unless ``final``, the
        trailing block that has not met a cut point yet is left out (it may still grow), so
        the caller keeps ``buf[consumed:]`` for next time."""
        mv = memoryview(buf)
        n = len(mv)
        mask = self.avg_pages - 1
        max_len = self.max_pages * PAGE
        pieces: list[Piece] = []
        chunk_start = 0  # start of the open data block
        pos = 0
        head = (-base) % PAGE  # an unaligned start: the first partial page is plain data
        if head:
            pos = min(head, n)
        zero_start = -1  # start of the open zero run, or -1
        while pos + PAGE <= n:
            page = mv[pos:pos + PAGE]
            fp = page_fingerprint(page)
            if fp == _ZERO_FP and page == ZERO_PAGE:
                if zero_start < 0:
                    if pos > chunk_start:
                        pieces.append(Piece(chunk_start, pos - chunk_start, False))
                    zero_start = pos
                pos += PAGE
                chunk_start = pos
                continue
            if zero_start >= 0:
                pieces.append(Piece(zero_start, pos - zero_start, True))
                zero_start = -1
            pos += PAGE
            if (fp & mask) == 0 or pos - chunk_start >= max_len:
                pieces.append(Piece(chunk_start, pos - chunk_start, False))
                chunk_start = pos
        if zero_start >= 0:
            pieces.append(Piece(zero_start, pos - zero_start, True))
        if final and n > chunk_start:
            # the open block plus a partial tail page; split so no block exceeds max_len
            while n - chunk_start > max_len:
                pieces.append(Piece(chunk_start, max_len, False))
                chunk_start += max_len
            pieces.append(Piece(chunk_start, n - chunk_start, False))
            chunk_start = n
        return pieces, chunk_start


_ZERO_FP = page_fingerprint(ZERO_PAGE)
