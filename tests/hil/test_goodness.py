"""The two local objectives: softmax through M, and FFzero's hinge on cosine to fixed prototypes."""

import pytest
import torch

from hil.config import ConfigError, build_config
from hil.goodness import NORM_FLOOR, PrototypeObjective, SoftmaxObjective, simplex_prototypes
from hil.model import MonoForward
from simulators.registry import open_sim


def test_simplex_prototypes_are_unit_vectors_at_equal_angles():
    protos = simplex_prototypes(10, 64, torch.Generator().manual_seed(0))
    cosines = protos @ protos.T
    torch.testing.assert_close(cosines.diagonal(), torch.ones(10))
    off = cosines[~torch.eye(10, dtype=torch.bool)]
    torch.testing.assert_close(off, torch.full_like(off, -1 / 9), atol=1e-6, rtol=0)
    narrow = simplex_prototypes(10, 4, torch.Generator().manual_seed(0))
    torch.testing.assert_close(narrow.norm(dim=1), torch.ones(10))


def test_prototype_loss_is_the_mean_hinge_over_wrong_classes():
    gen = torch.Generator().manual_seed(1)
    protos = simplex_prototypes(4, 6, gen)
    feat = torch.randn(2, 5, 6, generator=gen)
    y = torch.tensor([0, 3, 1, 2, 2])
    objective = PrototypeObjective(protos, margin=0.3)
    got = objective.loss(feat, y)
    for s in range(2):
        total = 0.0
        for b in range(5):
            f = feat[s, b]
            cos = [float(f @ p) / (float(f @ f) + NORM_FLOOR**2) ** 0.5 for p in protos]
            total += sum(max(0.0, 0.3 - cos[y[b]] + cos[c]) for c in range(4) if c != y[b]) / 3
        assert got[s].item() == pytest.approx(total / 5, rel=1e-5)


def test_features_along_their_prototype_cost_nothing_and_the_opposite_costs_most():
    protos = simplex_prototypes(3, 8, torch.Generator().manual_seed(2))
    objective = PrototypeObjective(protos, margin=0.3)
    y = torch.tensor([0, 1, 2])
    assert objective.loss(5 * protos, y).item() == 0.0
    assert objective.loss(-5 * protos, y).item() > 1.0
    assert (objective.goodness(5 * protos).argmax(-1) == y).all()


@pytest.mark.parametrize("chunks", [12, 4])  # one feature per chunk (dense units), three (conv channels)
def test_spliced_prototype_losses_equal_replacing_one_chunk_at_a_time(chunks):
    gen = torch.Generator().manual_seed(3)
    base = torch.rand(7, 12, generator=gen)
    base[2] = 0.0  # a sample whose features are all off: the norm floor keeps its goodness continuous
    perturbed = base + 0.01 * torch.randn(3, 7, 12, generator=gen)
    y = torch.randint(0, 5, (7,), generator=gen)
    objective = PrototypeObjective(simplex_prototypes(5, 12, gen), margin=0.3)
    per = 12 // chunks
    want = torch.empty(3, chunks)
    for s in range(3):
        for k in range(chunks):
            feat = base.clone()
            feat[:, k * per:(k + 1) * per] = perturbed[s, :, k * per:(k + 1) * per]
            want[s, k] = objective.loss(feat, y)
    torch.testing.assert_close(objective.spliced(base, perturbed, y, chunks), want, atol=1e-6, rtol=1e-5)


def test_a_prototype_model_keeps_its_prototypes_fixed():
    info = open_sim("sim://crossbar?layers=64,16,8").info()
    model = MonoForward.initialise(info, classes=10, seed=0, goodness="prototype")
    assert not model.trains_projection and all(not p.requires_grad for p in model.projections)
    assert len(model.tensors()) == 4  # weights and biases only
    assert isinstance(model.objective(1), PrototypeObjective)
    softmax = MonoForward.initialise(info, classes=10, seed=0)
    assert isinstance(softmax.objective(1), SoftmaxObjective) and len(softmax.tensors()) == 6


def test_feedback_alignment_refuses_the_prototype_goodness():
    with pytest.raises(ConfigError, match="softmax readout"):
        build_config({"rule": "dfa", "goodness": "prototype"})
