"""Training features (issue 14): learning-rate schedules, stages, early stopping, --keep-best,
gradient accumulation and clipping, loggers, exact resume mid-stage.

Data: a tiny simulated scan (N=64, 12–16 positions, n_filters_scale 1), 1–4 epochs per run.
"""
from __future__ import annotations

import csv
import importlib.machinery
import json
import math
import sys
import types

import numpy as np
import pytest
import torch

from ptychopinn.config import ModelConfig, SimulationConfig, Stage, TrainConfig, config_from_dict, config_to_dict, parse_stages
from ptychopinn.errors import ConfigError

TINY = ModelConfig(n_filters_scale=1)


@pytest.fixture(scope="module")
def scan_path(tmp_path_factory):
    from ptychopinn.simulate import simulate_to_file

    cfg = SimulationConfig(N=64, object_size=96, n_positions=16, nphotons=1e6, seed=4)
    return simulate_to_file(cfg, tmp_path_factory.mktemp("feat") / "scan.npz")


def _tc(**kw):
    base = dict(epochs=1, batch_size=4, device="cpu", validation_fraction=0.25, seed=1)
    base.update(kw)
    return TrainConfig(**base)


def _opt(lr=1.0):
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)


# -- schedules --------------------------------------------------------------------------------
def test_cosine_with_warmup_learning_rates_exact():
    from ptychopinn.train.schedules import EpochSchedule

    L, W, E, r = 1e-2, 2, 6, 0.1
    tc = _tc(epochs=E, learning_rate=L, scheduler="cosine", warmup_epochs=W, min_lr_ratio=r)
    sched = EpochSchedule(tc, opt := _opt())
    got = []
    for e in range(E):
        got.append(sched.begin_epoch(e))
        assert opt.param_groups[0]["lr"] == got[-1]
        sched.end_epoch(e, 1.0)
    expected = [L * 1 / 3, L * 2 / 3] + [L * (r + (1 - r) * 0.5 * (1 + math.cos(math.pi * k / 4))) for k in range(4)]
    assert got == pytest.approx(expected, rel=1e-15, abs=0)
    assert got[2] == pytest.approx(L, rel=1e-15) and got[-1] > L * r  # the cosine starts at L and ends above the floor


def test_exponential_schedule_and_floor():
    from ptychopinn.train.schedules import scheduled_lr

    tc = _tc(epochs=8, learning_rate=1.0, scheduler="exponential", lr_gamma=0.5, min_lr_ratio=0.1)
    assert [scheduled_lr(tc, e) for e in range(8)] == [1.0, 0.5, 0.25, 0.125, 0.1, 0.1, 0.1, 0.1]


def test_stages_restart_the_schedule_at_their_learning_rate():
    from ptychopinn.train.schedules import scheduled_lr, stage_of

    tc = _tc(learning_rate=1e-3, scheduler="exponential", lr_gamma=0.5, stages="2:1e-2:nll=1,mae=0;3::mae=0.5")
    assert tc.epochs == 5 and [stage_of(tc, e) for e in range(5)] == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]
    assert [scheduled_lr(tc, e) for e in range(5)] == [1e-2, 5e-3, 1e-3, 5e-4, 2.5e-4]
    s2 = tc.stage_config(1)
    assert (s2.learning_rate, s2.nll_weight, s2.mae_weight) == (1e-3, 1.0, 0.5)  # unnamed weights keep the base


def test_plateau_after_warmup_and_per_stage():
    from ptychopinn.train.schedules import EpochSchedule

    tc = _tc(learning_rate=1.0, warmup_epochs=1, plateau_patience=1, plateau_factor=0.5, min_lr=1e-3, stages="5;2:0.1")
    sched = EpochSchedule(tc, _opt())
    lrs = []
    for e in range(7):
        lrs.append(sched.begin_epoch(e))
        sched.end_epoch(e, 1.0)  # never improves
    # warm-up 0.5; then 1.0 (best set), 1.0 (1 bad epoch), 1.0 (2nd bad epoch > patience: halved after it),
    # 0.5; stage 2 restarts at 0.1 with a fresh plateau
    assert lrs == [0.5, 1.0, 1.0, 1.0, 0.5, 0.1, 0.1]


def test_stage_syntax_and_errors():
    assert parse_stages("10:1e-3:nll=1,mae=0; 5") == (Stage(10, 1e-3, (("nll", 1.0), ("mae", 0.0))), Stage(5))
    table = [{"epochs": 3, "lr": 1e-3, "nll": 1, "mae": 0.1}, {"epochs": 2}]
    tc = _tc(stages=table)
    assert tc.stages == (Stage(3, 1e-3, (("nll", 1.0), ("mae", 0.1))), Stage(2)) and tc.epochs == 5
    again = config_from_dict(TrainConfig, json.loads(json.dumps(config_to_dict(tc))))  # config.json round trip
    assert again == tc
    for bad, match in [("x", "EPOCHS"), ("3:1e-3:foo=1", "foo"), ("0", "epochs"), ("2:-1", "learning_rate"), ("1:2:3:4", "EPOCHS")]:
        with pytest.raises(ConfigError, match=match):
            _tc(stages=bad)
    with pytest.raises(ConfigError, match="stage 2"):
        _tc(stages="2;2::nll=0")  # every PINN weight zero in stage 2
    with pytest.raises(ConfigError, match="warmup"):
        _tc(epochs=3, warmup_epochs=3)
    for kw, match in [(dict(scheduler="step"), "scheduler"), (dict(logger="wandb"), "logger"), (dict(accumulate_grad_batches=0), "accumulate"),
                      (dict(clip_grad_norm=-1.0), "clip"), (dict(keep_best=-1), "keep_best"), (dict(lr_gamma=0.0), "lr_gamma")]:
        with pytest.raises(ConfigError, match=match):
            _tc(**kw)


# -- loop features ----------------------------------------------------------------------------
def _scripted_val(monkeypatch, values):
    """Replace the validation loss by a scripted sequence (one value per epoch)."""
    from ptychopinn.train import loop

    it = iter(values)
    monkeypatch.setattr(loop, "evaluate", lambda *a, **k: next(it))


def test_early_stop_epoch_and_keep_best(scan_path, tmp_path, monkeypatch):
    from ptychopinn.io import load_model
    from ptychopinn.train import train

    _scripted_val(monkeypatch, [1.0, 0.5, 0.7, 0.4, 0.6, 0.8, 0.9, 0.3])
    out = tmp_path / "m"
    r = train(scan_path, TINY, None, _tc(epochs=8, early_stop_patience=2, keep_best=2), out_dir=out, progress=False)
    # best 0.4 at epoch 4; epochs 5, 6 do not improve: stop after epoch 6
    assert [h["epoch"] for h in r.history] == [1, 2, 3, 4, 5, 6]
    assert r.extra["training"]["stopped_early_after_epoch"] == 6 and r.extra["training"]["monitor"] == "val_loss"
    index = json.loads((out / "best" / "index.json").read_text())
    assert [m["epoch"] for m in index["models"]] == [4, 2] and index["monitor"] == "val_loss"
    assert sorted(p.name for p in (out / "best").iterdir() if p.is_dir()) == sorted(m["name"] for m in index["models"])
    assert index["models"][0]["name"] == "epoch0004-val_loss4.000000e-01"
    load_model(out / "best" / index["models"][0]["name"])  # a native model
    # resuming a stopped run trains no further
    r2 = train(scan_path, TINY, None, _tc(epochs=8, early_stop_patience=2, keep_best=2), out_dir=out, resume=True, progress=False)
    assert len(r2.history) == 6


def test_accumulation_equals_a_larger_batch(scan_path):
    from ptychopinn.train import train

    def run(**kw):
        return train(scan_path, TINY, None, _tc(validation_fraction=0.0, epochs=1, deterministic=True, **kw), progress=False).model.state_dict()

    big = run(batch_size=8)
    acc = run(batch_size=4, accumulate_grad_batches=2)
    small = run(batch_size=4)

    def worst(a, b):
        return max(float((a[k] - b[k]).norm() / a[k].norm().clamp_min(1e-30)) for k in a if a[k].is_floating_point())

    print(f"accumulate 2x4 vs batch 8: worst rel L2 {worst(big, acc):.3g}; batch 4 vs 8: {worst(big, small):.3g}")
    # float64 master weights (--deterministic): the same sums, so the same weights (0 here)
    assert worst(big, acc) <= 1e-6
    assert worst(big, small) > 1e-3  # 4 steps are not 2 steps: the check above is not vacuous


def test_train_step_accumulated_gradient_equals_the_batch_gradient(scan_path):
    """The fast float32 path, one `train_step`: 3 micro-batches of a window of 7 groups give the
    window's gradient within float32 tolerance (Adam then amplifies such rounding in weights
    whose gradient is near zero, so whole runs are compared with master weights above)."""
    from ptychopinn import data
    from ptychopinn.train import setup
    from ptychopinn.train.losses import batch_loss
    from ptychopinn.train.step import train_step

    tc = _tc()
    su = setup.check_inputs(scan_path, TINY, None, tc, None, False, None)
    f = float(data.normalization_factor(su.scan.diffraction, su.groups.indices))
    ds = data.GroupDataset(su.scan, su.groups, f * su.scale, start_offsets=True)
    idx = su.train_idx[:7].tolist()

    def grads(micro):
        model = setup.build_model(TINY, su.probe, su.scale, 0, torch.device("cpu"))
        opt = torch.optim.SGD(model.parameters(), lr=0.0)

        def loss_of(ids):
            b = ds.batch(ids)
            return batch_loss(model, b["x"], b["offsets"], None, TINY, tc, batch_size=len(idx))

        loss, parts, _ = train_step(opt, micro, loss_of)
        return float(loss), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    whole_loss, whole = grads([idx])
    acc_loss, acc = grads([idx[:3], idx[3:6], idx[6:]])
    assert acc_loss == pytest.approx(whole_loss, rel=1e-6)
    total = math.sqrt(sum(float(g.norm()) ** 2 for g in whole.values()))
    diff = {k: float((acc[k] - whole[k]).norm()) for k in whole}
    print(f"accumulated vs whole-batch gradient (float32): rel L2 of the whole gradient "
          f"{math.sqrt(sum(d * d for d in diff.values())) / total:.3g}")
    assert len(diff) > 20 and math.sqrt(sum(d * d for d in diff.values())) <= 1e-5 * total
    # per tensor: 1e-4 relative, plus an absolute 1e-5 of the whole gradient for tensors whose
    # gradient nearly cancels (the phase head's bias: a global phase leaves the intensity unchanged)
    for k in whole:
        assert diff[k] <= 1e-4 * float(whole[k].norm()) + 1e-5 * total, k


def test_clip_gradients_matches_torch_and_changes_training(scan_path):
    from ptychopinn.train import train
    from ptychopinn.train.step import clip_gradients

    g = torch.Generator().manual_seed(0)
    ps = [torch.nn.Parameter(torch.zeros(5, 3)), torch.nn.Parameter(torch.zeros(7))]
    qs = [torch.nn.Parameter(torch.zeros(5, 3)), torch.nn.Parameter(torch.zeros(7))]
    for p, q in zip(ps, qs):
        p.grad = torch.randn(p.shape, generator=g) * 3
        q.grad = p.grad.clone()
    ours = clip_gradients(ps, 0.5, exact=True)
    ref = torch.nn.utils.clip_grad_norm_(qs, 0.5)
    assert ours == pytest.approx(float(ref), rel=1e-6)
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=0)
    a = train(scan_path, TINY, None, _tc(), progress=False).model.state_dict()
    b = train(scan_path, TINY, None, _tc(clip_grad_norm=1e-6), progress=False).model.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_resume_mid_stage_is_bit_exact(scan_path, tmp_path, monkeypatch):
    """Stages + cosine + warm-up + accumulation + clipping, interrupted after epoch 3 of 5
    (inside stage 2), resumed: bitwise the uninterrupted model, history and CSV rows."""
    from ptychopinn.train import checkpoint, train

    tc = _tc(
        deterministic=True, scheduler="cosine", warmup_epochs=1, min_lr_ratio=0.1, stages="2:2e-3;3:1e-3:mae=0.5",
        accumulate_grad_batches=2, batch_size=2, clip_grad_norm=5.0, keep_best=1, early_stop_patience=4,
    )
    one_go = train(scan_path, TINY, None, tc, out_dir=tmp_path / "a", progress=False)
    real = checkpoint.epoch_files

    def interrupt(out, state, row):
        real(out, state, row)
        if state.epochs_done == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "epoch_files", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(scan_path, TINY, None, tc, out_dir=tmp_path / "b", progress=False)
    monkeypatch.setattr(checkpoint, "epoch_files", real)
    torch.manual_seed(123), np.random.seed(5)
    resumed = train(scan_path, TINY, None, tc, out_dir=tmp_path / "b", resume=True, progress=False)
    sa, sb = one_go.model.state_dict(), resumed.model.state_dict()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    strip = lambda hs: [{k: v for k, v in h.items() if k not in ("seconds", "patterns_per_s")} for h in hs]  # noqa: E731
    assert strip(one_go.history) == strip(resumed.history)
    assert [h["stage"] for h in resumed.history] == [1, 1, 2, 2, 2]
    assert set(resumed.history[3]["parts"]) == {"nll", "mae"} and set(resumed.history[0]["parts"]) == {"nll"}
    rows = list(csv.DictReader((tmp_path / "b" / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5]
    assert [float(r["lr"]) for r in rows] == [h["lr"] for h in one_go.history]
    assert [float(r["loss"]) for r in rows] == [h["loss"] for h in one_go.history]
    assert len(list((tmp_path / "b" / "best").glob("epoch*"))) == 1
    # a resume with other stages is refused
    with pytest.raises(ConfigError, match="stages"):
        train(scan_path, TINY, None, TrainConfig(**{**config_to_dict(tc), "stages": "5"}), out_dir=tmp_path / "b", resume=True, progress=False)


# -- loggers ----------------------------------------------------------------------------------
def test_tensorboard_events_readable_by_tensorboard(scan_path, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing import event_accumulator

    from ptychopinn.cli import main

    out = tmp_path / "tb"
    rc = main(["train", "--data", str(scan_path), "--out", str(out), "--epochs", "2", "--batch-size", "4", "--n-filters-scale", "1",
               "--device", "cpu", "--quiet", "--logger", "tensorboard", "--scheduler", "cosine", "--warmup-epochs", "1"])
    assert rc == 0
    acc = event_accumulator.EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    tags = set(acc.Tags()["scalars"])
    assert {"loss/train", "loss/val", "lr", "loss_parts/nll"} <= tags
    train_loss = acc.Scalars("loss/train")
    assert [e.step for e in train_loss] == [1, 2]
    assert [e.value for e in train_loss] == pytest.approx([r["loss"] for r in rows], rel=1e-6)
    assert [e.value for e in acc.Scalars("lr")] == pytest.approx([5e-4, 1e-3], rel=1e-6)  # warm-up, then the cosine's start
    assert not (out / "metrics.csv").exists()


def test_logger_missing_package_is_one_line_error(scan_path, tmp_path, monkeypatch):
    from ptychopinn.train import loggers, train

    real = importlib.util.find_spec
    monkeypatch.setattr(loggers.importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    out = tmp_path / "never"
    with pytest.raises(ConfigError, match=r"pip install 'ptychopinn\[mlflow\]'"):
        train(scan_path, TINY, None, _tc(logger="mlflow"), out_dir=out, progress=False)
    assert not out.exists()


def test_mlflow_logger_calls(scan_path, tmp_path, monkeypatch):
    """A stand-in `mlflow` module records what the logger sends (params once, metrics per epoch)."""
    calls = []
    fake = types.ModuleType("mlflow")
    fake.__spec__ = importlib.machinery.ModuleSpec("mlflow", None)
    run = types.SimpleNamespace(info=types.SimpleNamespace(run_id="r1"))
    fake.set_tracking_uri = lambda uri: calls.append(("uri", uri))
    fake.start_run = lambda **kw: calls.append(("start", kw)) or run
    fake.log_params = lambda p: calls.append(("params", p))
    fake.log_metrics = lambda m, step: calls.append(("metrics", step, m))
    fake.end_run = lambda: calls.append(("end",))
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from ptychopinn.train import train

    out = tmp_path / "ml"
    train(scan_path, TINY, None, _tc(epochs=2, logger="mlflow"), out_dir=out, progress=False)
    kinds = [c[0] for c in calls]
    assert kinds == ["uri", "start", "params", "metrics", "metrics", "end"]
    assert calls[0][1].endswith("/ml/mlruns") and calls[2][1]["train.epochs"] == "2"
    assert [c[1] for c in calls if c[0] == "metrics"] == [1, 2] and "loss/val" in calls[3][2]
    state = json.loads((out / "checkpoint" / "training_state.json").read_text())
    assert state["loop"]["logger"] == {"run_id": "r1"}


def test_cli_flags_and_config_file(scan_path, tmp_path):
    from ptychopinn.cli import main

    cfg = tmp_path / "train.toml"
    cfg.write_text(
        'scheduler = "exponential"\nlr-gamma = 0.5\nkeep-best = 1\nlogger = "csv"\ngenerator = "fno"\nbatch-size = 4\n'
        "n-filters-scale = 1\naccumulate-grad-batches = 2\nclip-grad-norm = 10.0\nearly-stop-patience = 3\n"
        '[[stages]]\nepochs = 1\nlr = 2e-3\nnll = 1\n[[stages]]\nepochs = 1\nmae = 0.5\n'
    )
    out = tmp_path / "m"
    rc = main(["train", "--config", str(cfg), "--data", str(scan_path), "--out", str(out), "--device", "cpu", "--quiet"])
    assert rc == 0
    doc = json.loads((out / "config.json").read_text())
    assert doc["model_config"]["generator"] == "fno"
    tcd = doc["extra"]["training"]["train_config"]
    assert tcd["scheduler"] == "exponential" and tcd["accumulate_grad_batches"] == 2 and tcd["epochs"] == 2
    assert [s["epochs"] for s in tcd["stages"]] == [1, 1]
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [float(r["lr"]) for r in rows] == [2e-3, 1e-3] and rows[1]["loss_mae"] != ""
    assert (out / "best" / "index.json").is_file()
    # an FNO model reconstructs like any other (loaded from its native model directory)
    rc = main(["reconstruct", "--model", str(out), "--data", str(scan_path), "--out", str(tmp_path / "r"), "--device", "cpu", "--quiet"])
    assert rc == 0 and (tmp_path / "r" / "reconstruction.npz").is_file()


def test_cli_epochs_disagreeing_with_stages_is_an_error(scan_path, tmp_path, capsys):
    from ptychopinn.cli import main

    rc = main(["train", "--data", str(scan_path), "--out", str(tmp_path / "x"), "--epochs", "3", "--stages", "1;1", "--device", "cpu"])
    assert rc == 2 and "stages" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_tensorboard_resume_purges_the_interrupted_epoch(tmp_path):
    """A run that logged epoch 3 but died before its checkpoint resumes after epoch 2: the reader
    keeps epochs 1, 2 of the first file and 3, 4 of the resumed one."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing import event_accumulator

    from ptychopinn.train.loggers import TensorBoardLogger

    def row(epoch, loss):
        return {"epoch": epoch, "loss": loss, "val_loss": None, "lr": 1e-3, "parts": {"nll": loss}, "patterns_per_s": 1.0}

    first = TensorBoardLogger(tmp_path, 0)
    for e in (1, 2, 3):
        first.log_epoch(row(e, float(e)))
    first.close()
    resumed = TensorBoardLogger(tmp_path, 2)
    for e in (3, 4):
        resumed.log_epoch(row(e, 10.0 * e))
    resumed.close()
    acc = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("loss/train")] == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]
