"""Lazy, read-only array views over scan files (memory-mapped NPZ members, HDF5 datasets).

`LazyArray` is what `Scan.diffraction` (and `Scan.Y`) hold when read from a file: it supports
`len`, `.shape`, `.dtype`, `.ndim`, `np.asarray` and `__getitem__` with an int, a slice, an
integer index array or a boolean mask on the first axis (optionally followed by more indices),
and returns a fresh numpy array of the target dtype. Layout fixes (legacy `(N, N, M)`, a
trailing singleton axis) and down-casts (float64 → float32, complex128 → complex64) are applied
per read, so nothing is materialised up front. numpy, h5py only; no torch.
"""
from __future__ import annotations

import os
from typing import Any, Iterator

import numpy as np

__all__ = ["LazyArray", "H5Source", "iter_chunks"]

#: bytes per chunk when a whole lazy array is scanned (validation, normalisation)
CHUNK_BYTES = 64 * 2**20


class H5Source:
    """A picklable handle on one HDF5 dataset, (re)opened once per process.

    Forked DataLoader workers must not share an HDF5 file handle, so the open file is cached
    together with the process id and reopened after a fork; pickling drops it.
    """

    def __init__(self, path: str | os.PathLike[str], name: str) -> None:
        self.path = str(path)
        self.name = name
        self._pid: int | None = None
        self._file: Any = None
        self._dset: Any = None
        ds = self._dataset()
        self.shape: tuple[int, ...] = tuple(int(s) for s in ds.shape)
        self.dtype = np.dtype(ds.dtype)

    def _dataset(self) -> Any:
        if self._dset is None or self._pid != os.getpid():
            import h5py

            self._file = h5py.File(self.path, "r")
            self._dset = self._file[self.name]
            self._pid = os.getpid()
        return self._dset

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_pid=None, _file=None, _dset=None)
        return state

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = self._dset = self._pid = None

    def read(self, key: Any) -> np.ndarray:
        """Read `key` (an int, a slice, or a tuple whose first item is either)."""
        return np.asarray(self._dataset()[key])

    def take(self, index: np.ndarray, axis: int) -> np.ndarray:
        """Rows `index` (any order, repeats allowed) along `axis`.

        h5py wants increasing, unique indices, so read the sorted unique set (as one contiguous
        block when it is dense enough) and expand with the inverse permutation.
        """
        uniq, inverse = np.unique(index, return_inverse=True)
        if uniq.size == 0:
            shape = list(self.shape)
            shape[axis] = 0
            return np.empty(shape, dtype=self.dtype)
        lo, hi = int(uniq[0]), int(uniq[-1]) + 1
        sel: list[Any] = [slice(None)] * len(self.shape)
        if hi - lo <= 4 * uniq.size:
            sel[axis] = slice(lo, hi)
            block = np.take(self.read(tuple(sel)), uniq - lo, axis=axis)
        else:
            sel[axis] = uniq
            block = self.read(tuple(sel))
        return np.take(block, inverse.reshape(-1), axis=axis)


class LazyArray:
    """A read-only view of a stored array with the contract's layout and dtype.

    `source` is an `np.ndarray`/`np.memmap` or an `H5Source` holding the raw stored layout;
    `legacy` means it is stored `(N, N, M)` (first axis of this view = last stored axis);
    `squeeze` drops a trailing singleton axis; `dtype` is the dtype returned by reads.
    `transform` (e.g. `detector.DetectorTransform`: counts → sqrt, crop, bin) maps each block of
    rows `(k, S, S)` in the contract layout to `(k, n, n)`, `n = transform.out_size(S)`; it is
    applied per read, so the stored array is never materialised.
    """

    def __init__(
        self, source: Any, dtype: Any, *, legacy: bool = False, squeeze: bool = False, transform: Any = None
    ) -> None:
        self.source = source
        self.dtype = np.dtype(dtype)
        self.legacy = legacy
        self.squeeze = squeeze
        self.transform = transform
        shape = tuple(int(s) for s in source.shape)
        if squeeze:
            shape = shape[:-1]
        if legacy:
            shape = (shape[-1], *shape[:-1])
        if transform is not None:
            n = int(transform.out_size(shape[-1]))
            shape = (*shape[:-2], n, n)
        self.shape: tuple[int, ...] = shape

    # --- pickling: memory maps travel as (file, offset) so DataLoader workers re-map them -----
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        src = self.source
        if isinstance(src, np.memmap) and src.filename is not None and src.base is not None:
            order = "F" if (src.flags.f_contiguous and not src.flags.c_contiguous) else "C"
            state["source"] = ("__memmap__", src.filename, src.offset, src.dtype.str, src.shape, order)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        src = state["source"]
        if isinstance(src, tuple) and src and src[0] == "__memmap__":
            _, filename, offset, dtype, shape, order = src
            state["source"] = np.memmap(filename, dtype=np.dtype(dtype), mode="r", offset=offset, shape=shape, order=order)
        self.__dict__.update(state)

    # --- array protocol -------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def row_nbytes(self) -> int:
        """Working bytes per row of one read: the output row, or with a transform the stored
        frame plus its float64 working copy (what chunked scans must budget for)."""
        out = int(np.prod(self.shape[1:])) * self.dtype.itemsize
        if self.transform is None:
            return out
        frame = int(np.prod(self.source.shape)) // max(1, int(self.shape[0]))
        return max(out, frame * (np.dtype(self.source.dtype).itemsize + 8))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        kind = "hdf5" if isinstance(self.source, H5Source) else "memory-mapped/in-memory"
        return f"LazyArray(shape={self.shape}, dtype={self.dtype}, {kind})"

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, key: Any) -> np.ndarray:
        rest: tuple[Any, ...] = ()
        if isinstance(key, tuple):
            if not key:
                key = slice(None)
            else:
                key, rest = key[0], key[1:]
        out = self._read_first_axis(key)
        if self.transform is not None:
            out = self.transform(out)
        if rest:
            lead = (slice(None),) if out.ndim == self.ndim else ()
            out = out[lead + rest] if lead else out[rest]
        return np.array(out, dtype=self.dtype, copy=True) if out.dtype != self.dtype or _is_view(out) else out

    # --- reading --------------------------------------------------------------------------
    def _read_first_axis(self, key: Any) -> np.ndarray:
        M = self.shape[0]
        if isinstance(key, (int, np.integer)):
            i = int(key)
            if not -M <= i < M:
                raise IndexError(f"index {i} is out of bounds for axis 0 with size {M}")
            return self._read_rows(i % M)
        if isinstance(key, slice):
            return self._read_rows(slice(*key.indices(M)))
        if key is Ellipsis:
            return self._read_rows(slice(0, M))
        index = np.asarray(key)
        if index.dtype == bool:
            if index.shape != (M,):
                raise IndexError(f"boolean index of shape {index.shape} does not match axis 0 of size {M}")
            index = np.flatnonzero(index)
        if index.dtype.kind not in "iu":
            raise IndexError(f"unsupported index {key!r}; use an int, a slice or an integer array")
        index = index.astype(np.int64)
        if index.size and (index.min() < -M or index.max() >= M):
            raise IndexError(f"index out of bounds for axis 0 with size {M}")
        index = index % M if index.size else index
        flat = self._read_rows(index.reshape(-1))
        return flat.reshape(index.shape + flat.shape[1:])

    def _read_rows(self, sel: int | slice | np.ndarray) -> np.ndarray:
        """Rows of the contract layout; `sel` already normalised (non-negative)."""
        src = self.source
        ndim_src = len(src.shape)
        axis = ndim_src - 1 - (1 if self.squeeze else 0) if self.legacy else 0
        tail: tuple[Any, ...] = (0,) if self.squeeze else ()
        if not isinstance(src, (np.ndarray, H5Source)):  # another lazy array: index it directly
            raw = src[(slice(None),) * axis + (sel,)] if axis else src[sel]
            if self.squeeze:
                raw = raw[..., 0]
        elif isinstance(sel, np.ndarray):
            if isinstance(src, H5Source):
                raw = src.take(sel, axis)
            else:
                raw = np.take(src, sel, axis=axis)
            if self.squeeze:
                raw = raw[..., 0]
        else:
            idx: list[Any] = [slice(None)] * (ndim_src - len(tail))
            idx[axis] = sel
            full = tuple(idx) + tail
            raw = src.read(full) if isinstance(src, H5Source) else src[full]
        if self.legacy and not isinstance(sel, int):
            raw = np.moveaxis(raw, -1, 0)
        return raw


def _is_view(a: np.ndarray) -> bool:
    """True when `a` shares memory with a file map (so the caller must get a copy)."""
    return isinstance(a, np.memmap) or a.base is not None


def iter_chunks(array: Any, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, np.ndarray]]:
    """Yield `(start, rows)` blocks covering the first axis of a (lazy) array."""
    shape = tuple(array.shape)
    row_bytes = max(1, int(getattr(array, "row_nbytes", 0)) or int(np.prod(shape[1:])) * np.dtype(array.dtype).itemsize)
    step = max(1, chunk_bytes // row_bytes)
    for start in range(0, shape[0], step):
        yield start, np.asarray(array[start : start + step])

