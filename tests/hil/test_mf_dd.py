"""``mf-dd``'s direction budget shared out by loss."""

import pytest

from hil.config import build_config
from hil.rules.mf_dd import share_directions
from hil.runs import RunFolder
from hil.trainer import Trainer


@pytest.mark.parametrize("total, losses, want", [
    (8, [2.3, 0.4], [6, 2]),
    (12, [1.0, 1.0, 1.0], [4, 4, 4]),
    (3, [5.0, 0.0, 0.0], [1, 1, 1]),  # every layer keeps one
    (7, [0.0, 0.0], [4, 3]),  # no loss anywhere: equal shares, the spare one to the first layer
    (10, [0.1, 0.2, 0.7], [2, 2, 6]),
])
def test_directions_are_shared_in_proportion_to_loss(total, losses, want):
    assert share_directions(total, losses) == want


def test_too_few_directions_for_the_layers_are_refused():
    with pytest.raises(ValueError, match="each of 3 layers"):
        share_directions(2, [1.0, 1.0, 1.0])


def test_a_loss_budget_keeps_the_total_and_moves_directions_to_the_worse_layer(tmp_path):
    config = build_config({"run_dir": tmp_path / "run", "epochs": 1, "hidden": [32, 8], "directions": 3,
                           "budget": "loss", "batch_size": 64, "estimator": "weight"})
    trainer = Trainer(config, RunFolder.create(config), progress=False)
    summary = trainer.fit()
    assert summary["queries_per_step"] == 2 + 2 * 6
    losses = trainer.rule.running_loss
    assert sum(summary["directions_by_layer"]) == 6 and summary["directions_by_layer"] == share_directions(6, losses)
    assert summary["directions_by_layer"][losses.index(max(losses))] >= 3
    assert "shared by loss, 6 in all" in trainer.rule.summary()
