"""One centred-window definition (`ptychopinn.grid.centre_crop`) for the model, reconstruction and ONNX graph."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ptychopinn.grid import centre_crop
from ptychopinn.model.functional import crop_centre
from ptychopinn.reconstruct.geometry import centre_crop as geometry_crop


def test_one_definition():
    assert crop_centre is centre_crop and geometry_crop is centre_crop


@pytest.mark.parametrize("n, size", [(64, 21), (64, 20), (65, 21), (65, 64), (8, 1)])
def test_window_keeps_the_centre_pixel(n, size):
    """The crop's pixel size//2 is the input's pixel n//2 (integer-centre convention), numpy and torch alike."""
    x = np.arange(n * n, dtype=np.float32).reshape(n, n)
    out = centre_crop(x, size)
    assert out.shape == (size, size)
    assert out[size // 2, size // 2] == x[n // 2, n // 2]
    np.testing.assert_array_equal(centre_crop(torch.from_numpy(x), size).numpy(), out)
