"""Keras weight order and layout mapping (`ptychopinn.interop.keras_layout`, spec §3.1)."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from ptychopinn.config import ModelConfig
from ptychopinn.errors import ModelFormatError
from ptychopinn.interop.keras_layout import (
    export_keras_weights,
    keras_weight_order,
    keras_weight_shapes,
    load_keras_weights,
)
from ptychopinn.model import PtychoPINN
from ptychopinn.model.architecture import decoder_convs, encoder_convs

from ._fixtures import ERAS, config_from_params, fixture_arrays


@pytest.mark.parametrize("name", sorted(ERAS))
def test_order_matches_fixture_shapes(name):
    arrays, _ = fixture_arrays(name)
    config = config_from_params(json.loads(str(arrays["params_json"])), *ERAS[name])
    expected = [tuple(s) for s in json.loads(str(arrays["d2o_weight_shapes_json"]))]
    assert keras_weight_shapes(config) == expected
    assert len(keras_weight_order(config)) == len(expected) // 2 == 22


def _construction_order(config: ModelConfig) -> list[str]:
    """Keras layer creation order (spec §3.1): encoder; per decoder head1, head2, blocks, x2 block."""
    paths = [s.path for s in encoder_convs(config)]
    for which in ("amp", "phase"):
        convs = decoder_convs(config, which)
        roles = ["head1", "head2"] + [r for r in convs if r.startswith("blocks.")] + ["x2_block.conv1", "x2_block.conv2"]
        paths += [convs[r].path for r in roles]
    return paths


@pytest.mark.parametrize("name", sorted(ERAS))
def test_order_matches_fixture_layer_names(name):
    """Keras auto-names count construction order: conv2d_{base+k} is the k-th conv built.

    Mapping each weight's layer name back through the construction order must give exactly
    `keras_weight_order` (an independent check of the amp/phase interleaving).
    """
    arrays, _ = fixture_arrays(name)
    config = config_from_params(json.loads(str(arrays["params_json"])), *ERAS[name])
    names = [str(n) for n in arrays["d2o_weight_names"][::2]]
    numbers = [int(m.group(1)) if (m := re.match(r"conv2d(?:_(\d+))?/kernel", n)).group(1) else 0 for n in names]
    base = min(numbers)
    built = _construction_order(config)
    assert [built[k - base] for k in numbers] == keras_weight_order(config)


def test_spec_table_probe_small_gs1():
    """Spec §3.1 table: N=64, nfs=2, gridsize 1, probe.big False: 16 convs, 2,252,026 parameters."""
    config = ModelConfig(N=64, gridsize=1, n_filters_scale=2, probe_big=False)
    shapes = keras_weight_shapes(config)[::2]
    assert shapes == [
        (3, 3, 1, 64), (3, 3, 64, 64), (3, 3, 64, 128), (3, 3, 128, 128), (3, 3, 128, 256), (3, 3, 256, 256),
        (3, 3, 256, 128), (3, 3, 256, 128), (3, 3, 128, 128), (3, 3, 128, 128),
        (3, 3, 128, 64), (3, 3, 128, 64), (3, 3, 64, 64), (3, 3, 64, 64), (3, 3, 60, 1), (3, 3, 60, 1),
    ]  # fmt: skip
    assert keras_weight_order(config)[14:] == ["decoder_amp.head1", "decoder_phase.head1"]
    model = PtychoPINN(config)
    convs = sum(p.numel() for n, p in model.named_parameters() if n != "log_intensity_scale")
    assert convs == 2_252_026
    assert convs == sum(int(np.prod(s)) for s in keras_weight_shapes(config))


def test_spec_table_gs2_head_widths():
    k2 = keras_weight_shapes(ModelConfig(N=64, gridsize=2, n_filters_scale=2, probe_big=False))[::2]
    assert k2[0] == (3, 3, 4, 64) and k2[14] == (3, 3, 60, 4) and k2[15] == (3, 3, 60, 4)
    k1 = keras_weight_shapes(ModelConfig(N=64, gridsize=2, n_filters_scale=2, probe_big=False, amp_head_channels=1))[::2]
    assert k1[14] == (3, 3, 60, 1) and k1[15] == (3, 3, 60, 4)


def test_spec_probe_big_order():
    order = keras_weight_order(ModelConfig(N=64, gridsize=2, n_filters_scale=2, probe_big=True))
    assert len(order) == 22
    assert order[14:] == [
        "decoder_amp.x2_block.conv1", "decoder_phase.x2_block.conv1",
        "decoder_amp.x2_block.conv2", "decoder_phase.x2_block.conv2",
        "decoder_amp.head2", "decoder_phase.head2", "decoder_amp.head1", "decoder_phase.head1",
    ]  # fmt: skip
    shapes = keras_weight_shapes(ModelConfig(N=64, gridsize=2, n_filters_scale=2, probe_big=True))[::2]
    assert shapes[14] == (3, 3, 4, 64) and shapes[16] == (3, 3, 64, 64) and shapes[18] == (3, 3, 64, 4)


@pytest.mark.parametrize(
    "N, enc, dec, x2",
    [
        (128, [32, 32, 64, 64, 128, 128, 256, 256], [256, 256, 128, 128, 64, 64], 32),
        (256, [16, 16, 32, 32, 64, 64, 128, 128, 256, 256], [512, 512, 256, 256, 128, 128, 64, 64], 16),
    ],
)
def test_general_rule_other_N(N, enc, dec, x2):
    config = ModelConfig(N=N, gridsize=1, n_filters_scale=2, probe_big=True)
    shapes = keras_weight_shapes(config)[::2]
    n_enc, n_dec = len(enc), 2 * len(dec)
    assert len(shapes) == n_enc + n_dec + 8
    assert [s[3] for s in shapes[:n_enc]] == enc
    assert [s[3] for s in shapes[n_enc : n_enc + n_dec : 2]] == dec
    assert [s[3] for s in shapes[n_enc + 1 : n_enc + n_dec : 2]] == dec
    assert shapes[n_enc + n_dec] == (3, 3, 4, x2)
    assert shapes[-2:] == [(3, 3, 60, 1), (3, 3, 60, 1)]


def test_pad_object_false_order():
    config = ModelConfig(N=64, gridsize=1, n_filters_scale=1, pad_object=False)
    order = keras_weight_order(config)
    assert order[-2:] == ["decoder_amp.head2", "decoder_phase.head2"] and len(order) == 20
    assert keras_weight_shapes(config)[28] == (3, 3, 32, 32)  # x2 block takes all F channels


def _random_model(config: ModelConfig, seed: int) -> PtychoPINN:
    torch.manual_seed(seed)
    return PtychoPINN(config)


def test_layout_transpose():
    config = ModelConfig(N=64, gridsize=2, n_filters_scale=1)
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in keras_weight_shapes(config)]
    model = PtychoPINN(config)
    load_keras_weights(model, arrays)
    w = dict(model.named_parameters())
    for k, path in enumerate(keras_weight_order(config)):
        kernel, weight = arrays[2 * k], w[f"{path}.weight"].detach().numpy()
        out_c, in_c = weight.shape[:2]
        for o, i, r, c in [(0, 0, 2, 0), (out_c - 1, in_c - 1, 0, 1), (out_c // 2, in_c // 3, 1, 2)]:
            assert weight[o, i, r, c] == kernel[r, c, i, o]  # row r, column c of the 3×3 window
        np.testing.assert_array_equal(weight, kernel.transpose(3, 2, 0, 1))
        np.testing.assert_array_equal(w[f"{path}.bias"].detach().numpy(), arrays[2 * k + 1])


@pytest.mark.parametrize("config", [ModelConfig(N=64, gridsize=2, n_filters_scale=1), ModelConfig(N=64, probe_big=False, n_filters_scale=1)])
def test_round_trip(config):
    a, b = _random_model(config, 1), _random_model(config, 2)
    exported = export_keras_weights(a)
    assert [x.shape for x in exported] == keras_weight_shapes(config)
    load_keras_weights(b, exported)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    for x, y in zip(exported, export_keras_weights(b)):
        np.testing.assert_array_equal(x, y)


def test_errors_name_index_and_shapes():
    config = ModelConfig(N=64, gridsize=1, n_filters_scale=1)
    model = _random_model(config, 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    arrays = export_keras_weights(_random_model(config, 4))
    with pytest.raises(ModelFormatError, match=r"expected 44 arrays .* got 43"):
        load_keras_weights(model, arrays[:-1])
    bad = list(arrays)
    bad[40] = np.zeros((3, 3, 32, 1), np.float32)  # head1 amp kernel expects (3, 3, 28, 1)
    with pytest.raises(ModelFormatError, match=r"weight index 40 \(decoder_amp\.head1\.weight\) has shape \(3, 3, 32, 1\), expected \(3, 3, 28, 1\)"):
        load_keras_weights(model, bad, source="x.h5")
    bad = list(arrays)
    bad[1] = np.zeros(31, np.float32)
    with pytest.raises(ModelFormatError, match=r"x\.h5: weight index 1 .* \(31,\), expected \(32,\)"):
        load_keras_weights(model, bad, source="x.h5")
    for k, v in model.state_dict().items():  # nothing was copied
        assert torch.equal(v, before[k]), k


def test_module_imports_no_torch():
    code = "import sys, ptychopinn.interop.keras_layout as k; from ptychopinn.config import ModelConfig; " \
        "assert len(k.keras_weight_order(ModelConfig())) == 22; assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
