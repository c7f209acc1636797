"""`torchrun` runs of `ptychopinn train | reconstruct` (gloo, CPU processes) against one process.

Training: with `--deterministic` the convolutions train with float64 master weights
(`exact_gradients` auto follows `--deterministic`; the default is the fast float32 path),
so the gradient does not depend on the float reduction order; the torchrun model must equal
the one-process model (one process with 2 threads, ranks with 1 thread each) over several Adam
steps, including an uneven last batch — bitwise in practice, asserted at 1e-6 relative L2 per
tensor (the acceptance bound is 1e-4). With `--exact-gradients off` (float32 weights, the GPU
default) the sum of the rank shards is checked against an in-process emulation.
Reconstruction: the torchrun `reconstruction.npz` equals the single-process one (≤ 1e-5).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ptychopinn.config import DataConfig, ModelConfig, SimulationConfig, TrainConfig

# the acceptance command's flags; 46 training groups → steps of 16, 16, 14 (shards 8/8, 8/8, 7/7);
# bit-identity across processes is opt-in: --deterministic
TRAIN_FLAGS = ["--epochs", "1", "--seed", "0", "--batch-size", "16", "--device", "cpu", "--quiet", "--deterministic"]


def _torchrun(*argv: str, nproc: int = 2) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "-m", "ptychopinn", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def _single(*argv: str, threads: int = 2) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "ptychopinn", *argv], capture_output=True, text=True, env=env, timeout=300)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm((a - b).ravel()) / max(np.linalg.norm(a.ravel()), 1e-30))


def _weights(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return {k: v for k, v in load_file(str(path / "model.safetensors")).items() if v.dtype.kind == "f"}


def _compare(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> tuple[float, int]:
    assert set(a) == set(b) and len(a) > 20
    return max(_rel(a[k], b[k]) for k in a), sum(np.array_equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def scan_path(tmp_path_factory):
    from ptychopinn.simulate import simulate_to_file

    return simulate_to_file(
        SimulationConfig(N=64, object_size=96, n_positions=48, nphotons=1e6, seed=3),
        tmp_path_factory.mktemp("dist") / "D.npz",
    )


@pytest.fixture(scope="module")
def single_model(scan_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "M"
    proc = _single("train", "--data", str(scan_path), "--out", str(out), *TRAIN_FLAGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def ddp_model(scan_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "M"
    proc = _torchrun("train", "--data", str(scan_path), "--out", str(out), *TRAIN_FLAGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote model to") == 1  # rank 0 alone reports
    return out


def test_torchrun_train_equals_single_process(ddp_model, single_model):
    worst, same = _compare(_weights(single_model), _weights(ddp_model))
    print(f"torchrun (2 x 1 thread) vs one process (2 threads), 3 steps: max rel L2 per tensor {worst:.3g}, "
          f"{same} tensors bitwise equal")
    assert worst <= 1e-6, worst
    one = json.loads((single_model / "metrics.jsonl").read_text().splitlines()[0])
    two = json.loads((ddp_model / "metrics.jsonl").read_text().splitlines()[0])
    for key in ("loss", "val_loss"):
        assert abs(one[key] - two[key]) <= 1e-6 * abs(one[key]), key
    assert one["lr"] == two["lr"]
    # rank 0 wrote the checkpoint and one metrics line; no stray temporaries from rank 1
    assert (ddp_model / "checkpoint" / "training_state.json").is_file()
    assert len((ddp_model / "metrics.jsonl").read_text().splitlines()) == 1
    assert not [p for p in ddp_model.iterdir() if p.name.startswith(".")]
    cfg = json.loads((ddp_model / "config.json").read_text())
    assert cfg["extra"]["training"]["exact_gradients"] is True and cfg["extra"]["training"]["world_size"] == 2


@pytest.mark.slow
def test_torchrun_three_processes_uneven_shards_equal_single_process(scan_path, single_model, tmp_path):
    """3 ranks: every global batch of 16 splits 6/5/5 (the last one 5/5/4)."""
    proc = _torchrun("train", "--data", str(scan_path), "--out", str(tmp_path / "M3"), *TRAIN_FLAGS, nproc=3)
    assert proc.returncode == 0, proc.stderr[-3000:]
    worst, same = _compare(_weights(single_model), _weights(tmp_path / "M3"))
    print(f"torchrun 3 processes vs one process: max rel L2 per tensor {worst:.3g}, {same} bitwise equal")
    assert worst <= 1e-6, worst


def _emulate_ranks(scan_path: Path, batch_size: int, world: int, mc: ModelConfig) -> dict[str, np.ndarray]:
    """One epoch, float32 weights: each step adds the `world` rank shards' gradients in rank order."""
    from ptychopinn import data
    from ptychopinn.distributed import DistInfo
    from ptychopinn.train import ddp, setup
    from ptychopinn.train.losses import batch_loss

    tc = TrainConfig(epochs=1, seed=0, batch_size=batch_size, device="cpu", exact_gradients="off")
    su = setup.check_inputs(scan_path, mc, DataConfig(seed=0), tc, None, False, None)
    f = float(data.normalization_factor(su.scan.diffraction, su.groups.indices))
    ds = data.GroupDataset(su.scan, su.groups, f * su.scale, start_offsets=True)
    model = setup.build_model(mc, su.probe, su.scale, tc.seed, torch.device("cpu"))
    opt = torch.optim.Adam(model.parameters(), lr=tc.learning_rate, eps=setup.ADAM_EPS)
    order = np.random.default_rng(tc.seed).permutation(su.train_idx)
    plans = [ddp.shards(order, tc.batch_size, DistInfo(r, world, r)) for r in range(world)]
    for step in range(len(plans[0])):
        opt.zero_grad(set_to_none=True)
        for plan in plans:
            idx, weight, B = plan[step]
            b = ds.batch(idx)
            loss, _ = batch_loss(model, b["x"], b["offsets"], None, mc, tc, batch_size=B, weight=weight)
            loss.backward()
        opt.step()
    return {k: v.detach().numpy() for k, v in model.state_dict().items() if v.dtype.is_floating_point}


def test_torchrun_float32_weights_sum_the_rank_shards(scan_path, tmp_path):
    """`--exact-gradients off`: the all-reduce SUMs the shard gradients (batch 64 ≥ 46 groups: one step)."""
    flags = ["--epochs", "1", "--seed", "0", "--batch-size", "64", "--device", "cpu", "--quiet",
             "--n-filters-scale", "1", "--exact-gradients", "off"]
    proc = _torchrun("train", "--data", str(scan_path), "--out", str(tmp_path / "F"), *flags)
    assert proc.returncode == 0, proc.stderr[-3000:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the ranks ran with OMP_NUM_THREADS=1
    try:
        ref = _emulate_ranks(scan_path, 64, 2, ModelConfig(n_filters_scale=1))
    finally:
        torch.set_num_threads(threads)
    got = _weights(tmp_path / "F")
    assert set(ref) <= set(got)  # `got` also holds the complex probe as a real view
    worst = max(_rel(ref[k], got[k]) for k in ref)
    print(f"float32 weights: torchrun vs 2-rank emulation, 1 step: max rel L2 per tensor {worst:.3g}")
    assert worst <= 1e-6, worst
    cfg = json.loads((tmp_path / "F" / "config.json").read_text())
    assert cfg["extra"]["training"]["exact_gradients"] is False


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


def test_torchrun_reconstruct_without_truth_with_frc_halves(ddp_model, scan_path, tmp_path):
    """A measured-like scan (no objectGuess/Y) under torchrun: exit 0, rank 0 writes the files and
    the half-set FRC, no truth metrics; the object equals the single-process one."""
    from ptychopinn.reconstruct import reconstruct

    measured = tmp_path / "measured.npz"
    with np.load(scan_path, allow_pickle=False) as z:
        np.savez(measured, **{k: z[k] for k in z.files if k not in ("objectGuess", "Y")})
    out = tmp_path / "R"
    proc = _torchrun("reconstruct", "--model", str(ddp_model), "--data", str(measured), "--out", str(out),
                     "--device", "cpu", "--batch-size", "8", "--quiet", "--frc-halves")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote ") == 1 and proc.stdout.count("half-set FRC:") == 1
    names = {p.name for p in out.iterdir()}
    assert {"reconstruction.npz", "reconstruction.h5", "amplitude.png", "phase.png", "frc_halves.png", "metrics.json"} <= names
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"frc_halves"}
    single = reconstruct(ddp_model, measured, device="cpu", batch_size=8, frc_halves=True)
    with np.load(out / "reconstruction.npz", allow_pickle=False) as z:
        assert _rel(single.object, z["object"]) <= 1e-5
    np.testing.assert_allclose(metrics["frc_halves"]["curve"], single.frc_halves.curve, atol=1e-4)


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


def test_torchrun_accumulation_and_clipping_equal_single_process(scan_path, tmp_path):
    """--accumulate-grad-batches 2 --clip-grad-norm: 20 groups, micro-batches of 4 (2/2 per rank),
    DDP syncs once per step of 8; the same weights as one process with the same flags."""
    flags = ["--epochs", "1", "--seed", "0", "--batch-size", "4", "--n-groups", "20", "--n-filters-scale", "1", "--device", "cpu",
             "--quiet", "--deterministic", "--accumulate-grad-batches", "2", "--clip-grad-norm", "0.5"]
    one = _single("train", "--data", str(scan_path), "--out", str(tmp_path / "S"), *flags)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _torchrun("train", "--data", str(scan_path), "--out", str(tmp_path / "D"), *flags)
    assert two.returncode == 0, two.stderr[-3000:]
    worst, same = _compare(_weights(tmp_path / "S"), _weights(tmp_path / "D"))
    print(f"accumulate 2 + clip, torchrun vs one process: max rel L2 per tensor {worst:.3g}, {same} bitwise equal")
    assert worst <= 1e-6, worst


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
