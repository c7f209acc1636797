"""TensorBundle (S1 checkpoint) reading: CRC-32C, SSTable parsing, BundleEntryProto decoding."""
from __future__ import annotations

import struct
import zipfile

import numpy as np
import pytest

from ptychopinn.errors import ModelFormatError
from ptychopinn.interop.tf_bundle.crc32c import crc32c, mask, unmask
from ptychopinn.interop.tf_bundle.tensorbundle import parse_index, read_layer_weights, read_tensor
from tests.conftest import load_bundle_fixture

S1 = "s1_savedmodel_n64_gs1"


def _crc_oracle(data: bytes) -> int:
    """Bit-by-bit CRC-32C: the definition, slow."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_crc32c_known_vectors_and_oracle():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4 test vector
    rng = np.random.default_rng(0)
    for n in (1, 4095, 4096, 4097, 20_011, 70_000):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert crc32c(data) == _crc_oracle(data), n
    for v in (0, 1, 0xDEADBEEF, 0xFFFFFFFF):
        assert unmask(mask(v)) == v


# --- a tiny independent SSTable / BundleEntryProto writer, the oracle for the parser -------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(no: int, wtype: int, payload: bytes | int) -> bytes:
    key = _varint(no << 3 | wtype)
    if wtype == 0:
        return key + _varint(payload)
    if wtype == 5:
        return key + struct.pack("<I", payload)
    return key + _varint(len(payload)) + payload


def _entry_proto(dtype: int, shape: tuple, offset: int, data: bytes) -> bytes:
    dims = b"".join(_field(2, 2, _field(1, 0, d)) for d in shape)
    return (_field(1, 0, dtype) + _field(2, 2, dims) + _field(4, 0, offset) + _field(5, 0, len(data))
            + _field(6, 5, mask(crc32c(data))))


def _block(entries: list[tuple[bytes, bytes]], restart_every: int = 3) -> bytes:
    out, restarts, prev = bytearray(), [], b""
    for i, (k, v) in enumerate(entries):
        shared = 0
        if i % restart_every == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(k), len(prev)) and k[shared] == prev[shared]:
                shared += 1
        out += _varint(shared) + _varint(len(k) - shared) + _varint(len(v)) + k[shared:] + v
        prev = k
    out += b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))
    return bytes(out)


def _with_trailer(block: bytes, ctype: int = 0) -> bytes:
    return block + bytes([ctype]) + struct.pack("<I", mask(crc32c(block + bytes([ctype]))))


def _write_bundle(tensors: dict[str, np.ndarray], ctype: int = 0, retype: dict[str, int] | None = None) -> tuple[bytes, bytes]:
    """retype: {key: TF dtype enum} written instead of the array's own (malformed bundles)."""
    codes = {np.dtype("<f4"): 1, np.dtype("<f8"): 2, np.dtype("<i4"): 3, np.dtype("<c8"): 8, np.dtype("<i8"): 9}
    data = bytearray()
    entries = [(b"", _field(1, 0, 1))]  # BundleHeaderProto{num_shards: 1}
    for key in sorted(tensors):
        arr = np.array(tensors[key], order="C")
        raw = arr.tobytes()
        entries.append((key.encode(), _entry_proto((retype or {}).get(key, codes[arr.dtype]), arr.shape, len(data), raw)))
        data += raw
    # two data blocks, to exercise the index block
    half = len(entries) // 2
    index = bytearray()
    handles = []
    for chunk in (entries[:half], entries[half:]):
        blk = _block(chunk)
        handles.append((chunk[-1][0], _varint(len(index)) + _varint(len(blk))))
        index += _with_trailer(blk, ctype)
    idx_block = _block(handles, restart_every=1)
    idx_off = len(index)
    index += _with_trailer(idx_block)
    meta_block = _block([])
    meta_off = len(index)
    index += _with_trailer(meta_block)
    footer = _varint(meta_off) + _varint(len(meta_block)) + _varint(idx_off) + _varint(len(idx_block))
    footer = footer.ljust(40, b"\0") + struct.pack("<Q", 0xDB4775248B80FB57)
    return bytes(index + footer), bytes(data)


def _toy_tensors(rng) -> dict[str, np.ndarray]:
    t = {}
    for i in (0, 1, 2, 10):  # numeric, not lexicographic, order must win: 0, 1, 2, 10
        t[f"layer_with_weights-{i}/kernel/.ATTRIBUTES/VARIABLE_VALUE"] = rng.standard_normal((3, 3, 2, i + 1)).astype("<f4")
        t[f"layer_with_weights-{i}/bias/.ATTRIBUTES/VARIABLE_VALUE"] = rng.standard_normal(i + 1).astype("<f4")
    t["layer_with_weights-11/w/.ATTRIBUTES/VARIABLE_VALUE"] = (rng.standard_normal((1, 4, 4, 1))
                                                              + 1j * rng.standard_normal((1, 4, 4, 1))).astype("<c8")
    t["optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE"] = np.array(5, dtype="<i8")
    t["save_counter/.ATTRIBUTES/VARIABLE_VALUE"] = np.array([1.0, 2.0], dtype="<f8")
    return t


def test_round_trip_through_independent_writer():
    tensors = _toy_tensors(np.random.default_rng(1))
    index, data = _write_bundle(tensors)
    header, entries = parse_index(index)
    assert header == {"num_shards": 1, "endianness": 0}
    assert set(entries) == set(tensors)
    for key, arr in tensors.items():
        out = read_tensor(entries[key], [data], key, "toy")
        assert out.dtype == arr.dtype and out.shape == arr.shape and np.array_equal(out, arr)
    weights, extras = read_layer_weights(index, [data], "toy")
    assert [n for n, _ in weights] == [f"layer_with_weights-{i}/{v}" for i in (0, 1, 2, 10) for v in ("kernel", "bias")]
    assert weights[-2][1].shape == (3, 3, 2, 11)
    assert list(extras) == ["layer_with_weights-11/w"]


def test_corruption_is_detected():
    index, data = _write_bundle(_toy_tensors(np.random.default_rng(2)))
    bad = bytearray(index)
    bad[10] ^= 0xFF  # inside the first data block
    with pytest.raises(ModelFormatError, match="crc32c"):
        parse_index(bytes(bad), "variables.index")
    with pytest.raises(ModelFormatError, match="magic"):
        parse_index(index[:-1] + b"\0", "variables.index")
    with pytest.raises(ModelFormatError, match="too short"):
        parse_index(index[:20], "variables.index")
    bad_data = bytearray(data)
    bad_data[3] ^= 0x01
    with pytest.raises(ModelFormatError, match="crc32c"):
        read_layer_weights(index, [bytes(bad_data)], "toy")
    with pytest.raises(ModelFormatError, match="beyond"):
        read_layer_weights(index, [data[:100]], "toy", verify=False)
    snappy_index, _ = _write_bundle(_toy_tensors(np.random.default_rng(3)), ctype=1)
    with pytest.raises(ModelFormatError, match="snappy"):
        parse_index(snappy_index, "variables.index")


def test_s1_fixture_checkpoint_matches_tf_weights():
    folder, ref, _ = load_bundle_fixture(S1)
    with zipfile.ZipFile(folder / "wts.h5.zip") as zf:
        for model in ("diffraction_to_obj", "autoencoder"):
            index = zf.read(f"{model}/variables/variables.index")
            data = zf.read(f"{model}/variables/variables.data-00000-of-00001")
            _, entries = parse_index(index)
            assert "_CHECKPOINTABLE_OBJECT_GRAPH" in entries  # present, and ignored below
            weights, extras = read_layer_weights(index, [data], model)
            n = len([k for k in ref if k.startswith("d2o_w") and k[5:].isdigit()])
            assert len(weights) == n == 44
            for i, (_, arr) in enumerate(weights):
                expected = ref[f"d2o_w{i:03d}"]
                assert arr.dtype == expected.dtype and np.array_equal(arr, expected), i
            if model == "autoencoder":
                assert list(extras) == ["layer_with_weights-22/w"]
                assert np.array_equal(extras["layer_with_weights-22/w"], ref["ae_extra_w044"])
            else:
                assert extras == {}


def test_entry_with_a_varint_shape_is_a_format_error():
    """A BundleEntryProto whose shape (field 2) is a varint, not a message: one ModelFormatError."""
    from ptychopinn.interop.tf_bundle.tensorbundle import _parse_entry

    with pytest.raises(ModelFormatError, match="shape"):
        _parse_entry(b"\x08\x01\x10\x05", "layer/kernel", "toy")  # dtype=1, then field 2 as varint 5
    dim_varint = b"\x12\x02\x10\x07"  # shape = message{ field 2 (Dim) as varint 7 }
    with pytest.raises(ModelFormatError, match="shape.dim"):
        _parse_entry(b"\x08\x01" + dim_varint, "layer/kernel", "toy")


def test_string_typed_kernel_is_a_format_error():
    """A DT_STRING kernel (a malformed or foreign checkpoint) fails with one line, not a None weight."""
    key = "layer_with_weights-1/kernel/.ATTRIBUTES/VARIABLE_VALUE"
    index, data = _write_bundle(_toy_tensors(np.random.default_rng(2)), retype={key: 7})  # 7 = DT_STRING
    with pytest.raises(ModelFormatError, match="string tensor, expected a float kernel"):
        read_layer_weights(index, [data], "toy")
