"""A restricted unpickler for the data-only `.dill` files of legacy bundles (spec §6.2, §6.5).

Only plain data can be rebuilt: builtin containers and scalars, numpy arrays / dtypes / scalars
(the globals numpy and dill use to pickle them), and TensorFlow's `convert_to_tensor`, which is
replaced by `numpy.asarray` (params.dill stores the probe as a pickled EagerTensor). Any other
global — `os.system`, `builtins.eval`, `subprocess.*`, a class's `__reduce__` target — is refused
before it is resolved, so nothing from the file is executed. `custom_objects.dill` (pickled ptycho
classes by reference) is never unpickled by this package.
"""
from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

from ptychopinn.errors import ModelFormatError

#: Largest pickle accepted (params.dill is ~35 kB for N=64; N=256 with a complex probe ~0.6 MB)
MAX_PICKLE_BYTES = 64 * 1024 * 1024


def _reconstruct(*args: Any) -> np.ndarray:
    """numpy's `_reconstruct(ndarray, shape, typecode)`; only the plain ndarray type is allowed."""
    if not args or args[0] is not np.ndarray:
        raise pickle.UnpicklingError("numpy _reconstruct of a type other than numpy.ndarray")
    return np.ndarray.__new__(np.ndarray, *args[1:])


def _scalar(dtype: np.dtype, data: bytes = b"") -> np.generic:
    """numpy's `scalar(dtype, bytes)` for non-object dtypes only."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise pickle.UnpicklingError("numpy scalar of an object dtype")
    if len(data) != dtype.itemsize:
        raise pickle.UnpicklingError("numpy scalar byte length does not match its dtype")
    return np.frombuffer(data, dtype=dtype)[0].copy()


def _create_array(f: Any, args: tuple, state: tuple, npdict: dict | None = None) -> np.ndarray:
    """dill's `_create_array`: `f(*args)` then `__setstate__(state)`; `f` must be `_reconstruct`."""
    if f is not _reconstruct:
        raise pickle.UnpicklingError("dill _create_array with a constructor other than numpy _reconstruct")
    if npdict:
        raise pickle.UnpicklingError("dill _create_array with an instance __dict__ (ndarray subclass)")
    arr = f(*args)
    if len(state) >= 3 and isinstance(state[2], np.dtype) and state[2].hasobject:
        raise pickle.UnpicklingError("object-dtype array")
    arr.__setstate__(state)
    return arr


def _as_array(value: Any, *args: Any, **kwargs: Any) -> np.ndarray:
    """Stand-in for `tensorflow...convert_to_tensor`: the wrapped ndarray itself."""
    if not isinstance(value, np.ndarray) or value.dtype.hasobject:
        raise pickle.UnpicklingError("convert_to_tensor of something other than a numeric ndarray")
    return np.asarray(value)


def _dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
    dt = np.dtype(spec, align, copy)
    if dt.hasobject:
        raise pickle.UnpicklingError("object dtype")
    return dt


_NUMPY_CORE = {"_reconstruct": _reconstruct, "scalar": _scalar}

#: (module, name) → the object the unpickler may hand back. Nothing else resolves.
ALLOWED: dict[tuple[str, str], Any] = {
    **{("builtins", t.__name__): t for t in (dict, list, tuple, set, frozenset, str, bytes, bytearray,
                                             int, float, complex, bool, slice, range)},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("dill._dill", "_create_array"): _create_array,
    ("tensorflow.python.framework.ops", "convert_to_tensor"): _as_array,
    ("tensorflow.python.framework.ops", "convert_to_tensor_v2"): _as_array,
    ("tensorflow.python.framework.ops", "convert_to_tensor_v2_with_dispatch"): _as_array,
}


class RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` whose `find_class` resolves only the data types of `ALLOWED`."""

    def __init__(self, file: io.BufferedIOBase, where: str) -> None:
        super().__init__(file)
        self._where = where

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102
        target = ALLOWED.get((module, name))
        if target is None:
            raise ModelFormatError(
                f"{self._where}: refused to unpickle global {module}.{name} (only plain data, numpy arrays "
                "and TF tensors are allowed)")
        return target

    def persistent_load(self, pid: Any) -> Any:  # noqa: D102
        raise ModelFormatError(f"{self._where}: refused persistent id in pickle")


def _to_plain(value: Any) -> Any:
    """numpy scalars → Python scalars, recursively in dicts/lists/tuples; arrays are kept."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_to_plain(v) for v in value)
    return value


def safe_loads(data: bytes, where: str, *, plain_scalars: bool = True) -> Any:
    """Unpickle `data` with `RestrictedUnpickler`; `where` names the file in errors.

    Raises ModelFormatError for refused globals or any malformed pickle; nothing is executed.
    """
    if len(data) > MAX_PICKLE_BYTES:
        raise ModelFormatError(f"{where}: {len(data)} bytes, larger than the {MAX_PICKLE_BYTES}-byte pickle limit")
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), where).load()
    except ModelFormatError:
        raise
    except RecursionError:
        raise ModelFormatError(f"{where}: pickle nested too deeply") from None
    except Exception as exc:  # noqa: BLE001 - any failure of a hostile/corrupt pickle is a format error
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelFormatError(f"{where}: not a readable data pickle ({type(exc).__name__}: {msg})") from None
    return _to_plain(obj) if plain_scalars else obj


def load_params(data: bytes, where: str) -> dict[str, Any]:
    """params.dill → dict of legacy keys; `probe` (if any) as a numpy array (squeezed later)."""
    obj = safe_loads(data, where)
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise ModelFormatError(f"{where}: expected a dict with str keys, got {type(obj).__name__}")
    return obj


def load_manifest(data: bytes, where: str) -> dict[str, Any]:
    """manifest.dill → {'models': [names...], 'version': str}, validated."""
    obj = safe_loads(data, where)
    models = obj.get("models") if isinstance(obj, dict) else None
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        raise ModelFormatError(f"{where}: key 'models': expected a non-empty list of model names")
    return obj
