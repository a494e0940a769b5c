"""The CRIU image reader: real framing, PE_PRESENT offsets, and bad input never crashes."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lzfs.criu import images as I
from lzfs.errors import ImageFormatError
from tests.conftest import criu_image

PE_LAZY = 2  # CRIU's flag for pages a lazy restore fetches on demand (lzfs reads past it)


def test_pagemap_offsets_advance_over_present_entries_only():
    data = criu_image(I.PAGEMAP_MAGIC, [
        ("pagemap_head", {"pages_id": 3}),
        ("pagemap_entry", {"vaddr": 0x1000, "nr_pages": 2, "flags": I.PE_PRESENT}),
        ("pagemap_entry", {"vaddr": 0x5000, "nr_pages": 4, "flags": I.PE_PARENT}),
        ("pagemap_entry", {"vaddr": 0x9000, "nr_pages": 1, "flags": I.PE_PRESENT | PE_LAZY}),
        ("pagemap_entry", {"vaddr": 0xA000, "compat_nr_pages": 3, "in_parent": False}),
    ])
    pm = I.parse_pagemap(data)
    assert pm.pages_id == 3
    assert pm.page_runs() == [(0x1000, 0, 8192), (0x9000, 8192, 4096), (0xA000, 12288, 12288)]


def test_mm_regions_are_named():
    data = criu_image(I.MM_MAGIC, [("mm_entry", {"vmas": [
        {"start": 0x1000, "end": 0x3000, "status": I.VMA_AREA_REGULAR | I.VMA_AREA_HEAP},
        {"start": 0x4000, "end": 0x5000, "status": I.VMA_AREA_REGULAR | I.VMA_FILE_PRIVATE,
         "shmid": 7},
        {"start": 0x6000, "end": 0x7000, "status": I.VMA_AREA_REGULAR | I.VMA_ANON_SHARED},
        {"start": 0x8000, "end": 0x9000, "status": I.VMA_AREA_REGULAR | I.VMA_ANON_PRIVATE},
    ]})])
    files = I.parse_files(criu_image(I.FILES_MAGIC, [
        ("file_entry", {"type": 1, "id": 7}),
    ]))
    vmas = I.parse_mm(data)
    names = [v.region({7: "/models/llama.bin"}) for v in vmas]
    assert names == ["[heap]", "/models/llama.bin", "[anon shared]", "[anon]"]
    assert files == {}  # a REG entry without its reg message names nothing


def test_pstree():
    data = criu_image(I.PSTREE_MAGIC, [("pstree_entry", {"pid": 10, "ppid": 1}),
                                   ("pstree_entry", {"pid": 11, "ppid": 10})])
    assert I.parse_pstree(data) == [(10, 1), (11, 10)]


@pytest.mark.parametrize("damage", ["short", "magic", "size", "cut"])
def test_damaged_images_give_a_clear_error(damage):
    data = criu_image(I.PAGEMAP_MAGIC, [("pagemap_head", {"pages_id": 1}),
                                    ("pagemap_entry", {"vaddr": 1, "nr_pages": 1, "flags": 4})])
    if damage == "short":
        data = data[:5]
    elif damage == "magic":
        data = data[:4] + b"\0\0\0\0" + data[8:]
    elif damage == "size":
        data = data[:8] + struct.pack("<I", 1 << 30) + data[12:]
    else:
        data = data[:-2]
    with pytest.raises(ImageFormatError):
        I.parse_pagemap(data, "pagemap-1.img")


@settings(max_examples=300, deadline=1000)
@given(st.binary(max_size=300), st.sampled_from(["pagemap", "mm", "pstree", "files"]))
def test_garbage_never_crashes_or_hangs(junk, kind):
    parse = {"pagemap": I.parse_pagemap, "mm": I.parse_mm, "pstree": I.parse_pstree,
             "files": I.parse_files}[kind]
    magic = {"pagemap": I.PAGEMAP_MAGIC, "mm": I.MM_MAGIC, "pstree": I.PSTREE_MAGIC,
             "files": I.FILES_MAGIC}[kind]
    for data in (junk, struct.pack("<II", I.IMG_COMMON_MAGIC, magic) + junk):
        with contextlib.suppress(ImageFormatError):
            parse(data)


_PARSERS = {"pagemap": (I.parse_pagemap, I.PAGEMAP_MAGIC), "mm": (I.parse_mm, I.MM_MAGIC),
            "pstree": (I.parse_pstree, I.PSTREE_MAGIC), "files": (I.parse_files, I.FILES_MAGIC)}
_VALID = {
    "pagemap": criu_image(I.PAGEMAP_MAGIC, [
        ("pagemap_head", {"pages_id": 1}),
        ("pagemap_entry", {"vaddr": 0x1000, "nr_pages": 3, "flags": I.PE_PRESENT}),
        ("pagemap_entry", {"vaddr": 0x9000, "nr_pages": 1, "flags": I.PE_PARENT})]),
    "mm": criu_image(I.MM_MAGIC, [("mm_entry", {"vmas": [
        {"start": 0x1000, "end": 0x4000, "status": I.VMA_AREA_HEAP, "fd": -1},
        {"start": 0x9000, "end": 0xA000, "status": I.VMA_FILE_PRIVATE, "shmid": 2}]})]),
    "pstree": criu_image(I.PSTREE_MAGIC, [("pstree_entry", {"pid": 7, "ppid": 1})]),
    "files": criu_image(I.FILES_MAGIC, [("file_entry", {"type": 1, "id": 2})]),
}


def _parse_or_refuse(kind: str, data: bytes) -> None:
    """Parses, or raises ImageFormatError: nothing else escapes (IndexError, struct.error,
    DecodeError, UnicodeDecodeError...)."""
    parse, _ = _PARSERS[kind]
    try:
        out = parse(data, f"{kind}.img")
    except ImageFormatError as exc:
        assert f"{kind}.img" in str(exc)
        return
    if kind == "pagemap":
        for _, off, length in out.page_runs():
            assert off >= 0 and 0 <= length <= 1 << 40


@settings(max_examples=300, deadline=1000)
@given(st.sampled_from(sorted(_PARSERS)),
       st.lists(st.binary(max_size=40) | st.sampled_from([b"\x0a\xff\xff\xff\xff\x0f",
                                                         b"\x72\x02\xc3\x28", b"\x08" * 12]),
                max_size=6))
def test_well_framed_garbage_entries_never_crash(kind, payloads):
    """Correct magics and entry sizes, garbage protobuf inside (overlong varints, invalid
    UTF-8 in a name, truncated fields): the protobuf decoder's errors become ours."""
    _, magic = _PARSERS[kind]
    data = struct.pack("<II", I.IMG_COMMON_MAGIC, magic) + b"".join(
        struct.pack("<I", len(p)) + p for p in payloads)
    _parse_or_refuse(kind, data)


@settings(max_examples=300, deadline=1000)
@given(st.sampled_from(sorted(_PARSERS)), st.sampled_from(["cut", "flip", "insert"]),
       st.integers(min_value=0), st.integers(min_value=1, max_value=255),
       st.binary(min_size=1, max_size=16))
def test_damaged_real_images_never_crash(kind, how, where, xor, junk):
    data = bytearray(_VALID[kind])
    pos = where % len(data)
    if how == "cut":
        del data[pos:]
    elif how == "flip":
        data[pos] ^= xor
    else:
        data[pos:pos] = junk
    _parse_or_refuse(kind, bytes(data))
