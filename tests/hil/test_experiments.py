"""``hil bench``: each experiment's smoke version runs end to end and writes JSON, markdown and PNG."""

import json
import socket
import sys

import pytest

from hil.cli import main
from hil.experiments import Runner, config_key, finished_runs


def _run(tmp_path, experiment, *extra, name=None):
    assert main(["bench", experiment, "--smoke", "--seeds", "2", "--epochs", "3", "--out", str(tmp_path),
                 "--threads", "1", *extra, *(["--name", name] if name else [])]) == 0
    name = name or f"{experiment}_smoke"
    for suffix in (".json", ".md", ".png"):
        assert (tmp_path / f"{name}{suffix}").stat().st_size > 0
    return json.loads((tmp_path / f"{name}.json").read_text()), (tmp_path / f"{name}.md").read_text()


def test_rq1_smoke_tabulates_four_methods_for_mlp_and_cnn(tmp_path):
    payload, table = _run(tmp_path, "rq1")
    groups = {(g["net"], g["method"]): g for g in payload["groups"]}
    assert set(groups) == {(net, m) for net in ("MLP", "CNN") for m in ("bp", "mf-ad", "weight", "activity")}
    assert all(len(g["runs"]) == 2 and g["test_accuracy"]["n"] == 2 for g in groups.values())
    assert [r["config"]["seed"] for r in groups["CNN", "activity"]["runs"]] == [0, 1]
    assert groups["CNN", "activity"]["runs"][0]["summary"]["device"].endswith("layers=64&conv=8c3p2,16c3")
    assert groups["MLP", "weight"]["queries_per_step"] == 1 + 2 * 4  # one hidden layer
    assert groups["MLP", "activity"]["queries_per_step"] == 3 and groups["CNN", "activity"]["queries_per_step"] == 6
    assert all(g["test_accuracy"]["mean"] > 0.8 for g in groups.values())
    assert all(0 < r["summary"]["validation_accuracy"] <= 1 for g in groups.values() for r in g["runs"])
    assert "| digits | CNN |" in table and "+-" in table and "MF+DD activity" in table
    assert "from bp 0.01, mf-ad 0.01, weight 0.01, activity 0.01 (not chosen" in table  # smoke: every method at 1e-2
    assert "0.1 of the training set held out for validation" in table


def test_rq1_chooses_each_methods_rate_on_validation(tmp_path):
    payload, table = _run(tmp_path, "rq1", "--nets", "MLP", "--methods", "mf-ad,activity", "--lrs", "0.001,0.03",
                          name="rq1_rates")
    assert {g["method"] for g in payload["groups"]} == {"mf-ad", "activity"}
    for method in ("mf-ad", "activity"):
        tried = [g for g in payload["groups"] if g["method"] == method]
        assert sorted(g["lr"] for g in tried) == [0.001, 0.03] and sum(g["best_lr"] for g in tried) == 1
        chosen = next(g for g in tried if g["best_lr"])
        assert chosen["validation_accuracy"]["mean"] == max(g["validation_accuracy"]["mean"] for g in tried)
        assert f"lr {chosen['lr']:g}" in table
    assert "best mean validation accuracy" in table and "MF+DD weight" not in table


def test_rq1_can_choose_rates_on_the_first_seeds_and_train_the_rest_at_the_choice(tmp_path):
    payload, table = _run(tmp_path, "rq1", "--nets", "MLP", "--methods", "activity", "--lrs", "0.001,0.03",
                          "--seeds", "3", "--sweep-seeds", "1", name="rq1_sweep")
    chosen, other = sorted(payload["groups"], key=lambda g: not g["best_lr"])
    assert [r["config"]["seed"] for r in chosen["runs"]] == [0, 1, 2] and chosen["test_accuracy"]["n"] == 3
    assert [r["config"]["seed"] for r in other["runs"]] == [0]
    assert chosen["runs"][0]["summary"]["validation_accuracy"] >= other["runs"][0]["summary"]["validation_accuracy"]
    assert "over seeds 0-0" in table


def test_rq2_smoke_reports_every_p_and_both_combinations_with_loss_curves(tmp_path):
    payload, table = _run(tmp_path, "rq2", "--hidden", "24", name="rq2_narrow")
    cells = {(g["directions"], g["combine"]): g for g in payload["groups"]}
    assert set(cells) == {(p, c) for p in (1, 2, 4, 8) for c in ("mean", "projection")}
    for (p, _), g in cells.items():
        assert g["queries_per_step"] == 1 + 2 * p
        assert all(len(r["history"]) == 3 and r["history"][-1]["val_loss"] > 0 for r in g["runs"])
        assert all(r["config"]["rule_options"]["estimator"] == "weight" for r in g["runs"])  # the poster's question
    assert "| 8 | projection |" in table
    assert all(r["config"]["hidden"] == [24] for g in cells.values() for r in g["runs"]) and "MLP [24]" in table


def test_mdfa_smoke_covers_pairs_and_all_classes(tmp_path):
    payload, table = _run(tmp_path, "mdfa")
    tasks = {g["task"] for g in payload["groups"]}
    assert tasks == {"classes 3 vs 8", "classes 1 vs 7", "all classes"}
    binary = [g for g in payload["groups"] if g["task"] != "all classes"]
    assert all(g["test_accuracy"]["mean"] > 0.85 for g in binary)
    assert "mDFA - DFA" in table


def test_mdfa_learning_rate_sweep_reports_each_rule_at_its_best_rate(tmp_path):
    payload, table = _run(tmp_path, "mdfa", "--lrs", "0.01,0.05", name="mdfa_rates")
    assert payload["lrs"] == [0.01, 0.05]
    for task in {g["task"] for g in payload["groups"]}:
        for rule in ("bp", "dfa", "mdfa"):
            tried = [g for g in payload["groups"] if (g["task"], g["rule"]) == (task, rule)]
            assert sorted(g["lr"] for g in tried) == [0.01, 0.05]
            assert all(r["config"]["lr"] == g["lr"] for g in tried for r in g["runs"])
            (best,) = [g for g in tried if g["best_lr"]]  # chosen on validation, never on test
            assert best["validation_accuracy"]["mean"] == max(g["validation_accuracy"]["mean"] for g in tried)
            assert f"{_pm_text(best)} (lr {best['lr']:g})" in table
    assert "best Adam learning rate of 0.01, 0.05" in table


def _pm_text(group):
    return f"{group['test_accuracy']['mean']:.4f} +- {group['test_accuracy']['std']:.4f}"


def _summaries(payload):
    return {r["label"]: r["summary"]["test_accuracy"] for g in payload["groups"] for r in g["runs"]}


@pytest.fixture
def ray():
    """Ray, for tests whose command starts a local one; shut down after, so later tests start clean."""
    ray = pytest.importorskip("ray")
    yield ray
    ray.shutdown()


def _trained(run):
    """What a run learned (accuracies, losses, device queries per epoch), without its timings and scratch folder."""
    skip = {"train_seconds", "run_dir"}
    return ({k: v for k, v in run["summary"].items() if k not in skip},
            [{k: v for k, v in row.items() if k not in skip} for row in run["history"]])


def test_jobs_train_alike_on_ray_and_reuse_adds_seeds_to_earlier_results(tmp_path, ray):
    common = ["bench", "rq1", "--smoke", "--nets", "MLP", "--methods", "bp,activity", "--epochs", "2",
              "--threads", "1"]
    assert main([*common, "--seeds", "1", "--out", str(tmp_path / "one")]) == 0
    assert not ray.is_initialized()  # one job trains here, without Ray
    assert main([*common, "--seeds", "2", "--jobs", "2", "--out", str(tmp_path / "pool")]) == 0
    assert ray.cluster_resources()["CPU"] == 2  # --jobs x --threads: Ray's scheduler trains two at once
    earlier = tmp_path / "one" / "rq1_smoke.json"
    assert main([*common, "--seeds", "2", "--jobs", "2", "--reuse", str(earlier), "--out", str(tmp_path / "more")]) == 0
    one, pool, more = (json.loads((tmp_path / d / "rq1_smoke.json").read_text()) for d in ("one", "pool", "more"))
    # runs on Ray train exactly as in this process
    here = {r["label"]: _trained(r) for g in one["groups"] for r in g["runs"]}
    assert {r["label"]: _trained(r) for g in pool["groups"] for r in g["runs"] if r["label"] in here} == here
    assert _summaries(more) == _summaries(pool)
    runs = [r for g in more["groups"] for r in g["runs"]]
    reused = [r for r in runs if "reused_from" in r]
    assert [r["config"]["seed"] for r in reused] == [0, 0]
    assert all(r["reused_from"]["file"] == str(earlier) for r in reused)
    # a reused run is the earlier one, timings and all, not trained again
    assert [r["wall_seconds"] for r in reused] == [r["wall_seconds"] for g in one["groups"] for r in g["runs"]]
    assert more["environment"]["jobs"] == 2
    assert f"2 of the 4 runs are reused from `{earlier}`" in (tmp_path / "more" / "rq1_smoke.md").read_text()


def test_bench_refuses_an_address_where_no_ray_cluster_listens(capsys, tmp_path, ray):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{unused.getsockname()[1]}"
    assert main(["bench", "rq1", "--smoke", "--nets", "MLP", "--methods", "bp", "--epochs", "1", "--seeds", "1",
                 "--address", address, "--out", str(tmp_path)]) == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("hil: error:")]
    assert f"--address {address}: no Ray cluster listens there" in line and "ray start --head" in line
    assert not ray.is_initialized()


def test_a_results_file_grown_in_place_keeps_what_trained_each_run(tmp_path, monkeypatch):
    def bench(*args):
        monkeypatch.setattr(sys, "argv", ["hil", *args])
        assert main(list(args)) == 0

    common = ["bench", "rq1", "--smoke", "--nets", "MLP", "--epochs", "1", "--threads", "1", "--out", str(tmp_path)]
    grown = tmp_path / "rq1_smoke.json"
    bench(*common, "--seeds", "1")
    bench(*common, "--seeds", "2", "--reuse", str(grown))
    bench(*common, "--seeds", "2", "--reuse", str(grown))
    note = (tmp_path / "rq1_smoke.md").read_text()
    # seed 0 by the first command, seed 1 by the second; nothing is credited to the third
    assert note.count(f"4 of the 8 runs are reused from `{grown}`") == 2
    assert f"produced by `hil {' '.join(common)} --seeds 1`" in note
    assert f"produced by `hil {' '.join(common)} --seeds 2 --reuse {grown}`" in note


def test_bench_refuses_bad_arguments(capsys, tmp_path):
    assert main(["bench", "rq1", "--seeds", "0"]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert main(["bench", "rq1", "--jobs", "0"]) == 2
    assert "--jobs" in capsys.readouterr().err
    assert main(["bench", "rq2", "--lrs", "0.01,0.1"]) == 2
    assert "--lrs applies to rq1 and mdfa" in capsys.readouterr().err
    assert main(["bench", "rq1", "--methods", "weight,sgd"]) == 2
    assert "--methods" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "mdfa", "--lrs", "0.01,-1"])
    assert "must be positive" in capsys.readouterr().err
    not_results = tmp_path / "notes.json"
    not_results.write_text('{"runs": []}')
    assert main(["bench", "rq1", "--reuse", str(not_results)]) == 2
    assert "is not a results file of hil bench" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "rq9"])


def test_runs_stored_before_the_estimator_and_validation_fields_are_not_taken_for_new_ones(tmp_path):
    """An old run trained weight-space mf-dd on the whole training set: it matches only a config that says so."""
    common = ["bench", "rq1", "--smoke", "--nets", "MLP", "--methods", "activity", "--epochs", "1", "--threads", "1"]
    assert main([*common, "--seeds", "1", "--out", str(tmp_path)]) == 0
    path = tmp_path / "rq1_smoke.json"
    payload = json.loads(path.read_text())
    for group in payload["groups"]:
        for run in group["runs"]:
            del run["config"]["rule_options"]["estimator"], run["config"]["validation"]
    path.write_text(json.dumps(payload))
    (old,) = finished_runs(path).values()
    asked = {**old["config"], "estimator": "activity", "validation": 0.1}
    runner = Runner(reuse=[path])
    assert config_key(asked) not in runner.finished
    assert config_key({**old["config"], "estimator": "weight", "validation": 0.0}) in runner.finished
