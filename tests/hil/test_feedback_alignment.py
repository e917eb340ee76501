"""dfa and mdfa: host-side updates from measured activations, checked against autograd."""

import pytest
import torch

from devices import CapabilityError
from hil.config import build_config
from hil.model import MonoForward
from hil.rules import make_rule
from hil.rules.feedback_alignment import MONOTONE_FLOOR, activation_slope
from hil.runs import RunFolder
from hil.trainer import Trainer
from simulators.registry import open_sim


def _setup(rule, activation, seed=0, classes=4):
    device = open_sim(f"sim://crossbar?layers=12,9,7&activation={activation}")
    model = MonoForward.initialise(device.info(), classes=classes, seed=seed)
    config = build_config({"rule": rule, "device": "sim://crossbar", "seed": seed})
    g = torch.Generator().manual_seed(seed + 1)
    x, y = torch.rand(16, 12, generator=g), torch.randint(0, classes, (16,), generator=g)
    return device, model, make_rule(device, model, config), x, y


@pytest.mark.parametrize("activation, classes", [("relu", 4), ("tanh", 4), ("hardtanh", 4), ("tanh", 2)])
def test_with_the_readout_as_feedback_the_last_layer_gets_the_backprop_gradient(activation, classes):
    device, model, dfa, x, y = _setup("dfa", activation, classes=classes)
    dfa.constrain_()  # as the trainer does before the first step
    readout = model.projections[-1].detach()
    # a binary task has one output: class 1's row against its mirror for class 0, z = (m_1 - m_0) a
    assert dfa.single_output == (classes == 2) and (classes > 2 or torch.equal(readout[0], -readout[1]))
    dfa.feedback[-1] = (readout[1:] - readout[:1]) if classes == 2 else readout.clone()
    dfa.step(x, y, 0)
    got = {k: v.grad.clone() for k, v in model.params[-1].items()}
    readout_grad = model.projections[-1].grad.clone()
    for t in model.tensors():
        t.grad = None
    bp = make_rule(device, model, build_config({"rule": "bp", "device": "sim://crossbar"}))
    bp.step(x, y, 0)
    for name, grad in got.items():
        torch.testing.assert_close(grad, model.params[-1][name].grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(readout_grad, model.projections[-1].grad, rtol=1e-5, atol=1e-7)


def test_activation_slopes_match_autograd():
    z = torch.linspace(-2, 2, 41, requires_grad=True)
    for name, f in (("relu", torch.relu), ("tanh", torch.tanh), ("hardtanh", torch.nn.functional.hardtanh)):
        (grad,) = torch.autograd.grad(f(z).sum(), z)
        torch.testing.assert_close(activation_slope(name, f(z).detach())[z.abs() != 1], grad[z.abs() != 1])


def test_mdfa_keeps_later_layers_and_readout_non_negative(tmp_path):
    config = build_config({"rule": "mdfa", "device": "sim://crossbar?activation=tanh", "hidden": [64, 64],
                           "epochs": 4, "run_dir": tmp_path / "run"})
    trainer = Trainer(config, RunFolder.create(config), progress=False)
    summary = trainer.fit()
    later = [layer["weight"] for layer in trainer.model.params[1:]] + [trainer.model.projections[-1]]
    assert all(bool((w >= MONOTONE_FLOOR).all()) for w in later)
    assert bool((trainer.model.params[0]["weight"] < 0).any())  # the first layer is free
    assert (trainer.rule.feedback[0] >= 0).all()
    assert summary["test_accuracy_cumulative"] is None and summary["test_accuracy"] > 0.7


def test_mdfa_refuses_a_relu_device_and_says_how_to_fix_it():
    with pytest.raises(CapabilityError, match="activation=tanh"):
        _setup("mdfa", "relu")


def test_dfa_refuses_a_photonic_mesh():
    device = open_sim("sim://photonic?layers=8,8")
    model = MonoForward.initialise(device.info(), classes=4, seed=0)
    with pytest.raises(CapabilityError, match="mf-dd"):
        make_rule(device, model, build_config({"rule": "dfa", "device": "sim://photonic"}))


def test_dfa_trains_digits_past_ninety_percent_with_one_query_per_layer(tmp_path):
    config = build_config({"rule": "dfa", "epochs": 6, "run_dir": tmp_path / "run"})
    summary = Trainer(config, RunFolder.create(config), progress=False).fit()
    assert summary["queries_per_step"] == 2
    assert summary["test_accuracy"] == summary["test_accuracy_final_layer"] >= 0.90
