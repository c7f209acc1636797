"""CRC-32C (Castagnoli), as TensorFlow checksums tensors and SSTable blocks; numpy, no C extension.

Long inputs are cut into k equal chunks processed in lockstep (one vectorised table lookup per
byte column), then folded together with a precomputed "advance by L zero bytes" map, so a few MB
take tens of milliseconds instead of seconds of byte-by-byte Python.
"""
from __future__ import annotations

import math

import numpy as np

_POLY = 0x82F63B78  # reflected Castagnoli polynomial
_MASK_DELTA = 0xA282EAD8


def _make_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        table[i] = c
    return table


_TABLE = _make_table()
_TABLE_LIST = [int(v) for v in _TABLE]


def _raw_update(reg: int, data: bytes | memoryview) -> int:
    """Advance the raw CRC register over `data` (no init / final inversion), byte at a time."""
    t = _TABLE_LIST
    for b in bytes(data):
        reg = t[(reg ^ b) & 0xFF] ^ (reg >> 8)
    return reg


def _advance_tables(length: int) -> list[list[int]]:
    """Four 256-entry tables giving the register after `length` zero bytes (a GF(2)-linear map)."""
    zeros = bytes(length)
    images = [_raw_update(1 << bit, zeros) for bit in range(32)]
    tables = []
    for byte_pos in range(4):
        tab = [0] * 256
        for v in range(1, 256):
            low = v & -v
            tab[v] = tab[v ^ low] ^ images[byte_pos * 8 + low.bit_length() - 1]
        tables.append(tab)
    return tables


def crc32c(data: bytes | bytearray | memoryview, small: int = 4096) -> int:
    """CRC-32C of `data` (standard init 0xFFFFFFFF and final inversion). crc32c(b"123456789") = 0xE3069283."""
    buf = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    n = buf.size
    if n <= small:
        return _raw_update(0xFFFFFFFF, buf.tobytes()) ^ 0xFFFFFFFF
    length = max(64, int(math.isqrt(n)))
    k = n // length
    body = buf[: k * length].reshape(k, length).T.copy()  # (L, k): column j = byte j of every chunk
    reg = np.zeros(k, dtype=np.uint32)
    for j in range(length):
        reg = _TABLE[(reg ^ body[j]) & 0xFF] ^ (reg >> np.uint32(8))
    s0, s1, s2, s3 = _advance_tables(length)
    acc = 0xFFFFFFFF
    for raw in reg.tolist():
        acc = s0[acc & 0xFF] ^ s1[(acc >> 8) & 0xFF] ^ s2[(acc >> 16) & 0xFF] ^ s3[acc >> 24] ^ raw
    acc = _raw_update(acc, buf[k * length:].tobytes())
    return acc ^ 0xFFFFFFFF


def unmask(masked: int) -> int:
    """Invert TensorFlow/LevelDB's `crc32c::Mask` (rotate right 15, plus a constant)."""
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def mask(crc: int) -> int:
    """TensorFlow/LevelDB's `crc32c::Mask`: stored checksums are masked so CRCs of CRCs differ."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF
