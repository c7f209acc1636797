"""Self-supervised fine-tuning (ptychopinn.reconstruct.finetune): the PINN loss falls on the
scan itself (no ground truth), the caller's model and the saved model files stay untouched,
`--save-finetuned` writes a loadable model, finetune 0 changes nothing."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from ptychopinn.reconstruct.finetune import FinetuneConfig


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import ptychopinn as pp
    from ptychopinn.config import ModelConfig, SimulationConfig, TrainConfig
    from ptychopinn.data import save_scan
    from ptychopinn.simulate import simulate

    base = tmp_path_factory.mktemp("finetune")
    sim = simulate(SimulationConfig(N=64, object_kind="grf", object_size=112, n_positions=24, nphotons=1e6, seed=5))
    arrays = {k: v for k, v in sim.items() if k not in ("_metadata", "objectGuess")}  # no ground truth
    save_scan(base / "scan.npz", **arrays)
    pp.train(base / "scan.npz", ModelConfig(n_filters_scale=1), None,
             TrainConfig(epochs=1, batch_size=8, device="cpu", validation_fraction=0.0), out_dir=base / "model", progress=False)
    return base


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_finetune_lowers_the_pinn_loss_and_leaves_the_model_alone(setup):
    import ptychopinn as pp
    from ptychopinn.io import load_model

    base = setup
    before = _digest(base / "model")
    model = load_model(base / "model")
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    plain = pp.reconstruct(model, base / "scan.npz", device="cpu")
    rec = pp.reconstruct(model, base / "scan.npz", device="cpu", finetune=FinetuneConfig(epochs=4, batch_size=8, learning_rate=1e-3))
    loss = rec.finetune["loss"]
    assert len(loss) == 4 and loss[-1] < loss[0], loss
    assert not np.array_equal(rec.object, plain.object)
    for k, v in model.state_dict().items():  # the caller's module is not modified
        assert torch.equal(v, weights[k]), k
    assert _digest(base / "model") == before
    zero = pp.reconstruct(model, base / "scan.npz", device="cpu", finetune=FinetuneConfig(epochs=0))
    np.testing.assert_array_equal(zero.object, plain.object)
    from ptychopinn.errors import ConfigError

    with pytest.raises(ConfigError, match="save_finetuned"):
        pp.reconstruct(model, base / "scan.npz", device="cpu", save_finetuned=base / "nowhere")
    with pytest.raises(ConfigError, match="FinetuneConfig.learning_rate"):
        pp.reconstruct(model, base / "scan.npz", device="cpu", finetune=FinetuneConfig(epochs=1, learning_rate=0.0))


def test_cli_finetune_and_save(setup):
    from ptychopinn.cli import main
    from ptychopinn.io import load_model

    base = setup
    before = _digest(base / "model")
    out, saved = base / "out", base / "tuned"
    argv = ["reconstruct", "--model", str(base / "model"), "--data", str(base / "scan.npz"), "--out", str(out),
            "--finetune", "2", "--save-finetuned", str(saved), "--refine", "2", "--device", "cpu", "--quiet"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["finetune"]["loss"]) == 2 and len(metrics["refine"]["loss"]) == 2
    assert _digest(base / "model") == before
    tuned = load_model(saved)
    orig = load_model(base / "model")
    diff = [k for k, v in tuned.state_dict().items() if not torch.equal(v, orig.state_dict()[k])]
    assert diff  # the saved copy holds the adapted weights
    # refusing to write over a non-empty folder
    assert main(argv[:5] + ["--out", str(base / "out2"), "--finetune", "1", "--save-finetuned", str(saved), "--device", "cpu", "--quiet"]) == 2
