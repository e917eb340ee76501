import argparse
import json
import subprocess
import sys

import pytest

from hil.cli import _widths, main

REQUIRED = {"rule", "dataset", "device", "epochs", "directions", "test_accuracy",
            "test_accuracy_final_layer", "test_accuracy_cumulative", "device_queries",
            "queries_per_step", "train_seconds", "run_dir"}


def test_console_script_trains_and_prints_json_last(tmp_path):
    proc = subprocess.run(
        ["hil", "train", "--epochs", "2", "--json", "--no-progress", "--run-dir", str(tmp_path / "r")],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    )
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert REQUIRED <= summary.keys()
    assert summary["rule"] == "mf-dd" and summary["estimators"] == ["activity", "activity"]
    assert summary["queries_per_step"] == 6  # a base forward and a bias pair per layer
    assert "queries per layer per step" in proc.stderr


def test_resume_extends_a_finished_run(tmp_path, capsys):
    run = str(tmp_path / "r")
    assert main(["train", "--epochs", "1", "--json", "--no-progress", "--run-dir", run]) == 0
    assert main(["train", "--resume", run, "--epochs", "2", "--json", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["epochs"] == 2


def test_widths_take_an_empty_list_but_no_empty_entry():
    assert _widths("") == [] and _widths("64,10") == [64, 10]
    with pytest.raises(argparse.ArgumentTypeError, match="'64,,10'"):
        _widths("64,,10")


def test_an_empty_hidden_list_with_conv_layers_trains_a_conv_only_network(tmp_path, capsys):
    assert main(["train", "--hidden", "", "--conv", "8c3p2,16c3", "--epochs", "4", "--batch-size", "32",
                 "--json", "--no-progress", "--run-dir", str(tmp_path / "r")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["device"].endswith("layers=64&conv=8c3p2,16c3")
    assert summary["test_accuracy"] >= 0.85


@pytest.mark.parametrize("argv, needle", [
    (["train", "--epochs", "0"], "'epochs'"),
    (["train", "--rule", "magic"], "'rule'"),
    (["train", "--hidden", ""], "conv-only"),
    (["train", "--device", "sim://crossbar?layers=3,2"], "64 features"),
    (["train", "--device", "nope://x"], "unknown device scheme"),
    (["train", "--dataset", "mnist", "--data-dir", "/nonexistent"], "--data-dir"),
    (["train", "--resume", "/nonexistent"], "no checkpoint"),
])
def test_bad_input_is_one_line_naming_the_problem(tmp_path, monkeypatch, capsys, argv, needle):
    monkeypatch.chdir(tmp_path)
    assert main(argv + ["--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hil: error:") and needle in err and "\n" not in err
    assert not list(tmp_path.glob("runs/*"))  # a refused run leaves no folder behind


def test_help_explains_the_flags():
    out = subprocess.run([sys.executable, "-m", "hil.cli", "train", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for flag in ("--device", "--dataset", "--rule", "--directions", "--combine", "--resume", "--json"):
        assert flag in out


def test_train_against_hil_emulate_on_a_pty(tmp_path):
    link = tmp_path / "ttyHIL"
    emulator = subprocess.Popen(
        ["hil", "emulate", "--pty", "--layers", "64,32,10", "--link", str(link), "--drop", "0.01"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert emulator.stdout.readline().strip() == str(link)
        proc = subprocess.run(
            ["hil", "train", "--device", f"serial://{link}?timeout=0.3", "--epochs", "1", "--json",
             "--no-progress", "--run-dir", str(tmp_path / "r")],
            capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        assert summary["device_identity"] == "hil simulated crossbar 64x32x10 (ideal)"
        assert summary["test_accuracy"] > 0.3
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)


def test_devices_lists_ports_and_says_what_it_lacks(capsys):
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("serial ports:") and "VISA resources:" in out


@pytest.mark.parametrize("argv, needle", [
    (["emulate", "--pty", "--preset", "nope"], "nope"),
    (["emulate", "--pty", "--drop", "2"], "--drop"),
    (["emulate", "--pty", "--layers", "64,10", "--conv", "4c2"], "odd"),
])
def test_emulate_refuses_bad_options(argv, needle, capsys):
    assert main(argv) == 2
    assert needle in capsys.readouterr().err
