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
    dump_config(TrainConfig(epochs=3, rule_options={"directions": 8, "eps": 0.05}), path)
    config = load_config(path, {"epochs": 5, "rule_options": {"eps": 0.02}})
    assert (config.epochs, config.rule_options.directions, config.rule_options.eps) == (5, 8, 0.02)


def test_old_flat_files_load_with_the_rule_options_in_their_section(tmp_path, caplog):
    path = tmp_path / "old.yaml"
    path.write_text("epochs: 2\ndirections: 4\nestimator: weight\neps: auto\n")
    config = load_config(path, {"rule_options": {"directions": 8}})
    assert (config.rule_options.directions, config.rule_options.estimator) == (8, "weight")
    assert "rule_options:\n  estimator: weight\n  directions: 4\n  eps: auto" in caplog.text  # the new form
    # a run folder of another rule stored mf-dd's defaults at the top level: they never applied to it
    assert build_config({"rule": "bp", "directions": 4, "m_update": "exact"}).rule_options.model_dump() == {}


def test_a_rule_takes_only_its_own_options():
    with pytest.raises(ConfigError, match="rule 'bp' has no option 'directions' \\(its options: none\\)"):
        build_config({"rule": "bp", "rule_options": {"directions": 4}})
    with pytest.raises(ConfigError, match="unknown rule 'sgd'; known rules: bp, dfa, mdfa, mf-ad, mf-dd"):
        build_config({"rule": "sgd"})


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
    assert build_config({"directions": "8,4"}).rule_options.directions == [8, 4]
    assert build_config({"directions": "6"}).rule_options.directions == 6
    assert build_config({"directions": [2, 1]}).rule_options.directions_per_layer(2) == [2, 1]
    assert build_config({"directions": 3}).rule_options.directions_per_layer(3) == [3, 3, 3]
    with pytest.raises(ConfigError, match="2 values for a device with 3 layers"):
        build_config({"directions": [2, 1]}).rule_options.directions_per_layer(3)
    for bad, needle in (("0", "at least 1"), ("4,x", "separated by commas")):
        with pytest.raises(ConfigError, match=needle):
            build_config({"directions": bad})
