"""``hil sweep`` on a local Ray: a sweep interrupted by Ctrl-C resumes without training finished trials again."""

import json
import os
import signal
import subprocess
import sys
import time

import ray
import yaml

from hil.cli import main
from hil.store import RunStore

SWEEP = {"base": {"hidden": [16], "batch_size": 64, "epochs": 4}, "space": {"lr": {"grid": [0.02, 0.01, 0.005]}},
         "metric": "val_accuracy"}


def summaries(runs):
    return {p.parent.name: json.loads(p.read_text()) for p in runs.glob("*/summary.json")}


def test_an_interrupted_sweep_resumes_without_retraining_finished_trials(tmp_path, capsys):
    spec = tmp_path / "sweep.yaml"
    spec.write_text(yaml.safe_dump(SWEEP))
    out = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "hil.cli", "sweep", str(spec), "--out", str(out), "--jobs", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    runs = out / "runs"
    deadline = time.monotonic() + 240
    try:  # Ctrl-C once one trial has finished and another has a checkpoint
        while not (summaries(runs) and len(list(runs.glob("*/checkpoint.pt"))) >= 2):
            assert time.monotonic() < deadline and proc.poll() is None, "the sweep did not get going"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    finished_before = {k for k, v in summaries(runs).items() if v["status"] == "finished"}
    interrupted = {p.parent.name for p in runs.glob("*/checkpoint.pt")} - finished_before
    assert finished_before and not (out / "results.md").exists()

    assert main(["sweep", "--resume", str(out), "--jobs", "1"]) == 0
    ray.shutdown()
    store = RunStore.for_runs(runs)
    trials = {r["id"]: r for r in store.runs()}
    assert len(trials) == 3 and {r["status"] for r in trials.values()} == {"finished"}
    for run_id in trials:
        kinds = [e.kind for e in store.events(run_id)]
        if run_id in finished_before:  # trained once, never again
            assert kinds.count("started") == 1 and "resumed" not in kinds
        assert kinds[-1] == "finished"
    for run_id in interrupted:  # a trial stopped with a checkpoint went on from it
        assert "resumed" in [e.kind for e in store.events(run_id)]
    assert all(summaries(runs)[run_id]["epochs"] == 4 for run_id in trials)
    table = (out / "results.md").read_text()
    assert table.count("| finished |") == 3 and "val_accuracy" in table
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["lr"] in (0.02, 0.01, 0.005) and "run_dir" not in best
    assert "wrote" in capsys.readouterr().err


def test_a_sweep_with_a_test_metric_is_refused_before_ray_starts(tmp_path, capsys):
    spec = tmp_path / "sweep.yaml"
    spec.write_text(yaml.safe_dump({**SWEEP, "metric": "test_accuracy"}))
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out")]) == 2
    assert "test set" in capsys.readouterr().err and not ray.is_initialized()
    assert not (tmp_path / "out").exists()


def test_the_python_api_runs_a_sweep_given_as_a_dict(tmp_path):
    import hil

    spec = {**SWEEP, "base": {**SWEEP["base"], "epochs": 1}, "space": {"lr": {"choice": [0.01, 0.02]}}, "samples": 2}
    try:
        results = hil.sweep(spec, tmp_path / "out", jobs=1)
    finally:
        ray.shutdown()
    assert results == tmp_path / "out" / "results.md" and results.read_text().count("| finished |") == 2
    assert yaml.safe_load((tmp_path / "out" / "sweep.yaml").read_text()) == spec


def test_results_choose_each_trial_on_its_rules_headline_accuracy(tmp_path):
    """bp's headline is the final layer's accuracy (what its trials report to Tune), mf-dd's the cumulative one."""
    from types import SimpleNamespace

    from hil.cluster.spec import parse_sweep
    from hil.cluster.sweep import _trial_row, write_results

    rows = [{"epoch": 1, "val_accuracy_final_layer": 0.9, "val_accuracy_cumulative": 0.5,
             "test_accuracy_final_layer": 0.8, "test_accuracy_cumulative": 0.4},
            {"epoch": 2, "val_accuracy_final_layer": 0.6, "val_accuracy_cumulative": 0.7,
             "test_accuracy_final_layer": 0.5, "test_accuracy_cumulative": 0.6}]
    spec = parse_sweep({"space": {"rule": {"grid": ["bp", "mf-dd"]}}})
    trials = []
    for name, rule in (("a", "bp"), ("b", "mf-dd")):
        folder = tmp_path / "runs" / name
        folder.mkdir(parents=True)
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        trials.append(_trial_row(SimpleNamespace(path=str(tmp_path / "tune" / name), config={"rule": rule},
                                                 error=None), tmp_path, spec))
    write_results(spec, tmp_path, trials)
    chosen = {t["trial"]: (t["best_epoch"], t["value"], t["test_accuracy"]) for t in trials}
    assert chosen == {"a": (1, 0.9, 0.8), "b": (2, 0.7, 0.6)}
    assert yaml.safe_load((tmp_path / "best.yaml").read_text())["rule"] == "bp"
