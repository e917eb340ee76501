import pytest

from hil.config import ConfigError, TrainConfig, build_config, dump_config, load_config


@pytest.mark.parametrize("values, field", [
    ({"epochs": 0}, "epochs"),
    ({"rule": "sgd"}, "rule"),
    ({"directions": -1}, "directions"),
    ({"combine": "median"}, "combine"),
    ({"hidden": []}, "hidden"),
    ({"learning_rate": 0.1}, "learning_rate"),
    ({"lr": "fast"}, "lr"),
])
def test_bad_values_name_the_field(values, field):
    with pytest.raises(ConfigError, match=f"'{field}'") as err:
        build_config(values)
    assert "\n" not in str(err.value)


def test_no_hidden_layers_needs_conv_layers():
    assert build_config({"hidden": [], "conv": "8c3p2"}).hidden == []
    with pytest.raises(ConfigError, match="'hidden' is empty.*conv-only"):
        build_config({"hidden": []})


def test_yaml_round_trip_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    dump_config(TrainConfig(epochs=3, directions=8), path)
    config = load_config(path, {"epochs": 5})
    assert (config.epochs, config.directions) == (5, 8)


@pytest.mark.parametrize("text, match", [
    ("epochs: [1, 2", "not valid YAML"),
    ("- 1\n- 2\n", "mapping"),
    ("epochs: 2\ncolour: red\n", "'colour'"),
])
def test_bad_files_say_why(tmp_path, text, match):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_directions_take_one_p_or_a_budget_per_layer():
    assert build_config({"directions": "8,4"}).directions == [8, 4]
    assert build_config({"directions": "6"}).directions == 6
    assert build_config({"directions": [2, 1]}).directions_per_layer(2) == [2, 1]
    assert build_config({"directions": 3}).directions_per_layer(3) == [3, 3, 3]
    with pytest.raises(ConfigError, match="2 values for a device with 3 layers"):
        build_config({"directions": [2, 1]}).directions_per_layer(3)
    for bad, needle in (("0", "at least 1"), ("4,x", "separated by commas")):
        with pytest.raises(ConfigError, match=needle):
            build_config({"directions": bad})
