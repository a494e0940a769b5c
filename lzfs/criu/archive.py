"""Checkpoint archives: CRIU images inside an uncompressed tar.

`podman container checkpoint --export X.tar --compress none` and the kubelet's checkpoint API
(`/var/lib/kubelet/checkpoints/checkpoint-POD_NS-CONTAINER-TIME.tar`) both write one tar that
holds the CRIU images under ``checkpoint/``, beside the container's config, spec and a tar of
its rootfs changes. lzfs reports such an archive as a snapshot of its own. Only tar headers
are read (``tarfile`` seeks over member data), never the pages: a 10 GiB archive costs a few
dozen 512-byte reads.

A member's data starts at a multiple of 512 bytes in the archive, not of 4096: the pages of
``pages-N.img`` sit at another offset within each 4 KiB page of the archive than in a plain
images directory (docs/containers.md measures what that does to dedup).

Compressed archives (Podman's default ``--compress zstd``, ``gzip``) are not tars at the byte
level and are not recognised: their pages neither dedup nor compress below them anyway.
"""

from __future__ import annotations

import io
import posixpath
import re
import tarfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from lzfs.criu import images
from lzfs.errors import CorruptDataError, ImageFormatError

BLOCK = 512
_IMAGE = re.compile(r"^(inventory\.img|pagemap-\d+\.img|pages-\d+\.img)$")


def is_tar_header(head: bytes) -> bool:
    """Whether ``head`` (a file's first 512 bytes) is a ustar, GNU or pax tar header: the
    magic "ustar" at offset 257, which every tar writer since POSIX.1-1988 puts there."""
    return len(head) >= BLOCK and head[257:262] == b"ustar"


@dataclass(frozen=True)
class Member:
    """One image inside the archive: its data is ``size`` bytes at ``offset``."""
    name: str
    offset: int
    size: int


@dataclass
class Archive:
    """The CRIU images an archive holds (those of one directory in it)."""
    directory: str                 # where in the archive the images are ("checkpoint")
    images: dict[str, Member] = field(default_factory=dict)
    truncated: str | None = None   # why the archive is cut short, when it is

    def problems(self, read: Callable[[int, int], bytes], what: str) -> list[str]:
        """Why these images would not restore as dumped; empty when they are whole.
        ``read(offset, size)`` reads the archive; ``what`` names it in messages."""
        out = [self.truncated] if self.truncated else []
        return out + image_problems({n: m.size for n, m in self.images.items()},
                                    lambda name: self._read(read, name),
                                    f"{what}:{self.directory or '.'}")

    def _read(self, read: Callable[[int, int], bytes], name: str) -> bytes:
        m = self.images[name]
        if m.size > images.IMAGE_LIMIT:
            raise ImageFormatError(f"{name}: {m.size} bytes is too large for this image")
        return read(m.offset, m.size)


def image_problems(sizes: dict[str, int], read: Callable[[str], bytes], where: str
                   ) -> list[str]:
    """Why the images named in ``sizes`` (name -> bytes) would not restore: CRIU writes
    inventory.img last, and every page a pagemap maps must be in its pages image."""
    problems = []
    inv = "inventory.img"
    if inv not in sizes:
        problems.append(f"{where}: no {inv}: the dump did not finish")
    else:
        try:
            if not images.entries(read(inv), images.INVENTORY_MAGIC, f"{where}/{inv}"):
                problems.append(f"{where}/{inv} holds no entry: the dump did not finish")
        except (ImageFormatError, CorruptDataError) as exc:
            problems.append(f"{where}/{inv} is unreadable: {exc}")
    for name in sorted(sizes):
        if not re.match(r"^pagemap-\d+\.img$", name):
            continue
        what = f"{where}/{name}"
        try:
            pm = images.parse_pagemap(read(name), what)
        except (ImageFormatError, CorruptDataError) as exc:
            problems.append(f"{what} is unreadable: {exc}")
            continue
        why = images.pages_problem(what, pm, sizes.get(f"pages-{pm.pages_id}.img"))
        if why:
            problems.append(why)
    return problems


def find_images(f: BinaryIO | io.RawIOBase, size: int) -> Archive | None:
    """The CRIU images in the tar ``f`` (``size`` bytes), or None when it is not a tar or
    holds none. A tar cut short (an export that died) still gives what its headers name, with
    ``truncated`` saying where it ends."""
    f.seek(0)
    if not is_tar_header(f.read(BLOCK)):
        return None
    f.seek(0)
    members: list[tarfile.TarInfo] = []
    damaged = None
    try:
        tar = tarfile.TarFile(fileobj=f, mode="r")
        while (info := tar.next()) is not None:
            members.append(info)
    except tarfile.TarError as exc:  # a header cut off or garbled after the first
        if not members:
            return None
        damaged = f"the archive is damaged or cut short after {members[-1].name} ({exc})"
    by_dir: dict[str, dict[str, Member]] = defaultdict(dict)
    cut = None
    end = 0
    for info in members:
        end = max(end, info.offset_data + -(-info.size // BLOCK) * BLOCK)
        if not info.isreg():
            continue
        if info.offset_data + info.size > size and cut is None:
            cut = (f"the archive ends inside {info.name} ({max(size - info.offset_data, 0)} "
                   f"of {info.size} bytes): the export did not finish")
        d = posixpath.dirname(posixpath.normpath(info.name))
        base = posixpath.basename(info.name)
        by_dir[d][base] = Member(base, info.offset_data, info.size)
    if size < end + 2 * BLOCK:
        damaged = damaged or "the archive lacks tar's end marker: the export did not finish"
    truncated = cut or damaged
    found = {d: m for d, m in by_dir.items() if any(_IMAGE.match(n) for n in m)}
    if not found:
        return None
    # the directory CRIU wrote (it has inventory.img), else the one with the most images
    directory = max(found, key=lambda d: ("inventory.img" in found[d],
                                          sum(bool(_IMAGE.match(n)) for n in found[d])))
    return Archive(directory, found[directory], truncated)


class RangeFile(io.RawIOBase):
    """A read-only, seekable file over ``read_at(offset, length)``, for ``tarfile``."""

    def __init__(self, read_at: Callable[[int, int], bytes], size: int) -> None:
        super().__init__()
        self._read_at = read_at
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(base + offset, 0)
        return self._pos

    def readinto(self, buf) -> int:
        n = max(min(len(buf), self._size - self._pos), 0)
        if n == 0:
            return 0
        data = self._read_at(self._pos, n)
        buf[:len(data)] = data
        self._pos += len(data)
        return len(data)
