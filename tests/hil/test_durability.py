"""A run killed at any instant resumes exactly and without duplicate rows; signals stop it cleanly.

Real processes: ``hil train`` runs in a child Python that a small harness kills with SIGKILL at a
chosen instant (by wrapping one of hil's own functions), or that the test signals from outside.
"""

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from hil.cli import main
from hil.runs import CHECKPOINT, METRICS, SUMMARY, read_checkpoint

FLAGS = ["--epochs", "3", "--hidden", "16", "--batch-size", "128", "--lr-schedule", "cosine", "--no-progress"]
STEPS_PER_EPOCH = 11  # digits: 1293 training samples after the validation split, batches of 128
TIMED = {"queries_per_second", "train_seconds"}

KILL_BETWEEN_METRICS_AND_CHECKPOINT = """
    import hil.runs
    save = hil.runs.RunFolder.save_checkpoint
    def killing(self, state):
        if (state["epoch"], state["step_in_epoch"]) == (2, 0):
            os.kill(os.getpid(), signal.SIGKILL)
        save(self, state)
    hil.runs.RunFolder.save_checkpoint = killing
"""
KILL_WHILE_REPLACING_THE_CHECKPOINT = """
    replace, replaced = os.replace, []
    def killing(source, target):
        if str(target).endswith("checkpoint.pt"):
            replaced.append(target)
            if len(replaced) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        replace(source, target)
    os.replace = killing
"""
KILL_RIGHT_AFTER_A_CHECKPOINT = """
    import hil.runs
    save = hil.runs.RunFolder.save_checkpoint
    def killing(self, state):
        save(self, state)
        if state["epoch"] == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    hil.runs.RunFolder.save_checkpoint = killing
"""


def _kill_after_step(step: int) -> str:
    return f"""
    import hil.recorder
    record = hil.recorder.RunRecorder.step
    def killing(self, step, *args):
        record(self, step, *args)
        if step == {step}:
            os.kill(os.getpid(), signal.SIGKILL)
    hil.recorder.RunRecorder.step = killing
"""


def _signal_during(module: str, owner: str, name: str, signum: int) -> str:
    return f"""
    import time, {module}
    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), {signum})
        time.sleep(60)
    {owner}.{name} = interrupted
"""


def _hil(tmp_path: Path, argv: list[str], patch: str = "") -> subprocess.Popen:
    """``hil`` in a child process, after ``patch`` (Python run first, with os and signal imported)."""
    code = "\n".join(["import os, signal, sys", textwrap.dedent(patch), "from hil.cli import main",
                      "sys.exit(main(sys.argv[1:]))"])
    return subprocess.Popen([sys.executable, "-c", code, *argv], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / METRICS).read_text().splitlines()]


def _store(run: Path) -> list[tuple[int, int, str, float]]:
    with sqlite3.connect(run.parent / "hil.sqlite") as db:
        return db.execute("SELECT step, epoch, name, value FROM metrics WHERE run_id = ? ORDER BY id",
                          (run.name,)).fetchall()


def _untimed(rows: list[tuple[int, int, str, float]]) -> list[tuple[int, int, str, float]]:
    return sorted(r for r in rows if r[2] not in TIMED)


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run every interrupted one must end up equal to."""
    run = tmp_path_factory.mktemp("whole") / "runs" / "whole"
    assert main(["train", *FLAGS, "--run-dir", str(run)]) == 0
    return run


def _assert_equals_the_whole_run(run: Path, whole: Path) -> None:
    rows = _rows(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [{k: v for k, v in r.items() if k not in TIMED} for r in rows] == \
        [{k: v for k, v in r.items() if k not in TIMED} for r in _rows(whole)]
    store = _store(run)
    assert len({(step, name) for step, _, name, _ in store}) == len(store), "duplicate metric rows in the store"
    assert _untimed(store) == _untimed(_store(whole))
    for a, b in zip(read_checkpoint(run / CHECKPOINT)["model"]["tensors"],
                    read_checkpoint(whole / CHECKPOINT)["model"]["tensors"]):
        assert torch.equal(a, b)
    assert json.loads((run / SUMMARY).read_text())["status"] == "finished"


@pytest.mark.parametrize("patch", [KILL_BETWEEN_METRICS_AND_CHECKPOINT, KILL_WHILE_REPLACING_THE_CHECKPOINT,
                                   KILL_RIGHT_AFTER_A_CHECKPOINT, _kill_after_step(STEPS_PER_EPOCH + 4)],
                         ids=["between metrics and checkpoint", "while replacing the checkpoint",
                              "right after a checkpoint", "mid-epoch"])
def test_a_run_killed_at_any_instant_resumes_exactly_without_duplicates(tmp_path, whole, patch):
    run = tmp_path / "runs" / "r"
    child = _hil(tmp_path, ["train", *FLAGS, "--run-dir", str(run)], patch)
    assert child.wait(timeout=600) == -signal.SIGKILL, child.communicate()[1]
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    _assert_equals_the_whole_run(run, whole)


def test_a_fresh_start_in_a_folder_that_never_reached_a_checkpoint_starts_clean(tmp_path, whole):
    run = tmp_path / "runs" / "r"
    child = _hil(tmp_path, ["train", *FLAGS, "--run-dir", str(run)], _kill_after_step(3))
    assert child.wait(timeout=600) == -signal.SIGKILL, child.communicate()[1]
    assert not (run / CHECKPOINT).exists() and len(_store(run)) == 3 * 2
    assert main(["train", *FLAGS, "--run-dir", str(run)]) == 0
    _assert_equals_the_whole_run(run, whole)


def _wait_for(path: Path, child: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while not (path.exists() and path.read_text().strip()):
        assert child.poll() is None and time.monotonic() < deadline, child.communicate()[1]
        time.sleep(0.05)


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_at_a_step_boundary_with_a_final_checkpoint(tmp_path, signum, status):
    run = tmp_path / "runs" / "r"
    child = _hil(tmp_path, ["train", *FLAGS, "--epochs", "1000", "--run-dir", str(run)])
    _wait_for(run / METRICS, child)
    child.send_signal(signum)
    _, err = child.communicate(timeout=300)
    assert child.returncode == status, err
    assert "Traceback" not in err and signal.Signals(signum).name in err and f"exit status {status}" in err
    summary = json.loads((run / SUMMARY).read_text())
    state = read_checkpoint(run / CHECKPOINT)
    assert summary["status"] == "stopped" and (summary["epochs"], summary["train_steps"]) == \
        (state["epoch"], state["train_steps"])
    assert main(["train", "--resume", str(run), "--epochs", str(state["epoch"] + 1), "--no-progress"]) == 0
    assert [r["epoch"] for r in _rows(run)] == list(range(1, state["epoch"] + 2))
    store = _store(run)
    assert len({(step, name) for step, _, name, _ in store}) == len(store)


@pytest.mark.parametrize("where", [("hil.session", "hil.session", "load_dataset"),
                                   ("hil.rules.mf_dd", "hil.rules.mf_dd.MonoForwardDD", "calibrate")],
                         ids=["loading data", "calibrating"])
@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_start_up_leaves_no_traceback_and_no_folder(tmp_path, where, signum, status):
    child = _hil(tmp_path, ["train", *FLAGS], _signal_during(*where, signum))
    _, err = child.communicate(timeout=300)
    assert child.returncode == status, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hil: ") and signal.Signals(signum).name in lines[0], err
    assert not list(tmp_path.glob("runs/*"))
