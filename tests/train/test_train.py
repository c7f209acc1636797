"""Training workflow: outputs, exact resume, split without leakage, clear errors, AMP/compile.

Data: a tiny simulated scan (N=64, 10–12 positions, nfs=1) so each test runs a few steps.
"""
from __future__ import annotations

import json
import logging
import math
import random

import numpy as np
import pytest
import torch

from ptychopinn.config import DataConfig, ModelConfig, SimulationConfig, TrainConfig
from ptychopinn.errors import ConfigError, DataError

TINY_MODEL = dict(n_filters_scale=1)


@pytest.fixture(scope="module")
def scan_path(tmp_path_factory):
    from ptychopinn.simulate import simulate_to_file

    cfg = SimulationConfig(N=64, object_size=96, n_positions=12, nphotons=1e6, seed=3)
    return simulate_to_file(cfg, tmp_path_factory.mktemp("scan") / "tiny.npz")


def _tc(**kw):
    base = dict(epochs=1, batch_size=8, device="cpu", validation_fraction=0.25, seed=1)
    base.update(kw)
    return TrainConfig(**base)


def test_train_writes_model_metrics_and_checkpoint(scan_path, tmp_path, caplog):
    import ptychopinn as pp
    from ptychopinn.io import load_model, read_model_info

    out = tmp_path / "model"
    with caplog.at_level(logging.INFO, logger="ptychopinn"):
        result = pp.train(scan_path, ModelConfig(**TINY_MODEL), DataConfig(nphotons=1e9), _tc(), out_dir=out, progress=False)
    # nphotons comes from the scan metadata (1e6), and the log says so
    assert result.nphotons == 1e6
    assert result.intensity_scale == pytest.approx(math.sqrt(1e6) / 32)
    assert any("nphotons" in r.getMessage() and "metadata" in r.getMessage() for r in caplog.records)
    # native model at out/, same weights as the returned model
    loaded = load_model(out)
    for k, v in result.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k].cpu(), v.cpu()), k
    info = read_model_info(out)
    training = info.extra["training"]
    assert training["normalization_factor"] == pytest.approx(result.normalization_factor)
    assert training["intensity_scale"] == pytest.approx(result.intensity_scale)
    assert training["data_config"]["gridsize"] == 1 and len(training["history"]) == 1
    # metrics.jsonl: one line per epoch
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["epoch"] == 1 and math.isfinite(rows[0]["loss"]) and rows[0]["val_loss"] is not None
    # checkpoint: model + JSON/safetensors training state, no pickle
    ck = out / "checkpoint"
    assert {p.name for p in ck.iterdir()} == {"config.json", "model.safetensors", "training_state.json", "training_state.safetensors"}
    state = json.loads((ck / "training_state.json").read_text())
    assert state["epoch"] == 1 and state["optimizer"]["param_groups"][0]["eps"] == 1e-7
    # the model input really is f·s·d: mean per-pattern Σ x² over the groups ≈ nphotons
    from ptychopinn.data import load_scan

    scan = load_scan(scan_path)
    d = np.asarray(scan.diffraction[:], dtype=np.float64)
    x2 = ((result.normalization_factor * result.intensity_scale * d) ** 2).sum(axis=(1, 2)).mean()
    assert x2 == pytest.approx(1e6, rel=1e-4)


@pytest.mark.slow
def test_resume_continues_exactly(scan_path, tmp_path):
    from ptychopinn.io import load_model
    from ptychopinn.train import train

    # 9 training groups in batches of 5: two steps per epoch, a partial last batch
    tc2 = _tc(epochs=2, deterministic=True, batch_size=5)
    one_go = train(scan_path, ModelConfig(**TINY_MODEL), None, tc2, out_dir=tmp_path / "a", progress=False)
    train(scan_path, ModelConfig(**TINY_MODEL), None, _tc(epochs=1, deterministic=True, batch_size=5), out_dir=tmp_path / "b", progress=False)
    after_one = load_model(tmp_path / "b").state_dict()
    # disturb every global RNG between the runs: resume must restore them
    torch.manual_seed(999), np.random.seed(999), random.seed(999)
    resumed = train(scan_path, ModelConfig(**TINY_MODEL), None, tc2, out_dir=tmp_path / "b", resume=True, progress=False)
    sa, sb = one_go.model.state_dict(), resumed.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert [h["loss"] for h in one_go.history] == [h["loss"] for h in resumed.history]
    assert [h["lr"] for h in one_go.history] == [h["lr"] for h in resumed.history]
    assert len((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()) == 2
    # the resumed epoch really trained (so the equality above is not vacuous)
    assert any(not torch.equal(after_one[k], sb[k]) for k in sb)


def test_validation_split_is_by_region_without_leakage():
    from ptychopinn.data import make_scan
    from ptychopinn.simulate import simulate
    from ptychopinn.train import train

    scan = make_scan(**simulate(SimulationConfig(N=64, object_size=96, n_positions=30, nphotons=1e6, seed=3)))
    # gridsize 2: groups overlap, so a random split over groups would share patterns
    r = train(
        scan,
        ModelConfig(gridsize=2, **TINY_MODEL),
        DataConfig(gridsize=2),
        _tc(validation_fraction=0.3, batch_size=32),
        progress=False,
    )
    assert r.val_index.size > 0 and r.train_index.size > 0
    train_pos = set(r.groups.indices[r.train_index].ravel().tolist())
    val_pos = set(r.groups.indices[r.val_index].ravel().tolist())
    assert train_pos.isdisjoint(val_pos)
    assert r.n_val_groups == r.val_index.size and math.isfinite(r.history[0]["val_loss"])


def test_supervised_without_labels_is_a_clear_error(tmp_path):
    from ptychopinn.data import make_scan
    from ptychopinn.simulate import simulate
    from ptychopinn.train import train

    arrays = simulate(SimulationConfig(N=64, object_size=80, n_positions=4, seed=0))
    arrays.pop("objectGuess")
    scan = make_scan(**arrays)
    out = tmp_path / "never"
    with pytest.raises(DataError, match="objectGuess"):
        train(scan, ModelConfig(**TINY_MODEL), None, _tc(model_type="supervised"), out_dir=out, progress=False)
    assert not out.exists()


def test_supervised_with_object_trains(scan_path):
    from ptychopinn.train import train

    r = train(scan_path, ModelConfig(**TINY_MODEL), None, _tc(model_type="supervised", validation_fraction=0.0), progress=False)
    assert set(r.history[0]["parts"]) == {"mae"} and r.history[0]["loss"] > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(epochs=0), "epochs"),
        (dict(amp="fp8"), "amp"),
        (dict(model_type="gan"), "model_type"),
        (dict(validation_fraction=1.0), "validation_fraction"),
    ],
)
def test_bad_train_config(scan_path, kwargs, match):
    from ptychopinn.train import train

    with pytest.raises(ConfigError, match=match):
        train(scan_path, ModelConfig(**TINY_MODEL), None, _tc(**kwargs), progress=False)


def test_resume_and_out_dir_errors(scan_path, tmp_path):
    from ptychopinn.train import train

    with pytest.raises(ConfigError, match="checkpoint"):
        train(scan_path, ModelConfig(**TINY_MODEL), None, _tc(), out_dir=tmp_path / "empty", resume=True, progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        train(scan_path, ModelConfig(**TINY_MODEL), None, _tc(), out_dir=tmp_path / "busy", progress=False)
    with pytest.raises(ConfigError, match="gridsize"):
        train(scan_path, ModelConfig(gridsize=2, **TINY_MODEL), DataConfig(gridsize=1), _tc(), progress=False)


def _one_batch(scan_path, gridsize=1, B=4):
    from ptychopinn import data, physics
    from ptychopinn.model import PtychoPINN
    from ptychopinn.train.inputs import normalised_probe

    scan = data.load_scan(scan_path)
    groups = data.group_scan(scan, DataConfig(gridsize=gridsize))
    f = float(data.normalization_factor(scan.diffraction, groups.indices))
    s = physics.intensity_scale(1e6, 64)
    ds = data.GroupDataset(scan, groups, f * s, start_offsets=True)
    batch = ds.batch(np.arange(B))
    torch.manual_seed(0)
    model = PtychoPINN(ModelConfig(gridsize=gridsize, **TINY_MODEL), probe=normalised_probe(scan), intensity_scale=s)
    return model, batch


def test_amp_bf16_on_cpu_gives_a_close_finite_loss(scan_path):
    from ptychopinn.train.losses import batch_loss

    model, batch = _one_batch(scan_path)
    cfg, tc = model.config, _tc()
    with torch.no_grad():
        ref, _ = batch_loss(model, batch["x"], batch["offsets"], None, cfg, tc)
        amp, _ = batch_loss(model, batch["x"], batch["offsets"], None, cfg, tc, autocast=lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    assert torch.isfinite(amp)
    # mean-form NLL is Î − y·log Î with y ~ 1e6/N² photons: bf16 convs perturb it by ≪ 1 %
    assert abs(float(amp) - float(ref)) <= 1e-2 * abs(float(ref))


@pytest.mark.slow
def test_compile_gives_the_eager_loss(scan_path):
    from ptychopinn.train.losses import batch_loss

    model, batch = _one_batch(scan_path, B=2)
    cfg, tc = model.config, _tc()
    with torch.no_grad():
        ref, _ = batch_loss(model, batch["x"], batch["offsets"], None, cfg, tc)
        got, _ = batch_loss(torch.compile(model), batch["x"], batch["offsets"], None, cfg, tc)
    assert float(got) == pytest.approx(float(ref), rel=1e-4)


def test_public_api_names_stay_callable_after_submodule_import():
    """`import ptychopinn.train` binds the submodule to `ptychopinn.train`; it must still be callable."""
    import ptychopinn as pp
    import ptychopinn.reconstruct
    import ptychopinn.train

    assert callable(pp.train) and callable(pp.reconstruct)
    with pytest.raises(ConfigError, match="epochs"):
        pp.train("unused.npz", train_config=TrainConfig(epochs=0))
