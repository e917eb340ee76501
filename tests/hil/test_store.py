import csv
import subprocess
import sys
import threading

import pytest

from hil.store import RunStore


def _store(tmp_path):
    return RunStore.for_runs(tmp_path)


def test_metrics_events_and_counters_round_trip_and_export_to_csv(tmp_path):
    store = _store(tmp_path)
    store.start_run("a", tmp_path / "a", {"lr": 0.01}, "sim://crossbar", "chip", 3)
    store.log_metrics("a", 1, 0, {"loss": 2.5, "queries_per_second": 100.0})
    store.log_metrics("a", 2, 0, {"loss": 2.0})
    store.log_event("a", "checkpoint", {"epoch": 1})
    store.set_counters("a", {"queries": 10, "link_reconnects": 1})
    store.set_counters("a", {"queries": 20})
    run = store.run("a")
    assert run["config"] == {"lr": 0.01} and run["status"] == "running"
    assert run["counters"] == {"queries": 20.0, "link_reconnects": 1.0}
    rows = store.metrics("a")
    assert [(m.step, m.name, m.value) for m in rows] == [(1, "loss", 2.5), (1, "queries_per_second", 100.0),
                                                          (2, "loss", 2.0)]
    assert [m.name for m in store.metrics("a", since=rows[1].id)] == ["loss"]
    assert store.latest_metrics("a") == {"loss": 2.0, "queries_per_second": 100.0}
    assert [(e.kind, e.data) for e in store.events("a")] == [("checkpoint", {"epoch": 1})]
    assert store.export_csv("a", tmp_path / "a.csv") == 3
    with open(tmp_path / "a.csv") as f:
        assert list(csv.reader(f))[1][1:5] == ["1", "0", "loss", "2.5"]


def test_controls_are_taken_once_in_order(tmp_path):
    store = _store(tmp_path)
    store.start_run("a", tmp_path / "a", {}, "d", "i", 0)
    store.request_control("a", "pause")
    store.request_control("a", "stop")
    assert [store.take_control("a"), store.take_control("a"), store.take_control("a")] == ["pause", "stop", None]


def test_a_crashed_trainer_leaves_its_run_marked_failed_on_next_open(tmp_path):
    code = (f"from pathlib import Path; from hil.store import RunStore; import os; "
            f"s = RunStore.for_runs(Path({str(tmp_path)!r})); s.start_run('x', Path('x'), {{}}, 'd', 'i', 0); "
            f"s.log_metrics('x', 1, 0, {{'loss': 1.0}}); os._exit(9)")
    subprocess.run([sys.executable, "-c", code], check=False)
    store = _store(tmp_path)
    run = store.run("x")
    assert run["status"] == "failed" and "crash" in run["exit_reason"]
    assert [m.value for m in store.metrics("x")] == [1.0]


def test_writers_and_readers_on_several_threads(tmp_path):
    store = _store(tmp_path)
    for name in "ab":
        store.start_run(name, tmp_path / name, {}, "d", "i", 0)

    def write(name):
        for step in range(200):
            store.log_metrics(name, step, 0, {"loss": float(step)})

    seen = []

    def read():
        for _ in range(100):
            seen.append(len(store.metrics("a")))

    threads = [threading.Thread(target=write, args=(n,)) for n in "ab"] + [threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.metrics("a")) == len(store.metrics("b")) == 200
    assert seen == sorted(seen)  # a reader never sees rows disappear


def test_a_trained_run_exports_csv_from_the_cli_and_writes_tensorboard_scalars(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from hil.cli import main

    assert main(["train", "--epochs", "2", "--hidden", "16", "--no-progress", "--run-dir", str(tmp_path / "r")]) == 0
    assert main(["export", "r", "--runs", str(tmp_path), "--csv", str(tmp_path / "r.csv")]) == 0
    with open(tmp_path / "r.csv") as f:
        rows = list(csv.DictReader(f))
    accuracy = [float(r["value"]) for r in rows if r["name"] == "test_accuracy_cumulative"]
    assert len(accuracy) == 2 and 0 < accuracy[-1] <= 1
    events = EventAccumulator(str(tmp_path / "r" / "tensorboard"))
    events.Reload()
    assert [e.value for e in events.Scalars("epoch/test_accuracy_cumulative")] == pytest.approx(accuracy)
    assert main(["export", "ghost", "--runs", str(tmp_path), "--csv", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert "no run 'ghost'" in err and "(runs: r)" in err
