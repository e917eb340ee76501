"""Sweep files: the search space each field takes, and one-line refusals of bad files."""

from pathlib import Path

import pytest
import yaml
from ray import tune

from hil.cluster.spec import Sweep, load_sweep, trial_values
from hil.config import ConfigError


def write(tmp_path, spec):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec) if isinstance(spec, dict) else spec)
    return path


def test_the_example_file_loads_and_its_space_maps_to_ray_tune():
    sweep = load_sweep(Path(__file__).parents[3] / "examples" / "sweep.yaml")
    domains = {name: values.domain() for name, values in sweep.space.items()}
    assert domains["seed"] == tune.grid_search([0, 1])
    assert domains["rule_options.estimator"] == tune.grid_search(["activity", "weight"])
    lr = domains["lr"]
    assert 0.001 <= lr.lower and lr.upper <= 0.03 and "LogUniform" in type(lr.get_sampler()).__name__
    assert sweep.direction == "max" and sweep.asha.grace_period == 2


def test_dotted_names_go_into_their_section_over_the_base():
    values = trial_values({"lr": 1, "rule_options": {"directions": 2}}, {"rule_options.estimator": "weight", "lr": 3})
    assert values == {"lr": 3, "rule_options": {"directions": 2, "estimator": "weight"}}


def test_a_loss_metric_is_minimised():
    assert Sweep(space={"lr": {"grid": [0.1]}}, metric="val_loss").direction == "min"


@pytest.mark.parametrize("spec, needle", [
    ({"space": {"lr": {"grid": [0.01]}}, "metric": "test_accuracy"}, "test set"),
    ({"space": {"lr": {"grid": [0.01]}}, "metric": "accuracy"}, "metric"),
    ({"space": {"lr": {"grid": [0.01], "choice": [1]}}}, "exactly one"),
    ({"space": {"lr": {"loguniform": [0, 1]}}}, "above 0"),
    ({"space": {"lr": {"uniform": [2, 1]}}}, "low < high"),
    ({"space": {"lr": {"grid": [0.01]}}, "base": {"validation": 0}}, "validation split"),
    ({"space": {"lrr": {"grid": [0.01]}}}, "lrr"),
    ({"space": {"rule_options.directons": {"grid": [2]}}}, "directons"),
    ({"space": {"lr": {"grid": [-1]}}}, "lr"),
    ({"space": {}}, "space"),
    ({"space": {"lr": {"grid": [0.01]}}, "device": "toaster"}, "device"),
    ("- a list", "mapping"),
    ("base: [", "YAML"),
])
def test_bad_sweep_files_are_refused_in_one_line_naming_the_problem(tmp_path, spec, needle):
    with pytest.raises(ConfigError) as err:
        load_sweep(write(tmp_path, spec))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_sweep(tmp_path / "nope.yaml")
