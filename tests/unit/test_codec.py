"""Frame encoding: round trips, incompressible data, and every kind of damage is caught."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lzfs.errors import CorruptDataError
from lzfs.store.codec import (
    FRAME_MAX,
    Codec,
    block_hash,
    decode_frame,
    encode_frame_parts,
    parse_frame_header,
)


def _blocks(*datas: bytes, seed: int = 0) -> list[tuple[bytes, bytes]]:
    return [(block_hash(d, seed), d) for d in datas]


def encode_frame(blocks: list[tuple[bytes, bytes]]):
    """One whole frame record of (hash, data) blocks, as the write path's parts joined."""
    raw = b"".join(data for _, data in blocks)
    head, parts = encode_frame_parts(raw, [(len(data), h) for h, data in blocks])
    return head, b"".join(parts)


def test_compressible_frame_round_trips_and_is_smaller():
    blocks = _blocks(b"abc" * 20000, b"hello world " * 3000)
    head, rec = encode_frame(blocks)
    assert head.codec == Codec.LZ4
    assert head.stored_len < head.raw_len // 4
    head2, raw = decode_frame(rec)
    assert raw == b"".join(d for _, d in blocks)
    assert head2.blocks == head.blocks


def test_incompressible_frame_is_stored_raw():
    data = os.urandom(FRAME_MAX)
    head, rec = encode_frame(_blocks(data))
    assert head.codec == Codec.RAW
    assert decode_frame(rec)[1] == data


@pytest.mark.parametrize("where", ["magic", "payload", "table", "truncate"])
def test_damaged_frame_is_refused(where):
    data = b"lzfs " * 10000
    head, rec = encode_frame(_blocks(data[:20000], data[20000:]))
    buf = bytearray(rec)
    if where == "magic":
        buf[0] ^= 1
    elif where == "payload":
        buf[-10] ^= 0x40
    elif where == "table":
        buf[head.header_len - 1] ^= 1  # last byte of the last block hash
    else:
        del buf[-5:]
    with pytest.raises(CorruptDataError):
        decode_frame(bytes(buf))


def test_hash_domains_do_not_match():
    data = b"same page" * 455
    assert block_hash(data, 0) != block_hash(data, 77)
    _head, rec = encode_frame(_blocks(data, seed=77))
    assert decode_frame(rec, seed=77)[1] == data
    with pytest.raises(CorruptDataError):
        decode_frame(rec, seed=0)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_never_parses_as_a_frame(junk):
    with pytest.raises(CorruptDataError):
        decode_frame(junk)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=5000), min_size=1, max_size=8))
def test_any_blocks_round_trip(datas):
    blocks = _blocks(*datas)
    _head, rec = encode_frame(blocks)
    assert parse_frame_header(rec).raw_len == sum(map(len, datas))
    assert decode_frame(rec)[1] == b"".join(datas)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=3000), min_size=1, max_size=4),
       st.sampled_from(["flip", "truncate", "append"]), st.integers(min_value=0),
       st.integers(min_value=1, max_value=255), st.binary(min_size=1, max_size=64))
def test_any_damage_to_a_record_is_refused_never_decoded(datas, how, where, xor, junk):
    """Every byte of a record is covered: header fields by the checks on each other, the
    table by the content hashes, the payload by its checksum."""
    _, rec = encode_frame(_blocks(*(d * 7 for d in datas)))  # compressible: LZ4 and raw both
    buf = bytearray(rec)
    if how == "flip":
        buf[where % len(buf)] ^= xor
    elif how == "truncate":
        del buf[where % len(buf):]
    else:
        buf += junk
    with pytest.raises(CorruptDataError):
        decode_frame(bytes(buf))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([1, 2, 3, 0, 255]),
       st.lists(st.integers(min_value=0, max_value=2**32 - 1), max_size=4),
       st.binary(max_size=512))
def test_a_forged_header_with_a_valid_checksum_is_refused(codec, lens, payload):
    """The payload checksum does not cover the header: lengths in it (up to 4 GiB) must be
    checked before they size anything."""
    import struct

    from lzfs.store.codec import FRAME_MAGIC, FRAME_VERSION, payload_checksum

    raw_len = sum(lens) & 0xFFFFFFFF
    rec = struct.pack("<4sBBHIIQ", FRAME_MAGIC, FRAME_VERSION, codec, len(lens), raw_len,
                      len(payload), payload_checksum(payload))
    rec += b"".join(struct.pack("<I16s", n, bytes(16)) for n in lens) + payload
    with pytest.raises(CorruptDataError):
        decode_frame(rec)
