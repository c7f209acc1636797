"""Float64 master weights (`TrainConfig.exact_gradients`): the same model for any thread count
and any batch split, float32 files, resumable masters, and the float32 path as a control."""
from __future__ import annotations

import pytest
import torch

from ptychopinn.config import ModelConfig, SimulationConfig, TrainConfig
from ptychopinn.errors import ConfigError

TINY = ModelConfig(n_filters_scale=1)


@pytest.fixture(scope="module")
def scan_path(tmp_path_factory):
    from ptychopinn.simulate import simulate_to_file

    cfg = SimulationConfig(N=64, object_size=96, n_positions=24, nphotons=1e6, seed=5)
    return simulate_to_file(cfg, tmp_path_factory.mktemp("exact") / "scan.npz")


def _tc(**kw):
    base = dict(epochs=1, batch_size=6, device="cpu", validation_fraction=0.1, seed=2)
    base.update(kw)
    return TrainConfig(**base)


def _train(scan_path, threads: int, **kw):
    from ptychopinn.train import train

    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return train(scan_path, TINY, None, _tc(**kw), progress=False)
    finally:
        torch.set_num_threads(prev)


def _worst(a, b) -> float:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return max(float((sa[k] - sb[k]).norm() / sa[k].norm().clamp_min(1e-30)) for k in sa if sa[k].is_floating_point())


def test_resolve_modes():
    from ptychopinn.train import master_weights as mw

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    # the fast path is the default on every device; --deterministic opts in
    assert mw.resolve(_tc(), cpu) is False
    assert mw.resolve(_tc(), cuda) is False
    assert mw.resolve(_tc(deterministic=True), cpu) is True
    assert mw.resolve(_tc(deterministic=True), cuda) is True
    assert mw.resolve(_tc(deterministic=True, amp="bf16"), cpu) is False
    assert mw.resolve(_tc(deterministic=True), torch.device("mps")) is False
    assert mw.resolve(_tc(exact_gradients="off"), cpu) is False
    assert mw.resolve(_tc(exact_gradients="on"), cuda) is True
    with pytest.raises(ConfigError, match="amp"):
        mw.resolve(_tc(exact_gradients="on", amp="bf16"), cpu)
    with pytest.raises(ConfigError, match="MPS"):
        mw.resolve(_tc(exact_gradients="on"), torch.device("mps"))


def test_bad_mode_is_a_config_error(scan_path):
    from ptychopinn.train import train

    with pytest.raises(ConfigError, match="exact_gradients"):
        train(scan_path, TINY, None, _tc(exact_gradients="yes"), progress=False)


def test_promote_demote_and_float32_copy():
    from ptychopinn.model import PtychoPINN
    from ptychopinn.train import master_weights as mw

    model = PtychoPINN(TINY)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mw.promote(model)
    from ptychopinn.model.layers import Conv2d

    conv_names = {f"{m}.{p}" for m, mod in model.named_modules() if isinstance(mod, Conv2d) for p in ("weight", "bias")}
    convs = {k: v for k, v in model.named_parameters() if k in conv_names}
    assert len(convs) == len(conv_names) > 20 and all(v.dtype == torch.float64 for v in convs.values())
    others = [v for k, v in model.state_dict().items() if k not in conv_names]
    assert others and all(v.dtype != torch.float64 for v in others)  # the probe, the scale: untouched
    w = model.encoder.blocks[0].conv2.weight
    assert w.is_contiguous(memory_format=torch.channels_last) == before["encoder.blocks.0.conv2.weight"].is_contiguous(
        memory_format=torch.channels_last
    )
    copy32 = mw.float32_model(model)
    assert copy32 is not model and all(p.dtype == torch.float32 for p in copy32.parameters())
    assert mw.has_masters(model)
    masters = mw.master_tensors(model)
    assert set(masters) == {mw.MASTER_PREFIX + k for k in convs}
    mw.demote(model)
    assert not mw.has_masters(model) and mw.float32_model(model) is model
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_exact_training_does_not_depend_on_thread_count(scan_path):
    a = _train(scan_path, 1, deterministic=True)
    b = _train(scan_path, 2, deterministic=True)
    assert a.extra["training"]["exact_gradients"] is True
    assert all(p.dtype == torch.float32 for p in a.model.parameters())  # the returned model is float32
    worst = _worst(a, b)
    print(f"exact gradients, 1 vs 2 threads, 4 Adam steps: worst rel L2 {worst:.3g}")
    assert worst == 0.0


@pytest.mark.slow
def test_float32_training_does_depend_on_thread_count(scan_path):
    """The control: with float32 weights the same two runs differ (the check above is not vacuous)."""
    a = _train(scan_path, 1, exact_gradients="off")
    b = _train(scan_path, 2, exact_gradients="off")
    worst = _worst(a, b)
    print(f"float32 weights, 1 vs 2 threads, 4 Adam steps: worst rel L2 {worst:.3g}")
    assert worst > 1e-6


def test_shards_of_a_batch_give_the_batch_gradient(scan_path):
    """Two shards weighted by the global batch size give bitwise the float32 weights of one batch."""
    from ptychopinn import data
    from ptychopinn.train import master_weights as mw
    from ptychopinn.train import setup
    from ptychopinn.train.losses import batch_loss

    tc = _tc()
    su = setup.check_inputs(scan_path, TINY, None, tc, None, False, None)
    f = float(data.normalization_factor(su.scan.diffraction, su.groups.indices))
    ds = data.GroupDataset(su.scan, su.groups, f * su.scale, start_offsets=True)
    idx = su.train_idx[:7].tolist()

    def grads(shards):
        model = setup.build_model(TINY, su.probe, su.scale, 0, torch.device("cpu"))
        mw.promote(model)
        for s in shards:
            b = ds.batch(s)
            loss, _ = batch_loss(model, b["x"], b["offsets"], None, TINY, tc, batch_size=len(idx))
            loss.backward()
        return {k: p.grad for k, p in model.named_parameters() if p.requires_grad}

    whole = grads([idx])
    split = grads([idx[0::2], idx[1::2]])
    for k in whole:
        assert whole[k].dtype == torch.float64
        torch.testing.assert_close(split[k], whole[k], rtol=1e-9, atol=1e-12)
        assert torch.equal(split[k].float(), whole[k].float()), k


@pytest.mark.slow
def test_resume_keeps_the_float64_masters(scan_path, tmp_path):
    from ptychopinn.io import load_model
    from ptychopinn.train import train
    from ptychopinn.train.state import read_state

    tc2 = _tc(epochs=2, exact_gradients="on")
    one_go = train(scan_path, TINY, None, tc2, out_dir=tmp_path / "a", progress=False)
    train(scan_path, TINY, None, _tc(epochs=1, exact_gradients="on"), out_dir=tmp_path / "b", progress=False)
    tensors, _ = read_state(tmp_path / "b" / "checkpoint")
    masters = {k: v for k, v in tensors.items() if k.startswith("master.")}
    assert masters and all(v.dtype == torch.float64 for v in masters.values())
    saved = load_model(tmp_path / "b" / "checkpoint").state_dict()
    # the checkpoint's model file is the float32 rounding of the masters
    k = "encoder.blocks.0.conv1.weight"
    assert saved[k].dtype == torch.float32 and torch.equal(saved[k], masters["master." + k].float())
    assert not torch.equal(saved[k].double(), masters["master." + k])  # the masters carry more bits
    resumed = train(scan_path, TINY, None, tc2, out_dir=tmp_path / "b", resume=True, progress=False)
    sa, sb = one_go.model.state_dict(), resumed.model.state_dict()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
