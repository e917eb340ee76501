import math
import re
import signal
import subprocess
import sys

import pytest
import torch

from devices import CapabilityError, Device
from hil.config import build_config
from hil.data import DatasetError
from hil.runs import RunFolder
from hil.session import resolve_device_url
from hil.trainer import Trainer
from simulators import SimulatedCrossbar

MINUTES = 15 * 60  # an epoch "in minutes", with room for a loaded 2-core machine (about 30 s when idle)


def _trainer(tmp_path, progress=False, **fields):
    values = {"epochs": 2, "hidden": [32], "batch_size": 128, "run_dir": tmp_path / "run",
              "lr_schedule": "cosine", **fields}
    config = build_config(values)
    run = RunFolder.create(config) if not (tmp_path / "run" / "checkpoint.pt").exists() else RunFolder(tmp_path / "run")
    return Trainer(config, run, progress=progress)


def test_queries_per_step_are_one_plus_two_p_per_layer_in_weight_space(tmp_path):
    for p, hidden in ((1, [16]), (3, [16, 8])):
        trainer = _trainer(tmp_path / f"p{p}", epochs=1, directions=p, hidden=hidden, estimator="weight")
        summary = trainer.fit()
        assert summary["queries_per_step"] == len(hidden) * (1 + 2 * p)
        assert summary["queries_per_layer_step"] == [1 + 2 * p] * len(hidden)


def test_the_activity_estimate_costs_three_queries_per_layer_whatever_p(tmp_path):
    trainer = _trainer(tmp_path, epochs=1, directions=8, hidden=[16, 8])
    summary = trainer.fit()
    assert summary["estimator"] == "auto" and summary["estimators"] == ["activity", "activity"]
    assert summary["queries_per_step"] == 2 * 3 and summary["queries_per_layer_step"] == [3, 3]
    assert summary["directions_by_layer"] == [None, None]
    assert "layer 1: activity (bias pair" in trainer.rule.summary()


def test_a_direction_budget_per_layer_sets_each_layers_queries(tmp_path):
    trainer = _trainer(tmp_path, epochs=1, directions=[3, 1], hidden=[16, 8], estimator="weight")
    assert "P=3," in trainer.rule.summary() and "P=1," in trainer.rule.summary()
    assert trainer.fit()["queries_per_step"] == (1 + 2 * 3) + (1 + 2 * 1)


def test_default_config_trains_digits_past_ninety_percent(tmp_path):
    config = build_config({"run_dir": tmp_path / "run", "epochs": 12})
    summary = Trainer(config, RunFolder.create(config), progress=False).fit()
    assert summary["rule"] == "mf-dd" and summary["dataset"] == "digits"
    assert summary["test_accuracy"] == summary["test_accuracy_cumulative"] >= 0.90


@pytest.mark.parametrize("rule", ["mf-ad", "bp"])
def test_autograd_baselines_train(tmp_path, rule):
    summary = _trainer(tmp_path, rule=rule, epochs=5, hidden=[64], batch_size=32).fit()
    assert summary["test_accuracy_final_layer"] >= 0.9


def test_resume_after_a_stop_mid_epoch_equals_an_uninterrupted_run(tmp_path):
    whole = _trainer(tmp_path / "whole")
    whole.fit()

    interrupted = _trainer(tmp_path / "split")

    def stop_after_five(t: Trainer) -> None:
        if t.train_steps == 5:
            t.stop.request("test")

    interrupted.on_step = stop_after_five
    first = interrupted.fit()
    assert first["status"] == "stopped" and first["epochs"] == 0
    resumed = _trainer(tmp_path / "split")
    assert (resumed.epoch, resumed.step_in_epoch) == (0, 5)
    summary = resumed.fit()
    assert summary["status"] == "finished"
    for a, b in zip(whole.model.tensors(), resumed.model.tensors()):
        assert torch.equal(a, b)
    assert whole.history == [
        {**row, "train_seconds": whole.history[i]["train_seconds"],
         "device_queries": whole.history[i]["device_queries"]}
        for i, row in enumerate(resumed.history)
    ]
    assert summary["queries_per_step"] == pytest.approx(whole.summary("finished")["queries_per_step"])


def test_run_folder_holds_config_checkpoint_metrics_and_summary(tmp_path):
    trainer = _trainer(tmp_path, epochs=1)
    trainer.fit()
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "checkpoint.pt", "metrics.jsonl", "summary.json"}
    assert RunFolder(run).config().hidden == [32]
    assert len(RunFolder(run).metrics()) == 1


def test_creating_over_an_existing_run_is_refused(tmp_path):
    _trainer(tmp_path, epochs=1).fit()
    with pytest.raises(FileExistsError, match="--resume"):
        RunFolder.create(build_config({"run_dir": tmp_path / "run"}))


def test_dataset_that_does_not_fit_the_device_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="64 features.*takes 10 inputs"):
        _trainer(tmp_path, device="sim://crossbar?layers=10,5")


class _NoAutograd(SimulatedCrossbar):
    def info(self):
        base = super().info()
        return base.model_copy(update={"capabilities": base.capabilities.model_copy(update={"differentiable": False})})


def test_autograd_rules_refuse_a_device_without_autograd(tmp_path, monkeypatch):
    import hil.session

    monkeypatch.setattr(hil.session, "open_device", lambda url: _NoAutograd())
    with pytest.raises(CapabilityError, match="mf-dd"):
        _trainer(tmp_path, rule="mf-ad", device="sim://crossbar?layers=64,256,256")


@pytest.mark.parametrize("rule, floor", [("mf-dd", 0.88), ("mf-ad", 0.90)])
def test_a_cnn_trains_digits(tmp_path, rule, floor):
    trainer = _trainer(tmp_path, rule=rule, conv="8c3p2", hidden=[32], epochs=10, batch_size=32, lr=0.01)
    assert [s.kind for s in trainer.info.layers] == ["conv", "dense"]
    summary = trainer.fit()
    assert summary["test_accuracy_cumulative"] >= floor


@pytest.mark.parametrize("rule, floor", [("mf-dd", 0.86), ("mf-ad", 0.92)])
def test_the_prototype_goodness_trains_digits(tmp_path, rule, floor):
    trainer = _trainer(tmp_path, rule=rule, goodness="prototype", hidden=[256], epochs=8, batch_size=32, lr=0.01)
    before = [p.clone() for p in trainer.model.projections]
    assert trainer.fit()["test_accuracy"] >= floor
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.projections))


def test_sim_url_gets_the_dataset_width_and_hidden_sizes():
    assert resolve_device_url("sim://crossbar", 784, [100, 50]) == "sim://crossbar?layers=784,100,50"
    assert resolve_device_url("sim://crossbar?activation=tanh", 64, [8]) == \
        "sim://crossbar?activation=tanh&layers=64,8"
    assert resolve_device_url("sim://crossbar?layers=4,2", 64, [8]) == "sim://crossbar?layers=4,2"
    assert resolve_device_url("serial:///dev/ttyACM0", 64, [8]) == "serial:///dev/ttyACM0"
    assert resolve_device_url("sim://crossbar", 64, [8], "4c3p2") == "sim://crossbar?layers=64,8&conv=4c3p2"
    assert resolve_device_url("sim://crossbar", 64, [], "4c3p2") == "sim://crossbar?layers=64&conv=4c3p2"


def test_mf_dd_uses_no_autograd(tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("mf-dd must not call autograd")

    monkeypatch.setattr(torch.Tensor, "backward", forbidden)
    monkeypatch.setattr(torch.autograd, "grad", forbidden)
    monkeypatch.setattr(SimulatedCrossbar, "differentiable_layer", forbidden)
    assert _trainer(tmp_path, epochs=1).fit()["status"] == "finished"


def test_device_base_class_is_abstract():
    with pytest.raises(TypeError):
        Device()  # type: ignore[abstract]


def test_resume_on_a_noisy_device_equals_an_uninterrupted_run(tmp_path):
    noisy = {"device": "sim://crossbar?preset=pcm&seed=2", "epochs": 2}
    whole = _trainer(tmp_path / "whole", **noisy)
    whole.fit()
    interrupted = _trainer(tmp_path / "split", **noisy)
    interrupted.on_step = lambda t: t.stop.request("test") if t.train_steps == 4 else None
    interrupted.fit()
    resumed = _trainer(tmp_path / "split", **noisy)
    summary = resumed.fit()
    for a, b in zip(whole.model.tensors(), resumed.model.tensors()):
        assert torch.equal(a, b)
    assert summary["device_queries"] == whole.summary("finished")["device_queries"]
    assert summary["eps"] == whole.summary("finished")["eps"]


def test_auto_eps_sits_above_the_noise_floors(tmp_path):
    ideal = _trainer(tmp_path / "ideal", epochs=1, estimator="weight")
    assert ideal.rule.eps == [pytest.approx(0.01)] and ideal.calibration["weight"]["noise"] == 0
    noisy = _trainer(tmp_path / "pcm", epochs=1, device="sim://crossbar?preset=pcm", estimator="weight")
    write_noise = noisy.info.layers[0].params[0].write_noise
    assert noisy.rule.eps[0] >= 3 * write_noise > 0
    assert noisy.calibration["weight"]["noise"] > 0
    fixed = _trainer(tmp_path / "fixed", epochs=1, eps=0.05)
    assert fixed.rule.eps == [0.05] and fixed.calibration is None


def test_activity_eps_sits_above_the_read_noise(tmp_path):
    ideal = _trainer(tmp_path / "ideal", epochs=1)
    assert ideal.rule.eps == [pytest.approx(0.01)] and ideal.calibration["activity"]["noise"] == 0
    found = {}
    for noise in (0.2, 0.4):  # output noise on the column sums, well above rram's 0.04
        noisy = _trainer(tmp_path / f"rram{noise}", epochs=1, device=f"sim://crossbar?preset=rram&output_noise={noise}")
        found[noise] = noisy.calibration["activity"]
        assert found[noise]["noise"] > 0 and noisy.rule.eps[0] == found[noise]["eps"] > 0.01
        assert found[noise]["eps"] == pytest.approx(found[noise]["measured_floor"])
    # the measured floor follows the read noise: twice the noise, about twice the step
    assert 1.6 < found[0.4]["eps"] / found[0.2]["eps"] < 2.4


def _rates_by_epoch(trainer: Trainer) -> dict[int, float]:
    """Train, noting the optimizer's rate at every step; each epoch's (one) rate."""
    seen: dict[int, set[float]] = {}
    trainer.on_step = lambda t: seen.setdefault(t.epoch + 1, set()).add(t.optimizer.param_groups[0]["lr"])
    trainer.fit()
    assert all(len(rates) == 1 for rates in seen.values())
    return {epoch: rates.pop() for epoch, rates in seen.items()}


def test_a_cosine_run_resumed_to_more_epochs_anneals_over_the_new_total(tmp_path):
    _trainer(tmp_path, epochs=1, hidden=[16], batch_size=256).fit()
    resumed = _trainer(tmp_path, epochs=3, hidden=[16], batch_size=256)
    rates = _rates_by_epoch(resumed)
    assert rates == {e: pytest.approx(0.01 * (1 + math.cos(math.pi * (e - 1) / 3)) / 2) for e in (2, 3)}
    assert rates == {e: r for e, r in _rates_by_epoch(_trainer(tmp_path / "whole", epochs=3, hidden=[16],
                                                                batch_size=256)).items() if e > 1}
    assert [row["lr"] for row in RunFolder(tmp_path / "run").metrics()] == [0.01, rates[2], rates[3]]


def test_the_default_photonic_job_trains_an_epoch_in_minutes(tmp_path):
    config = build_config({"device": "sim://photonic", "run_dir": tmp_path / "run", "epochs": 1})
    trainer = Trainer(config, RunFolder.create(config), progress=False)
    assert trainer.device_url == "sim://photonic?layers=64,64&chunks=8"
    assert trainer.epoch_estimate < MINUTES
    trainer.on_step = lambda t: t.stop.request("test") if t.train_steps == 3 else None
    trainer.fit()
    assert trainer.train_seconds / trainer.train_steps * trainer.steps_per_epoch() < MINUTES


def test_an_impractical_device_is_named_at_start_with_its_estimate(tmp_path):
    url = "sim://photonic?layers=64,256,256"
    child = subprocess.Popen([sys.executable, "-m", "hil.cli", "train", "--device", url, "--batch-size", "16",
                              "--no-progress"], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while not lines or "per epoch" not in lines[-1]:
            lines.append(child.stderr.readline())
            assert lines[-1], "".join(lines)
        found = re.search(r"about (?:(\d+) h )?(\d+) min per epoch", lines[-1])
        assert url in lines[-1] and found and 60 * int(found[1] or 0) + int(found[2]) >= 30, lines[-1]
        assert not any("queries per layer per step" in line for line in lines)  # before training starts
    finally:
        child.send_signal(signal.SIGTERM)
        child.communicate(timeout=120)
    assert child.returncode == 143 and not list(tmp_path.glob("runs/*"))
