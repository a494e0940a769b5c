"""A model of pyfuse3's fast reads (third_party/ fastread.pxi) in Python: the rules by which a
READ is answered from a registered map, its bounds and the frame cache's buffers, or left to
the core. The file map tests and the exerciser's Operations layer drive core/readmap.py
through it without a mount, and check every answer it would have given against what the file
holds."""

from __future__ import annotations

from array import array


class ModelReplier:
    def __init__(self) -> None:
        self.buffers: dict[int, bytes] = {}
        self.maps: dict[int, tuple[int, list[int]]] = {}
        self.bnds: dict[int, list[tuple[int, int]]] = {}
        self.answered = self.passed = 0

    def frames(self, frames: dict[int, bytes]) -> None:
        self.buffers = frames

    def clear(self) -> None:
        """What pyfuse3.close() does: a new mount starts with no maps."""
        self.maps.clear()
        self.bnds.clear()

    def map(self, ino: int, size: int, segs: array) -> None:
        assert segs.typecode == "q" and len(segs) % 4 == 0
        self.maps[ino] = (size, list(segs))
        self.bnds[ino] = []

    def bounds(self, ino: int, bounds: list[tuple[int, int]]) -> None:
        if ino in self.maps:
            self.bnds[ino] = list(bounds)

    def forget(self, ino: int) -> None:
        self.maps.pop(ino, None)
        self.bnds.pop(ino, None)

    def figures(self) -> tuple[int, int, int]:
        return (self.answered, 0, self.passed)

    def answer(self, ino: int, off: int, size: int) -> bytes | None:
        """What the READ callback would send for (ino, off, size), or None: left to the core."""
        if ino not in self.maps:
            return None
        fsize, v = self.maps[ino]
        end = min(off + size, fsize)
        bounds = self.bnds[ino]

        def inside(a: int, b: int) -> bool:
            return any(lo <= a and b <= hi for lo, hi in bounds)

        if off >= end:
            if off >= fsize and inside(fsize, fsize):
                self.answered += 1
                return b""
            self.passed += 1
            return None
        if not inside(off, end):
            self.passed += 1
            return None
        out = bytearray()
        pos = off
        for i in range(0, len(v), 4):
            soff, slen, fid, foff = v[i:i + 4]
            if soff + slen <= pos:
                continue
            if pos >= end:
                break
            assert soff <= pos, "the map has a gap"
            take = min(soff + slen, end) - pos
            if fid == -2:
                out += bytes(take)
            else:
                buf = self.buffers.get(fid)
                if buf is None or type(buf) is not bytes:
                    self.passed += 1
                    return None
                at = foff + pos - soff
                assert at + take <= len(buf), "a run past the end of its frame"
                out += buf[at:at + take]
            pos += take
        assert pos == end, "the map does not reach the end of the file"
        self.answered += 1
        return bytes(out)
