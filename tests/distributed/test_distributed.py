"""`torchrun` runs of `ptychopinn train | reconstruct` (gloo, 2 CPU processes) against one process.

Training oracle: with two ranks every gradient is the sum of two shard gradients, so the only
difference from one process is the float reduction order. Two checks:
- exact: an in-process emulation that sums the same two rank-strided shards (weights b_r/B)
  in the same order gives the same weights as the torchrun job (≤ 1e-6; bitwise in practice);
- against the plain single-process `train` (one optimiser step: batch 32 ≥ 27 training groups):
  weights ≤ 1e-4 relative L2 per tensor, losses ≤ 1e-5 relative (later Adam steps amplify float noise in near-zero
  gradients; the single process alone differs by ~1e-3 between 1 and 2 threads).
Reconstruction: the torchrun `reconstruction.npz` equals the single-process one (≤ 1e-5).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ptychopinn.config import DataConfig, ModelConfig, SimulationConfig, TrainConfig

# batch 32 ≥ the 27 training groups: one optimiser step per epoch, shards of 14 and 13 groups
TRAIN_FLAGS = ["--epochs", "1", "--seed", "0", "--batch-size", "32", "--n-filters-scale", "1", "--device", "cpu",
               "--validation-fraction", "0.1", "--quiet"]


def _torchrun(*argv: str, nproc: int = 2) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "-m", "ptychopinn", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm((a - b).ravel()) / max(np.linalg.norm(a.ravel()), 1e-30))


def _weights(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return {k: v for k, v in load_file(str(path / "model.safetensors")).items() if v.dtype.kind == "f"}


@pytest.fixture(scope="module")
def scan_path(tmp_path_factory):
    from ptychopinn.simulate import simulate_to_file

    return simulate_to_file(
        SimulationConfig(N=64, object_size=96, n_positions=30, nphotons=1e6, seed=3),
        tmp_path_factory.mktemp("dist") / "D.npz",
    )


@pytest.fixture(scope="module")
def ddp_model(scan_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "M"
    proc = _torchrun("train", "--data", str(scan_path), "--out", str(out), *TRAIN_FLAGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote model to") == 1  # rank 0 alone reports
    return out


def _configs(batch_size: int = 32) -> tuple[ModelConfig, DataConfig, TrainConfig]:
    mc = ModelConfig(n_filters_scale=1)
    return mc, DataConfig(seed=0), TrainConfig(epochs=1, seed=0, batch_size=batch_size, device="cpu", validation_fraction=0.1)


def _emulate_two_ranks(scan_path: Path, batch_size: int = 32, world: int = 2) -> dict[str, np.ndarray]:
    """One epoch where each step sums the `world` rank shards' gradients in rank order."""
    from ptychopinn import data
    from ptychopinn.distributed import DistInfo
    from ptychopinn.train import loop
    from ptychopinn.train.losses import batch_loss

    mc, dc, tc = _configs(batch_size)
    su = loop._setup(scan_path, mc, dc, tc, None, False, None)
    f = float(data.normalization_factor(su.scan.diffraction, su.groups.indices))
    ds = data.GroupDataset(su.scan, su.groups, f * su.scale, start_offsets=True)
    model = loop._build_model(mc, su.probe, su.scale, tc.seed, torch.device("cpu"))
    opt = torch.optim.Adam(model.parameters(), lr=tc.learning_rate, eps=loop.ADAM_EPS)
    order = np.random.default_rng(tc.seed).permutation(su.train_idx)
    plans = [loop._shards(order, tc.batch_size, DistInfo(r, world, r)) for r in range(world)]
    sizes = [len(order[i : i + tc.batch_size]) for i in range(0, len(order), tc.batch_size)]
    assert sizes[-1] % world, "the test wants an uneven last batch"
    for step in range(len(sizes)):
        opt.zero_grad(set_to_none=True)
        for plan in plans:
            idx, mean_w, sum_w, _ = plan[step]
            b = ds.batch(idx)
            loss, _ = batch_loss(model, b["x"], b["offsets"], None, mc, tc, mean_weight=mean_w, sum_weight=sum_w)
            loss.backward()
        opt.step()
    return {k: v.detach().numpy() for k, v in model.state_dict().items() if v.dtype.is_floating_point}


def _emulated(scan_path: Path, batch_size: int) -> dict[str, np.ndarray]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the ranks ran with OMP_NUM_THREADS=1
    try:
        return _emulate_two_ranks(scan_path, batch_size)
    finally:
        torch.set_num_threads(threads)


def test_torchrun_train_equals_rank_emulation(ddp_model, scan_path):
    ref = _emulated(scan_path, 32)
    got = _weights(ddp_model)
    assert len(ref) > 20 and set(ref) <= set(got)  # `got` also holds the complex probe as a real view
    worst = max(_rel(ref[k], got[k]) for k in ref)
    print(f"torchrun vs 2-rank emulation, 1 step: max rel L2 per tensor {worst:.3g}")
    assert worst <= 1e-6, worst
    # rank 0 wrote the checkpoint and one metrics line; no stray temporaries from rank 1
    assert (ddp_model / "checkpoint" / "training_state.json").is_file()
    assert len((ddp_model / "metrics.jsonl").read_text().splitlines()) == 1
    assert not [p for p in ddp_model.iterdir() if p.name.startswith(".")]


def test_torchrun_train_matches_single_process(ddp_model, scan_path, tmp_path):
    import json

    from ptychopinn.train import train

    mc, dc, tc = _configs()
    single = train(scan_path, mc, dc, tc, out_dir=tmp_path / "M1", progress=False)
    # one optimiser step: the acceptance tolerance, 1e-4 relative L2 per tensor
    a, b = _weights(tmp_path / "M1"), _weights(ddp_model)
    worst = max(_rel(a[k], b[k]) for k in a)
    print(f"torchrun vs single process, 1 step: max rel L2 per tensor {worst:.3g}")
    assert worst <= 1e-4, worst
    row = json.loads((ddp_model / "metrics.jsonl").read_text().splitlines()[0])
    assert abs(row["loss"] - single.history[0]["loss"]) <= 1e-5 * abs(single.history[0]["loss"])
    assert abs(row["val_loss"] - single.history[0]["val_loss"]) <= 1e-5 * abs(single.history[0]["val_loss"])
    assert row["lr"] == single.history[0]["lr"]


@pytest.mark.slow
def test_torchrun_two_steps_equal_rank_emulation(scan_path, tmp_path):
    """Batch 16: steps of 16 and 11 groups (shards 8/8, 6/5); Adam state carried across steps."""
    flags = [f if f != "32" else "16" for f in TRAIN_FLAGS]
    proc = _torchrun("train", "--data", str(scan_path), "--out", str(tmp_path / "D"), *flags)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref, got = _emulated(scan_path, 16), _weights(tmp_path / "D")
    worst = max(_rel(ref[k], got[k]) for k in ref)
    print(f"torchrun vs 2-rank emulation, 2 steps: max rel L2 per tensor {worst:.3g}")
    assert worst <= 1e-6, worst


def test_torchrun_reconstruct_equals_single_process(ddp_model, scan_path, tmp_path):
    from ptychopinn.reconstruct import reconstruct

    out = tmp_path / "R"
    proc = _torchrun("reconstruct", "--model", str(ddp_model), "--data", str(scan_path), "--out", str(out),
                     "--device", "cpu", "--batch-size", "8", "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote ") == 1
    single = reconstruct(ddp_model, scan_path, device="cpu", batch_size=8)
    with np.load(out / "reconstruction.npz", allow_pickle=False) as z:
        obj = z["object"]
    assert obj.shape == single.object.shape
    err = _rel(single.object, obj)
    print(f"torchrun vs single-process reconstruction: rel L2 {err:.3g}")
    assert err <= 1e-5
    assert (out / "metrics.json").is_file()


def test_torchrun_bad_input_is_one_line_error_on_every_rank(scan_path, tmp_path):
    # a global batch smaller than the world size: every rank refuses before any collective
    proc = _torchrun("train", "--data", str(scan_path), "--out", str(tmp_path / "M"), "--batch-size", "1",
                     "--epochs", "1", "--device", "cpu", "--quiet")
    assert proc.returncode != 0
    errors = [l for l in proc.stderr.splitlines() if l.startswith("ptychopinn: error:")]
    # torchrun may stop the second rank (SIGTERM) before it prints; every printed line is the same
    assert errors and "world size 2" in errors[0] and len(set(errors)) == 1, proc.stderr[-2000:]
    assert "exitcode: 2" in proc.stderr  # the workers' CLI exit code (torchrun itself exits 1)
    assert not (tmp_path / "M").exists()


def test_shard_helpers():
    from ptychopinn.distributed import contiguous_shard, launched_by_torchrun, shard_batch

    g = np.arange(11)
    shards = [shard_batch(g, r, 3) for r in range(3)]
    assert sorted(np.concatenate(shards).tolist()) == g.tolist() and [s.size for s in shards] == [4, 4, 3]
    assert [shard_batch(g[:2], r, 3).size for r in range(3)] == [1, 1, 0]
    blocks = [contiguous_shard(10, r, 3) for r in range(3)]
    assert blocks[0][0] == 0 and blocks[-1][1] == 10 and all(blocks[i][1] == blocks[i + 1][0] for i in range(2))
    assert launched_by_torchrun({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"})
    assert not launched_by_torchrun({"WORLD_SIZE": "2"})


@pytest.mark.slow
def test_torchrun_resume_is_exact(scan_path, tmp_path):
    """2 epochs at once == 1 epoch, then `--resume` to 2 epochs (both distributed), bitwise."""
    flags = ["--data", str(scan_path), "--seed", "0", "--batch-size", "16", "--n-filters-scale", "1",
             "--device", "cpu", "--quiet", "--deterministic"]
    assert _torchrun("train", *flags, "--out", str(tmp_path / "A"), "--epochs", "2").returncode == 0
    assert _torchrun("train", *flags, "--out", str(tmp_path / "B"), "--epochs", "1").returncode == 0
    proc = _torchrun("train", *flags, "--out", str(tmp_path / "B"), "--epochs", "2", "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _weights(tmp_path / "A"), _weights(tmp_path / "B")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert len((tmp_path / "B" / "metrics.jsonl").read_text().splitlines()) == 2
