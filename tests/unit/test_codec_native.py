"""The native frame decoder (lzfs/store/_codec.c) against the Python reference (decode_frame):
the same bytes for every good record, and a refusal, with the same message, for every damaged
one. A decoder that disagrees with the reference on any record would serve wrong bytes or
refuse good ones, so the damage is drawn over every byte of the record."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lzfs.errors import CorruptDataError
from lzfs.store import _codec as native  # built by scripts/setup: its absence fails here
from lzfs.store import codec
from lzfs.store.codec import (
    FRAME_MAGIC,
    FRAME_MAX,
    FRAME_VERSION,
    Codec,
    block_hash,
    decode_frame,
    encode_frame_parts,
    payload_checksum,
)


def _record(datas: list[bytes], seed: int = 0) -> bytes:
    raw = b"".join(datas)
    _, parts = encode_frame_parts(raw, [(len(d), block_hash(d, seed)) for d in datas])
    return b"".join(parts)


def _outcome_python(rec: bytes, seed: int) -> tuple[int, int, bytes] | str:
    try:
        head, raw = decode_frame(rec, seed)
    except CorruptDataError as exc:
        return str(exc)
    return head.raw_len, head.stored_len, raw


def _outcome_native(rec: bytes, seed: int) -> tuple[int, int, bytes] | str:
    try:
        return native.decode_record(rec, seed)
    except ValueError as exc:
        return str(exc)


def _same(rec: bytes, seed: int) -> tuple[int, int, bytes] | str:
    py, nat = _outcome_python(rec, seed), _outcome_native(rec, seed)
    if isinstance(py, str) and isinstance(nat, str) and py.startswith("LZ4 frame"):
        assert nat.startswith("LZ4 frame")  # the two LZ4 libraries word their errors apart
    else:
        assert nat == py
    return py


def test_the_native_decoder_is_built_and_used():
    """scripts/setup builds it; without it every read costs more CPU (the daemon says so)."""
    if os.environ.get("LZFS_PYTHON_DECODE"):
        pytest.skip("LZFS_PYTHON_DECODE is set: the Python reference decodes")
    assert codec.NATIVE
    rec = _record([b"page" * 1024, b"\0" * 4096], seed=5)
    assert codec.decode_record(rec, 5) == (8192, len(rec) - 24 - 40, b"page" * 1024 + b"\0" * 4096)
    with pytest.raises(CorruptDataError, match="fails its content hash"):
        codec.decode_record(rec, 6)


@pytest.mark.parametrize("kind", ["lz4", "raw"])
def test_whole_frames_decode_alike(kind):
    data = (b"weights and tokens " * 14000)[:FRAME_MAX] if kind == "lz4" else os.urandom(FRAME_MAX)
    rec = _record([data[i:i + 4096] for i in range(0, FRAME_MAX, 4096)], seed=2**64 - 1)
    raw_len, stored_len, raw = _same(rec, 2**64 - 1)  # type: ignore[misc]
    assert raw == data and raw_len == FRAME_MAX
    assert (stored_len < FRAME_MAX) == (kind == "lz4")
    assert rec[5] == (Codec.LZ4 if kind == "lz4" else Codec.RAW)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=3000), min_size=1, max_size=5),
       st.integers(min_value=1, max_value=8), st.integers(min_value=0, max_value=2**64 - 1),
       st.sampled_from(["none", "flip", "truncate", "append", "seed"]), st.integers(min_value=0),
       st.integers(min_value=1, max_value=255), st.binary(min_size=1, max_size=64))
def test_any_record_decodes_or_fails_alike(datas, repeat, seed, how, where, xor, junk):
    rec = bytearray(_record([d * repeat for d in datas], seed))  # repeats: LZ4 and raw both
    if how == "flip":
        rec[where % len(rec)] ^= xor
    elif how == "truncate":
        del rec[where % len(rec):]
    elif how == "append":
        rec += junk
    outcome = _same(bytes(rec), seed ^ 1 if how == "seed" else seed)
    assert isinstance(outcome, str) == (how != "none")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_is_refused_alike(junk):
    assert isinstance(_same(junk, 0), str)
    assert isinstance(_same(FRAME_MAGIC + bytes([FRAME_VERSION]) + junk, 0), str)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([1, 2, 3, 0, 255]),
       st.lists(st.integers(min_value=0, max_value=2**32 - 1), max_size=4),
       st.binary(max_size=512))
def test_a_forged_header_with_a_valid_checksum_is_refused_alike(kind, lens, payload):
    """Lengths in the header (up to 4 GiB) are checked before they size anything."""
    raw_len = sum(lens) & 0xFFFFFFFF
    rec = struct.pack("<4sBBHIIQ", FRAME_MAGIC, FRAME_VERSION, kind, len(lens), raw_len,
                      len(payload), payload_checksum(payload))
    rec += b"".join(struct.pack("<I16s", n, bytes(16)) for n in lens) + payload
    assert isinstance(_same(rec, 0), str)


def test_any_buffer_is_taken():
    rec = _record([b"x" * 5000])
    want = native.decode_record(rec, 0)
    assert native.decode_record(bytearray(rec), 0) == want
    assert native.decode_record(memoryview(rec), 0) == want
    with pytest.raises(TypeError):
        native.decode_record("text", 0)  # type: ignore[arg-type]
