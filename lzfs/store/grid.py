"""Where a file's pages start: at file pages, or, in a checkpoint archive, at each member's data.

Dedup is per 4 KiB page (chunker.py), and a page is found again only if it is cut at the same
place. In a CRIU images directory that is the file page. A checkpoint archive (Podman's
``--export``, the kubelet's checkpoint tar) holds the same images, but each behind a 512-byte tar
header: Podman's pages-1.img starts 1536 bytes off the 4 KiB grid, and cut at file pages no page
of it matched the same image in a directory (measured: 0 bytes shared of 33.6 MiB). So in a tar,
pages are cut from each member's data start, and headers are pieces of their own.

The grid is read from the tar headers as the data streams in (they come before their member's
data), walking header to header; a header that does not check out (damage, or not a tar after
all) ends the walk and the rest of the file is cut at file pages again. Only where pages are
cut depends on this: the bytes stored are the file's bytes either way.
"""

from __future__ import annotations

from typing import NamedTuple

from lzfs.store.codec import PAGE

BLOCK = 512


class Segment(NamedTuple):
    start: int   # absolute file offsets
    end: int
    phase: int   # pages in it start at offsets = phase (mod PAGE)


def header_size(block: bytes | bytearray | memoryview) -> int | None:
    """The data size a tar header announces, or None when ``block`` is no valid header
    (checksum, size field). An all-zero block is None too: the end of the archive."""
    b = bytes(block)
    if len(b) < BLOCK or b == bytes(BLOCK):
        return None
    try:
        want = int(b[148:156].split(b"\0", 1)[0].strip() or b"-1", 8)
    except ValueError:
        return None
    if want != sum(b[:148]) + 8 * 32 + sum(b[156:BLOCK]):
        return None
    field = b[124:136]
    if field[0] & 0x80:  # base-256, for members over 8 GiB
        return int.from_bytes(field[1:], "big")
    try:
        return int(field.split(b"\0", 1)[0].strip() or b"0", 8)
    except ValueError:
        return None


def is_tar(first: bytes | bytearray | memoryview) -> bool:
    """Whether a file that starts with ``first`` (512 bytes at least) is a tar archive."""
    return len(first) >= BLOCK and bytes(first[257:262]) == b"ustar" and \
        header_size(first[:BLOCK]) is not None


class TarGrid:
    """The grid of one tar being written front to back (or read back after a remount)."""

    def __init__(self) -> None:
        self.walk = 0                 # offset of the next header not yet read
        self.done = False             # the walk ended: the end marker, damage, or the file end
        self.points: list[tuple[int, int]] = []  # (offset, phase) from which it holds

    def feed(self, buf: bytes | bytearray | memoryview, base: int) -> None:
        """Read every header that lies whole in ``buf`` (file bytes from ``base``)."""
        view = memoryview(buf)
        while not self.done and base <= self.walk and self.walk + BLOCK <= base + len(view):
            h = self.walk
            size = header_size(view[h - base:h - base + BLOCK])
            if size is None:  # the end marker, or not a header: file pages from here
                self.points.append((h, 0))
                self.done = True
                return
            self.points.append((h, h % PAGE))          # the header: a piece of its own
            self.points.append((h + BLOCK, (h + BLOCK) % PAGE))  # the member's data
            self.walk = h + BLOCK + -(-size // BLOCK) * BLOCK

    def segments(self, base: int, end: int) -> tuple[list[Segment], int]:
        """The segments of [base, end), and how far the grid is known (the next header, when
        it is not whole in what was fed): bytes past that must wait, unless the file ends."""
        known = end if self.done else min(end, self.walk)
        out: list[Segment] = []
        points = self.points
        for i, (off, phase) in enumerate(points):
            nxt = points[i + 1][0] if i + 1 < len(points) else (
                known if self.done else self.walk)
            lo, hi = max(off, base), min(nxt, known)
            if lo < hi:
                out.append(Segment(lo, hi, phase))
        if not points and known > base:
            out.append(Segment(base, known, 0))
        return out, known
