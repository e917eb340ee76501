"""README documents every config field, CLI flag and simulator option."""

import json
import re
from pathlib import Path

from hil.cli import TRAIN_FLAGS, rule_option_flags
from hil.config import TrainConfig, build_config
from hil.data import DatasetError
from hil.runs import RunFolder
from hil.trainer import Trainer
from simulators import CrossbarOptions, PhotonicOptions

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_every_config_field_is_documented():
    missing = [f for f in TrainConfig.model_fields if f"| `{f}` |" not in README]
    assert not missing


def test_every_cli_flag_maps_to_a_documented_field():
    assert all(name.replace("-", "_") in TrainConfig.model_fields for name, _, _ in TRAIN_FLAGS)


def test_simulator_options_are_documented():
    for options in (CrossbarOptions, PhotonicOptions):
        assert all(f"`{name}`" in README for name in options.model_fields)


def test_readme_commands_are_the_ci_commands():
    ci = (Path(__file__).parents[1] / ".ci" / "run").read_text()
    assert "python3 -m pytest" in README and "python3 -m pytest" in ci
    assert "pip install torch==2.13.0" in README and "torch==2.13.0" in ci


def test_serial_options_and_emulator_faults_are_documented():
    from devices.serial_device import SerialOptions
    from devices.visa_device import VisaOptions
    from hil.cli import FAULT_FLAGS

    assert all(f"| `{name}` |" in README for name in SerialOptions.model_fields)
    assert all(f"`{name}`" in README for name in VisaOptions.model_fields)
    assert all(f"--{name}" in README for name, _, _ in FAULT_FLAGS)


def test_readme_installs_the_debian_packages_ci_installs():
    ci = (Path(__file__).parents[1] / ".ci" / "run").read_text()
    (line,) = [row for row in ci.splitlines() if row.startswith("packages=")]
    test_command = next(row for row in README.splitlines() if row.startswith("apt-get install") and "pytest" in row)
    assert all(package in test_command for package in line.split("=", 1)[1].strip('"').split())


def test_every_config_field_has_a_flag():
    assert {name.replace("-", "_") for name, _, _ in TRAIN_FLAGS} == set(TrainConfig.model_fields) - {"rule_options"}


def test_every_rule_option_is_documented():
    assert all(f"| `{name}` |" in README for name in rule_option_flags())


def test_every_simulator_url_in_readme_trains_the_default_job_in_minutes_or_says_why_not(tmp_path):
    urls = re.findall(r"^\| `(sim://[^`]*)` \|", README, re.MULTILINE)
    assert len(urls) >= 5
    for i, url in enumerate(urls):
        config = build_config({"device": url, "run_dir": tmp_path / str(i)})
        try:
            trainer = Trainer(config, RunFolder.create(config), progress=False)
        except DatasetError as err:
            assert "use a device whose first layer takes 64" in str(err)
            continue
        assert trainer.epoch_estimate < 15 * 60, url  # minutes, with room for a loaded machine


def test_readme_python_api_example_runs_as_written(tmp_path, monkeypatch):
    import numpy as np
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.data / 16).astype(np.float32)
    arrays = {"x_train": x[:300], "y_train": bunch.target[:300], "x_test": x[300:400], "y_test": bunch.target[300:400]}
    code = README.split("## Python API", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), arrays)  # noqa: S102 - the README's own example
    assert json.loads((tmp_path / "runs" / "notebook" / "summary.json").read_text())["epochs"] == 4
