"""Minimal protobuf wire-format decoding (no protobuf library): varints and field iteration.

Only what the TensorBundle index and `keras_metadata.pb` need. Every read is bounds-checked and
raises `ValueError` on truncated or malformed input; callers turn that into `ModelFormatError`.
"""
from __future__ import annotations

from typing import Iterator

#: wire types of the protobuf encoding
VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at `pos`; returns (value, new position). At most 10 bytes."""
    result = 0
    shift = 0
    end = len(buf)
    for _ in range(10):
        if pos >= end:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
    raise ValueError("varint longer than 10 bytes")


def iter_fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield (field number, wire type, value) of a serialized message.

    VARINT / FIXED32 / FIXED64 values are ints (fixed ones little-endian unsigned); LEN values are
    `bytes`. Groups (wire types 3/4) are refused.
    """
    pos = 0
    end = len(buf)
    value: int | bytes
    while pos < end:
        key, pos = read_varint(buf, pos)
        field, wtype = key >> 3, key & 7
        if field == 0:
            raise ValueError("field number 0")
        if wtype == VARINT:
            value, pos = read_varint(buf, pos)
        elif wtype == FIXED64:
            if pos + 8 > end:
                raise ValueError("truncated fixed64")
            value = int.from_bytes(buf[pos:pos + 8], "little")
            pos += 8
        elif wtype == FIXED32:
            if pos + 4 > end:
                raise ValueError("truncated fixed32")
            value = int.from_bytes(buf[pos:pos + 4], "little")
            pos += 4
        elif wtype == LEN:
            n, pos = read_varint(buf, pos)
            if pos + n > end:
                raise ValueError("truncated length-delimited field")
            value = bytes(buf[pos:pos + n])
            pos += n
        else:
            raise ValueError(f"unsupported wire type {wtype}")
        yield field, wtype, value


def to_signed64(value: int) -> int:
    """Reinterpret an unsigned 64-bit varint as int64 (protobuf int64 encoding of negatives)."""
    return value - (1 << 64) if value >= (1 << 63) else value
