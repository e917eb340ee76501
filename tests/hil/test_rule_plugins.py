"""A learning rule added as a plug-in: an installed package's ``hil.rules`` entry point, no edit to hil."""

import json
import textwrap

import pytest

from hil import rules
from hil.cli import main
from hil.runs import RunFolder

TOY_RULE = '''
    """A toy rule: the device layers stay as initialised (random features); only each readout M learns."""

    import torch
    from pydantic import Field

    from hil.estimator import exact_projection_grad
    from hil.rules import Rule, RuleOptions, StepOutput


    class ToyOptions(RuleOptions):
        readout_gain: float = Field(1.0, gt=0, description="scale of the readouts' gradient")


    class ToyRule(Rule):
        name = "toy"
        Options = ToyOptions
        options: ToyOptions

        def step(self, x: torch.Tensor, y: torch.Tensor, step: int) -> StepOutput:
            acts = self.device.forward(self.model.device_params(), x)
            losses = []
            for i, a in enumerate(acts):
                feat = self.model.features(i, a)
                m = self.model.projections[i].detach()
                self.model.projections[i].grad = self.options.readout_gain * exact_projection_grad(feat, m, y)
                losses.append(self.model.layer_loss(i, a, y).item())
            return StepOutput(sum(losses) / len(losses), acts)
'''


@pytest.fixture
def toy_installed(tmp_path, monkeypatch):
    """``toy_rule``, installed in a folder on sys.path with a dist-info that registers it as rule ``toy``."""
    site = tmp_path / "site"
    (site / "toy_rule-0.1.dist-info").mkdir(parents=True)
    (site / "toy_rule-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-rule\nVersion: 0.1\n")
    (site / "toy_rule-0.1.dist-info" / "entry_points.txt").write_text("[hil.rules]\ntoy = toy_rule:ToyRule\n")
    (site / "toy_rule.py").write_text(textwrap.dedent(TOY_RULE))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(rules, "_rules", dict(rules._rules))  # the toy is forgotten after the test
    return site


def test_a_rule_installed_as_a_plug_in_trains_from_the_cli_with_its_own_flags(tmp_path, toy_installed, capsys):
    assert "toy" in rules.rule_names()
    run = tmp_path / "run"
    assert main(["train", "--rule", "toy", "--readout-gain", "2", "--hidden", "32", "--epochs", "2",
                 "--threads", "1", "--json", "--no-progress", "--run-dir", str(run)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["rule"] == "toy" and summary["readout_gain"] == 2.0  # the summary asks the rule
    assert summary["test_accuracy"] > 0.5  # readouts trained on random features
    config = RunFolder(run).config()
    assert config.rule_options.readout_gain == 2.0 and "directions" not in config.rule_options.model_dump()


def test_a_plug_in_rule_refuses_another_rules_options(tmp_path, toy_installed, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--rule", "toy", "--directions", "4", "--no-progress"]) == 2
    assert "rule 'toy' has no option 'directions' (its options: readout_gain)" in capsys.readouterr().err
    assert main(["train", "--rule", "nope", "--no-progress"]) == 2
    assert "known rules: bp, dfa, mdfa, mf-ad, mf-dd, toy" in capsys.readouterr().err
