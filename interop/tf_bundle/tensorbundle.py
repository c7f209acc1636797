"""TensorFlow TensorBundle checkpoints (`variables/variables.index` + `.data-*`) without TensorFlow.

The index is a LevelDB-format SSTable: a 48-byte footer (metaindex and index BlockHandles as
varints, padding, magic 0xdb4775248b80fb57), an index block whose values are BlockHandles of data
blocks, and data blocks of prefix-compressed entries followed by restart offsets. Every block is
followed by a 5-byte trailer: compression type (0 = none; 1 = snappy is refused) and the masked
CRC-32C of block + type. Values are `BundleEntryProto` messages (the empty key holds the
`BundleHeaderProto`), decoded here by hand: dtype (1), shape (2), shard_id (3), offset (4), size (5),
crc32c (6). Tensors are raw little-endian bytes at `offset` in shard `shard_id`.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass

import numpy as np

from ptychopinn.errors import ModelFormatError

from . import wire
from .crc32c import crc32c, unmask

_MAGIC = 0xDB4775248B80FB57
_FOOTER = 48
_TRAILER = 5

#: TensorFlow DataType enum → numpy little-endian dtype (DT_STRING = 7 is skipped, not read)
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),   # DT_FLOAT
    2: np.dtype("<f8"),   # DT_DOUBLE
    3: np.dtype("<i4"),   # DT_INT32
    4: np.dtype("u1"),    # DT_UINT8
    5: np.dtype("<i2"),   # DT_INT16
    6: np.dtype("i1"),    # DT_INT8
    8: np.dtype("<c8"),   # DT_COMPLEX64
    9: np.dtype("<i8"),   # DT_INT64
    10: np.dtype("?"),    # DT_BOOL
    18: np.dtype("<c16"),  # DT_COMPLEX128
    19: np.dtype("<f2"),  # DT_HALF
}
DT_STRING = 7


@dataclass(frozen=True)
class BundleEntry:
    """One tensor's location: dtype enum, shape, shard, byte offset/size, masked crc32c (or None)."""

    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int | None


def _block(buf: bytes, offset: int, size: int, where: str) -> bytes:
    """Contents of the block at (offset, size), trailer checked (compression type, masked crc)."""
    if offset < 0 or size < 0 or offset + size + _TRAILER > len(buf):
        raise ModelFormatError(f"{where}: block handle ({offset}, {size}) points outside the {len(buf)}-byte index")
    data = buf[offset:offset + size]
    ctype = buf[offset + size]
    if ctype == 1:
        raise ModelFormatError(f"{where}: snappy-compressed SSTable block; only uncompressed TensorBundle indexes are supported")
    if ctype != 0:
        raise ModelFormatError(f"{where}: unknown SSTable block compression type {ctype}")
    (stored,) = struct.unpack_from("<I", buf, offset + size + 1)
    if crc32c(buf[offset:offset + size + 1]) != unmask(stored):
        raise ModelFormatError(f"{where}: SSTable block at offset {offset} fails its crc32c check (corrupt index)")
    return data


def _block_entries(block: bytes, where: str) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs of one block, undoing the prefix compression."""
    if len(block) < 4:
        raise ModelFormatError(f"{where}: SSTable block shorter than its restart count")
    (n_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 - 4 * n_restarts
    if limit < 0:
        raise ModelFormatError(f"{where}: SSTable block restart array ({n_restarts}) larger than the block")
    out: list[tuple[bytes, bytes]] = []
    pos = 0
    key = b""
    try:
        while pos < limit:
            shared, pos = wire.read_varint(block, pos)
            non_shared, pos = wire.read_varint(block, pos)
            vlen, pos = wire.read_varint(block, pos)
            if shared > len(key) or pos + non_shared + vlen > limit:
                raise ValueError("entry overruns the block")
            key = key[:shared] + block[pos:pos + non_shared]
            pos += non_shared
            out.append((key, block[pos:pos + vlen]))
            pos += vlen
    except ValueError as exc:
        raise ModelFormatError(f"{where}: malformed SSTable entry ({exc})") from None
    return out


def _handle(value: bytes, where: str) -> tuple[int, int]:
    try:
        off, pos = wire.read_varint(value, 0)
        size, _ = wire.read_varint(value, pos)
    except ValueError as exc:
        raise ModelFormatError(f"{where}: malformed BlockHandle ({exc})") from None
    return off, size


def _message(value: int | bytes, name: str) -> bytes:
    """A nested message's bytes; a field of another wire type is a malformed entry (ValueError)."""
    if not isinstance(value, bytes):
        raise ValueError(f"field {name} is not length-delimited")
    return value


def _parse_entry(value: bytes, key: str, where: str) -> BundleEntry:
    dtype, shape, shard, offset, size, crc = 0, [], 0, 0, 0, None
    try:
        for field, _, v in wire.iter_fields(value):
            if field == 1:
                dtype = int(v)
            elif field == 2:
                for f2, _, dim in wire.iter_fields(_message(v, "shape")):
                    if f2 == 2:  # repeated Dim {int64 size = 1; string name = 2}
                        dsize = 0
                        for f3, _, dv in wire.iter_fields(_message(dim, "shape.dim")):
                            if f3 == 1:
                                dsize = wire.to_signed64(int(dv))
                        shape.append(dsize)
                    elif f2 == 3 and v:
                        raise ValueError("unknown-rank shape")
            elif field == 3:
                shard = int(v)
            elif field == 4:
                offset = wire.to_signed64(int(v))
            elif field == 5:
                size = wire.to_signed64(int(v))
            elif field == 6:
                crc = int(v)
            elif field == 7:
                raise ValueError("sliced (partitioned) tensors are not supported")
    except ValueError as exc:
        raise ModelFormatError(f"{where}: key {key!r}: malformed BundleEntryProto ({exc})") from None
    if any(d < 0 for d in shape) or offset < 0 or size < 0:
        raise ModelFormatError(f"{where}: key {key!r}: negative shape/offset/size in BundleEntryProto")
    return BundleEntry(dtype, tuple(shape), shard, offset, size, crc)


def parse_index(index: bytes, where: str = "variables.index") -> tuple[dict, dict[str, BundleEntry]]:
    """Parse a TensorBundle index.

    Returns (header, entries): header = {"num_shards", "endianness"} from `BundleHeaderProto`;
    entries maps each checkpoint key (str) to its `BundleEntry`.
    """
    if len(index) < _FOOTER:
        raise ModelFormatError(f"{where}: {len(index)} bytes, too short for an SSTable footer")
    footer = index[-_FOOTER:]
    (magic,) = struct.unpack_from("<Q", footer, 40)
    if magic != _MAGIC:
        raise ModelFormatError(f"{where}: not a TensorBundle index (bad SSTable magic {magic:#x})")
    try:
        _, pos = wire.read_varint(footer, 0)  # metaindex offset
        _, pos = wire.read_varint(footer, pos)  # metaindex size
        idx_off, pos = wire.read_varint(footer, pos)
        idx_size, pos = wire.read_varint(footer, pos)
    except ValueError as exc:
        raise ModelFormatError(f"{where}: malformed SSTable footer ({exc})") from None
    header = {"num_shards": 1, "endianness": 0}
    entries: dict[str, BundleEntry] = {}
    for _, handle in _block_entries(_block(index, idx_off, idx_size, where), where):
        off, size = _handle(handle, where)
        for key_b, value in _block_entries(_block(index, off, size, where), where):
            if key_b == b"":
                try:
                    for field, _, v in wire.iter_fields(value):
                        if field == 1:
                            header["num_shards"] = int(v)
                        elif field == 2:
                            header["endianness"] = int(v)
                except ValueError as exc:
                    raise ModelFormatError(f"{where}: malformed BundleHeaderProto ({exc})") from None
                continue
            key = key_b.decode("utf-8", "replace")
            entries[key] = _parse_entry(value, key, where)
    if header["endianness"] != 0:
        raise ModelFormatError(f"{where}: big-endian TensorBundle; only little-endian is supported")
    return header, entries


def read_tensor(entry: BundleEntry, shards: list[bytes], key: str, where: str,
                verify: bool = True) -> np.ndarray | None:
    """The tensor of `entry` as a numpy array (a copy); None for DT_STRING entries."""
    if entry.dtype == DT_STRING:
        return None
    if entry.dtype not in DTYPES:
        raise ModelFormatError(f"{where}: key {key!r}: unsupported TensorFlow dtype enum {entry.dtype}")
    if entry.shard_id >= len(shards):
        raise ModelFormatError(f"{where}: key {key!r}: shard {entry.shard_id} missing (have {len(shards)})")
    dt = DTYPES[entry.dtype]
    count = int(np.prod(entry.shape, dtype=np.int64)) if entry.shape else 1
    if count * dt.itemsize != entry.size:
        raise ModelFormatError(
            f"{where}: key {key!r}: size {entry.size} bytes does not match shape {entry.shape} of {dt}")
    shard = shards[entry.shard_id]
    if entry.offset + entry.size > len(shard):
        raise ModelFormatError(f"{where}: key {key!r}: bytes [{entry.offset}, {entry.offset + entry.size}) beyond the "
                               f"{len(shard)}-byte data file")
    raw = memoryview(shard)[entry.offset:entry.offset + entry.size]
    if verify and entry.crc32c is not None and crc32c(raw) != unmask(entry.crc32c):
        raise ModelFormatError(f"{where}: key {key!r}: tensor bytes fail their crc32c check (corrupt data file)")
    return np.frombuffer(raw, dtype=dt).reshape(entry.shape).copy()


_LAYER_KEY = re.compile(r"^layer_with_weights-(\d+)/([^/]+)/\.ATTRIBUTES/VARIABLE_VALUE$")


def layer_variables(entries: dict[str, BundleEntry]) -> dict[int, dict[str, str]]:
    """Group keys `layer_with_weights-i/<var>/.ATTRIBUTES/VARIABLE_VALUE` as {i: {var: key}}.

    Optimizer slots, metrics and `_CHECKPOINTABLE_OBJECT_GRAPH` are ignored.
    """
    layers: dict[int, dict[str, str]] = {}
    for key in entries:
        m = _LAYER_KEY.match(key)
        if m:
            layers.setdefault(int(m.group(1)), {})[m.group(2)] = key
    return layers


def read_layer_weights(index: bytes, shards: list[bytes], where: str,
                       verify: bool = True) -> tuple[list[tuple[str, np.ndarray]], dict[str, np.ndarray]]:
    """Conv weights in checkpoint order and the other per-layer variables.

    Returns (weights, extras): weights = [("layer_with_weights-i/kernel", (3,3,in,out)),
    ("layer_with_weights-i/bias", (out,)), ...] for every i (numeric order) holding a kernel;
    extras = {"layer_with_weights-i/<var>": array} for layers without a kernel (the S1 probe `w`).
    """
    header, entries = parse_index(index, where)
    if header["num_shards"] != len(shards):
        raise ModelFormatError(f"{where}: index names {header['num_shards']} data shards, found {len(shards)}")
    weights: list[tuple[str, np.ndarray]] = []
    extras: dict[str, np.ndarray] = {}
    for i, vars_ in sorted(layer_variables(entries).items()):
        prefix = f"layer_with_weights-{i}"
        if "kernel" in vars_:
            for var in ("kernel", "bias"):
                if var in vars_:
                    arr = read_tensor(entries[vars_[var]], shards, vars_[var], where, verify)
                    if arr is None:  # a DT_STRING entry: never a Keras kernel/bias
                        raise ModelFormatError(f"{where}: key {vars_[var]!r} is a string tensor, expected a float {var}")
                    weights.append((f"{prefix}/{var}", arr))
            unknown = sorted(set(vars_) - {"kernel", "bias"})
            if unknown:
                raise ModelFormatError(f"{where}: {prefix} has unexpected variables {unknown} beside kernel/bias")
        else:
            for var, key in sorted(vars_.items()):
                arr = read_tensor(entries[key], shards, key, where, verify)
                if arr is not None:
                    extras[f"{prefix}/{var}"] = arr
    return weights, extras
