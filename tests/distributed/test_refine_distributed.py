"""`torchrun ptychopinn reconstruct --refine E --phase-sync K`: positions sharded over 2 CPU ranks
(gloo), gradients, illumination sums and the synchronisation canvases all-reduced; the result
equals one process's.

The amplitude loss is used: the sharding is the same for both losses, but from this poor start
(a 1-epoch model, 21 positions) the Poisson NLL's steps amplify rounding (ε = 1e-3 photons where
the prediction is dark): a 1e-7 change of the start becomes 2.6e-4 after 3 epochs (1.4e-6 with
the amplitude loss), so only the amplitude loss can show that sharding changes nothing but the
summation order."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np


def test_torchrun_refine_equals_single_process(tmp_path):
    import ptychopinn as pp
    from ptychopinn.config import ModelConfig, SimulationConfig, TrainConfig
    from ptychopinn.reconstruct.refine import RefineConfig
    from ptychopinn.simulate import simulate_to_file

    scan = simulate_to_file(SimulationConfig(N=64, object_size=96, n_positions=21, nphotons=1e6, seed=3), tmp_path / "D.npz")
    pp.train(scan, ModelConfig(n_filters_scale=1), None, TrainConfig(epochs=1, batch_size=8, device="cpu", validation_fraction=0.0),
             out_dir=tmp_path / "M", progress=False)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    out = tmp_path / "R"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "ptychopinn",
           "reconstruct", "--model", str(tmp_path / "M"), "--data", str(scan), "--out", str(out), "--device", "cpu",
           "--refine", "3", "--refine-batch", "8", "--refine-positions", "--refine-smooth", "0.5", "--phase-sync", "5",
           "--refine-loss", "amplitude", "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = pp.reconstruct(tmp_path / "M", scan, device="cpu", phase_sync=5,
                            refine=RefineConfig(epochs=3, batch_size=8, positions=True, smooth_weight=0.5, loss="amplitude"))
    with np.load(out / "reconstruction.npz", allow_pickle=False) as z:
        obj = z["object"]
    with np.load(out / "refinement.npz", allow_pickle=False) as z:
        positions = z["positions"]
    err = np.linalg.norm(obj - single.object) / np.linalg.norm(single.object)
    assert err < 1e-5, err  # same steps; only the float32 summation order differs (measured 8.9e-7)
    np.testing.assert_allclose(positions, single.refined_positions, atol=1e-3)
    plain = pp.reconstruct(tmp_path / "M", scan, device="cpu").object
    assert np.linalg.norm(plain - single.object) / np.linalg.norm(single.object) > 100 * err
