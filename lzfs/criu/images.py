"""Reading the CRIU image format used here: magics, size-prefixed protobuf entries, pagemaps,
mm VMAs, the process tree and regular-file names.

Layout of a protobuf image: ``u32 IMG_COMMON_MAGIC`` (0x54564319, absent in old images),
``u32`` per-image magic, then ``[u32 size, host-endian][packed protobuf]`` repeated. The
messages are declared below with field numbers from CRIU's images/*.proto and decoded by the
protobuf library; every field is declared optional, so images from other CRIU versions (extra
or missing fields) still parse. Malformed or truncated images raise ImageFormatError: never a
crash, never a hang (every length is checked against what is left before it is used).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import descriptor_pb2, message_factory
from google.protobuf.message import DecodeError

from lzfs.errors import ImageFormatError

IMG_COMMON_MAGIC = 0x54564319
IMG_SERVICE_MAGIC = 0x55105940
INVENTORY_MAGIC = 0x58313116
PAGEMAP_MAGIC = 0x56084025
MM_MAGIC = 0x57492820
PSTREE_MAGIC = 0x50273030
FILES_MAGIC = 0x56303138

PE_PARENT = 1
PE_PRESENT = 4
# the largest protobuf image read whole (pagemaps, mm and files images are kilobytes; a
# larger one is not what its name says)
IMAGE_LIMIT = 64 << 20
PAGE = 4096

# VMA status bits (criu/include/image.h)
VMA_AREA_REGULAR = 1 << 0
VMA_AREA_STACK = 1 << 1
VMA_AREA_VSYSCALL = 1 << 2
VMA_AREA_VDSO = 1 << 3
VMA_AREA_HEAP = 1 << 5
VMA_FILE_PRIVATE = 1 << 6
VMA_FILE_SHARED = 1 << 7
VMA_ANON_SHARED = 1 << 8
VMA_ANON_PRIVATE = 1 << 9
VMA_AREA_SYSVIPC = 1 << 10
VMA_AREA_VVAR = 1 << 12
VMA_AREA_MEMFD = 1 << 14

_U64, _U32, _S64, _BOOL, _STR, _MSG = (
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT64,
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT32,
    descriptor_pb2.FieldDescriptorProto.TYPE_SINT64,
    descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
    descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
    descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
)
_REPEATED = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
_OPTIONAL = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL

# name -> [(field name, number, type, repeated, message type)]
_MESSAGES: dict[str, list[tuple]] = {
    "pagemap_head": [("pages_id", 1, _U32, False, None)],
    "pagemap_entry": [("vaddr", 1, _U64, False, None), ("compat_nr_pages", 2, _U32, False, None),
                      ("in_parent", 3, _BOOL, False, None), ("flags", 4, _U32, False, None),
                      ("nr_pages", 5, _U64, False, None)],
    "vma_entry": [("start", 1, _U64, False, None), ("end", 2, _U64, False, None),
                  ("pgoff", 3, _U64, False, None), ("shmid", 4, _U64, False, None),
                  ("prot", 5, _U32, False, None), ("flags", 6, _U32, False, None),
                  ("status", 7, _U32, False, None), ("fd", 8, _S64, False, None)],
    "mm_entry": [("exe_file_id", 12, _U32, False, None), ("vmas", 14, _MSG, True, "vma_entry")],
    "pstree_entry": [("pid", 1, _U32, False, None), ("ppid", 2, _U32, False, None),
                     ("pgid", 3, _U32, False, None), ("sid", 4, _U32, False, None),
                     ("threads", 5, _U32, True, None)],
    "reg_file_entry": [("id", 1, _U32, False, None), ("name", 6, _STR, False, None)],
    "file_entry": [("type", 1, _U32, False, None), ("id", 2, _U32, False, None),
                   ("reg", 3, _MSG, False, "reg_file_entry")],
}


def _build() -> dict[str, type]:
    fdp = descriptor_pb2.FileDescriptorProto(name="lzfs_criu_images.proto", package="lzfs_criu",
                                             syntax="proto2")
    for name, fields in _MESSAGES.items():
        msg = fdp.message_type.add(name=name)
        for fname, number, ftype, repeated, mtype in fields:
            f = msg.field.add(name=fname, number=number, type=ftype,
                              label=_REPEATED if repeated else _OPTIONAL)
            if mtype:
                f.type_name = f".lzfs_criu.{mtype}"
    classes = message_factory.GetMessages([fdp])
    return {name: classes[f"lzfs_criu.{name}"] for name in _MESSAGES}


_CLASSES = _build()


def decode(kind: str, payload: bytes, what: str = "image"):
    msg = _CLASSES[kind]()
    try:
        msg.ParseFromString(payload)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ImageFormatError(f"{what}: undecodable {kind} entry ({exc})") from None
    return msg


def entries(data: bytes, magic: int, what: str = "image", first_only: bool = False
            ) -> list[bytes]:
    """Split a protobuf image into its entries' payloads, checking the magics. With
    ``first_only``, ``data`` may be a prefix of the image: only the first entry is taken."""
    if len(data) < 8:
        raise ImageFormatError(f"{what}: {len(data)} bytes is too short for an image header")
    first, second = struct.unpack_from("<II", data)
    if first in (IMG_COMMON_MAGIC, IMG_SERVICE_MAGIC):
        pos, found = 8, second
    else:
        pos, found = 4, first
    if found != magic:
        raise ImageFormatError(f"{what}: magic {found:#x}, expected {magic:#x}")
    out = []
    n = len(data)
    while pos < n:
        if pos + 4 > n:
            raise ImageFormatError(f"{what}: truncated entry size at offset {pos}")
        (size,) = struct.unpack_from("<I", data, pos)
        pos += 4
        if size > n - pos:
            raise ImageFormatError(
                f"{what}: entry at offset {pos - 4} claims {size} bytes, {n - pos} are left")
        out.append(data[pos:pos + size])
        pos += size
        if first_only:
            break
    return out


@dataclass(frozen=True)
class PagemapEntry:
    vaddr: int
    nr_pages: int
    flags: int

    @property
    def present(self) -> bool:
        return bool(self.flags & PE_PRESENT)


@dataclass
class Pagemap:
    pages_id: int
    entries: list[PagemapEntry] = field(default_factory=list)

    def page_runs(self) -> list[tuple[int, int, int]]:
        """(vaddr, offset in pages-N.img, length) of each run of pages stored in this image:
        the offset advances only over PE_PRESENT entries."""
        runs, off = [], 0
        for e in self.entries:
            if e.present:
                runs.append((e.vaddr, off, e.nr_pages * PAGE))
                off += e.nr_pages * PAGE
        return runs


def pages_problem(what: str, pm: Pagemap, have: int | None) -> str | None:
    """Why the pages file a pagemap (``what``) names cannot serve it: missing (``have`` None)
    or shorter than the pages it maps; None when it can."""
    need = max((off + n for _, off, n in pm.page_runs()), default=0)
    if need and have is None:
        return f"{what} maps {need} bytes of pages-{pm.pages_id}.img, which is missing"
    if have is not None and have < need:
        return f"pages-{pm.pages_id}.img holds {have} of the {need} bytes {what} maps"
    return None


def pagemap_pages_id(data: bytes, what: str = "pagemap") -> int:
    """The pages image a pagemap names, from its head entry alone (a prefix of the file
    holding the head is enough)."""
    items = entries(data, PAGEMAP_MAGIC, what, first_only=True)
    if not items:
        raise ImageFormatError(f"{what}: no pagemap head")
    return decode("pagemap_head", items[0], what).pages_id


def parse_pagemap(data: bytes, what: str = "pagemap") -> Pagemap:
    items = entries(data, PAGEMAP_MAGIC, what)
    if not items:
        raise ImageFormatError(f"{what}: no pagemap head")
    head = decode("pagemap_head", items[0], what)
    pm = Pagemap(head.pages_id)
    for raw in items[1:]:
        e = decode("pagemap_entry", raw, what)
        n = e.nr_pages if e.HasField("nr_pages") else e.compat_nr_pages
        flags = e.flags if e.HasField("flags") else (PE_PARENT if e.in_parent else PE_PRESENT)
        if n > (1 << 40) // PAGE:
            raise ImageFormatError(f"{what}: implausible entry of {n} pages")
        pm.entries.append(PagemapEntry(e.vaddr, n, flags))
    return pm


@dataclass(frozen=True)
class Vma:
    start: int
    end: int
    status: int
    shmid: int
    flags: int = 0  # the mmap(2) MAP_* flags

    def region(self, files: dict[int, str]) -> str:
        """A human name for what this mapping holds."""
        s = self.status
        if s & VMA_AREA_HEAP:
            return "[heap]"
        if s & VMA_AREA_STACK:
            return "[stack]"
        if s & (VMA_AREA_VDSO | VMA_AREA_VVAR | VMA_AREA_VSYSCALL):
            return "[vdso]"
        if s & VMA_AREA_SYSVIPC:
            return "[sysv shm]"
        if s & (VMA_FILE_PRIVATE | VMA_FILE_SHARED):
            return files.get(self.shmid, f"file #{self.shmid}")
        if s & (VMA_ANON_SHARED | VMA_AREA_MEMFD):
            return "[anon shared]"
        return "[anon]"


def parse_mm(data: bytes, what: str = "mm") -> list[Vma]:
    return parse_mm_task(data, what)[1]


def parse_mm_task(data: bytes, what: str = "mm") -> tuple[int, list[Vma]]:
    """(id of the executable's file, VMAs) of one task's mm image."""
    items = entries(data, MM_MAGIC, what)
    if not items:
        raise ImageFormatError(f"{what}: no mm entry")
    mm = decode("mm_entry", items[0], what)
    return mm.exe_file_id, [Vma(v.start, v.end, v.status, v.shmid, v.flags) for v in mm.vmas]


def parse_pstree(data: bytes, what: str = "pstree") -> list[tuple[int, int]]:
    """(pid, ppid) of each task."""
    return [(e.pid, e.ppid) for e in (decode("pstree_entry", raw, what)
                                      for raw in entries(data, PSTREE_MAGIC, what))]


def parse_files(data: bytes, what: str = "files") -> dict[int, str]:
    """Regular-file id -> path, for naming file-backed mappings."""
    out = {}
    for raw in entries(data, FILES_MAGIC, what):
        e = decode("file_entry", raw, what)
        if e.type == 1 and e.HasField("reg"):
            out[e.reg.id] = e.reg.name
    return out


def read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageFormatError(f"{path}: {exc.strerror}") from None
