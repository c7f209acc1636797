"""The integer-centre pixel convention (docs/architecture.md, Conventions), shared by every layer.

Patch pixel `(n//2, n//2)` is the centre of an `(…, n, n)` array; a centred window of size `c`
therefore starts at `n//2 − c//2`. No imports: works on numpy arrays and torch tensors alike,
so the model, the reconstruction and the torch-free ONNX runner use the one definition.
"""
from __future__ import annotations

from typing import TypeVar

A = TypeVar("A")


def centre_crop(x: A, size: int) -> A:
    """Central `(…, size, size)` window of the last two axes of `(…, n, n)` (numpy or torch),
    starting at `n//2 − size//2` (its pixel `size//2` is the input's pixel `n//2`)."""
    n = x.shape[-1]  # type: ignore[attr-defined]
    a = n // 2 - size // 2
    return x[..., a : a + size, a : a + size]  # type: ignore[index]


__all__ = ["centre_crop"]
