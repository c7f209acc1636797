"""Training-state files: optimiser, scheduler and RNG states survive a JSON + safetensors round trip."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from ptychopinn.errors import ModelFormatError
from ptychopinn.train import state as st


def _stepped_adam():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0, min_lr=1e-4)
    for i in range(3):
        opt.zero_grad()
        net(torch.randn(5, 3)).square().mean().backward()
        opt.step()
        sched.step(1.0)  # no improvement after the first: the LR halves
    return net, opt, sched


def test_optimizer_scheduler_round_trip(tmp_path):
    net, opt, sched = _stepped_adam()
    tensors, info = st.optimizer_state(opt)
    st.write_state(tmp_path, tensors, {"optimizer": info, "scheduler": sched.state_dict(), "rng": {}})
    # strict JSON on disk (no NaN/Infinity tokens, no pickle)
    text = (tmp_path / st.STATE_JSON).read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    (tmp_path / st.STATE_TENSORS).unlink()
    from safetensors.torch import save_file

    save_file({**tensors, "rng.torch_cpu": torch.get_rng_state()}, str(tmp_path / st.STATE_TENSORS))
    got_t, got_i = st.read_state(tmp_path)

    net2, opt2, sched2 = _stepped_adam()
    with torch.no_grad():
        for p in net2.parameters():
            p.add_(1.0)  # different state to be overwritten
    opt2 = torch.optim.Adam(net2.parameters(), lr=5.0)
    sched2 = torch.optim.lr_scheduler.ReduceLROnPlateau(opt2)
    st.load_optimizer_state(opt2, got_t, got_i["optimizer"])
    sched2.load_state_dict(got_i["scheduler"])
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"][0]["lr"] == b["param_groups"][0]["lr"] == pytest.approx(1e-3 / 4)
    assert b["param_groups"][0]["betas"] == (0.9, 0.999) and b["param_groups"][0]["eps"] == 1e-7
    for pid in a["state"]:
        for k in a["state"][pid]:
            assert torch.equal(a["state"][pid][k], b["state"][pid][k])
    assert sched2.state_dict() == sched.state_dict()  # includes best (finite) and num_bad_epochs


def test_rng_round_trip_reproduces_draws(tmp_path):
    gen = np.random.default_rng(5)
    gen.random(3)
    torch.manual_seed(11)
    random.seed(7)
    tensors, info = st.rng_state(gen)
    tensors["rng.torch_cpu"] = tensors["rng.torch_cpu"].clone()
    st.write_state(tmp_path, tensors, {"rng": info})
    expected = (gen.random(4), torch.rand(4), [random.random() for _ in range(4)])
    gen2 = np.random.default_rng(0)
    torch.manual_seed(0)
    random.seed(0)
    t, i = st.read_state(tmp_path)
    st.restore_rng_state(gen2, t, i["rng"])
    got = (gen2.random(4), torch.rand(4), [random.random() for _ in range(4)])
    np.testing.assert_array_equal(got[0], expected[0])
    assert torch.equal(got[1], expected[1])
    assert got[2] == expected[2]
    assert t["rng.torch_cpu"].dtype == torch.uint8


def test_infinite_values_survive(tmp_path):
    info = {"scheduler": {"best": float("inf"), "values": [float("-inf"), 1.5]}, "rng": {}}
    st.write_state(tmp_path, {"rng.torch_cpu": torch.get_rng_state()}, info)
    _, got = st.read_state(tmp_path)
    assert got["scheduler"]["best"] == float("inf") and got["scheduler"]["values"] == [float("-inf"), 1.5]


def test_missing_or_foreign_state_is_refused(tmp_path):
    with pytest.raises(ModelFormatError, match="training_state"):
        st.read_state(tmp_path)
    st.write_state(tmp_path, {"rng.torch_cpu": torch.get_rng_state()}, {})
    (tmp_path / st.STATE_JSON).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ModelFormatError, match="format"):
        st.read_state(tmp_path)
