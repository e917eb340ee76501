"""README documents every config field, CLI flag and simulator option."""

from pathlib import Path

from hil.cli import TRAIN_FLAGS
from hil.config import TrainConfig
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
