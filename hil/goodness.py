"""What a layer's features score for each class, and the local loss each layer minimises.

Two objectives, one per layer:

- ``softmax`` (Mono-Forward): goodness ``f M^T`` through a trained projection M, softmax
  cross-entropy.
- ``prototype`` (FFzero): goodness is the cosine similarity of ``f`` to fixed class prototypes,
  the vertices of a regular simplex rotated at random into the feature space, and the loss is a
  hinge, ``mean over wrong classes c of max(0, margin - (g_y - g_c))``. Nothing on the host is
  trained; the layer alone must separate the classes by angle.

Both give the loss of every chunk of a layer with only that chunk's features perturbed
(``spliced``), so a zeroth-order estimate needs 2P queries per layer either way, and each sample's
loss change with only one output unit moved (``unit_changes``), for the activity-space estimate.
"""

from typing import Literal

import torch
import torch.nn.functional as F

from hil.estimator import Readout, goodness_loss, sample_loss_changes, spliced_losses

Goodness = Literal["softmax", "prototype"]
NORM_FLOOR = 0.1


class SoftmaxObjective:
    """Mono-Forward's local loss: cross-entropy of the goodness ``f M^T``."""

    def __init__(self, projection: torch.Tensor) -> None:
        self.projection = projection

    def goodness(self, feat: torch.Tensor) -> torch.Tensor:
        return feat @ self.projection.T

    def loss(self, feat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean over the batch, per leading index of ``feat`` (..., B, F)."""
        return goodness_loss(self.goodness(feat), y)

    def spliced(self, base: torch.Tensor, perturbed: torch.Tensor, y: torch.Tensor, chunks: int) -> torch.Tensor:
        """(S, chunks) losses with one chunk's features at a time taken from ``perturbed`` (S, B, F)."""
        return spliced_losses(base, perturbed, self.projection, y, chunks)

    def unit_changes(self, base: torch.Tensor, shift: torch.Tensor, readout: Readout | None,
                     y: torch.Tensor) -> torch.Tensor:
        """(S, B, K): each sample's loss change with only output unit k moved by ``shift`` (S, B, K).

        Unit k moves the features (B, F) ``base`` by ``shift`` times column k of the readout
        (None: unit k is feature k), so the goodness by ``shift`` times column k of ``M J``.
        """
        weights = self.projection if readout is None else readout.pull(self.projection)
        return sample_loss_changes(self.goodness(base), shift, weights, y)


class PrototypeObjective:
    """FFzero's local loss: a hinge on the cosine similarity to fixed unit prototypes (C, F)."""

    def __init__(self, prototypes: torch.Tensor, margin: float) -> None:
        self.prototypes = prototypes
        self.margin = margin

    def goodness(self, feat: torch.Tensor) -> torch.Tensor:
        norm = feat.square().sum(-1, keepdim=True).add_(NORM_FLOOR**2).sqrt_()
        return (feat @ self.prototypes.T) / norm

    def loss(self, feat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean over the batch, per leading index of ``feat`` (..., B, F)."""
        return self._hinge(self.goodness(feat), y).mean(-1)

    def spliced(self, base: torch.Tensor, perturbed: torch.Tensor, y: torch.Tensor, chunks: int) -> torch.Tensor:
        """(S, chunks) losses with one chunk's features at a time taken from ``perturbed`` (S, B, F).

        Moving chunk k's features by ``d`` moves every dot product by ``d . p_c[k]`` and the
        squared norm by ``d . (2 f_k + d)``, so no (S, K, B, F) tensor is ever formed.
        """
        batch, width = base.shape
        per = width // chunks
        protos = self.prototypes.reshape(len(self.prototypes), chunks, per)
        shift = (perturbed - base).reshape(len(perturbed), batch, chunks, per)
        dots = base @ self.prototypes.T  # (B, C)
        moved = torch.einsum("sbkj,ckj->sbkc", shift, protos).add_(dots[None, :, None, :])
        norms = (2 * base.reshape(batch, chunks, per) + shift).mul_(shift).sum(-1)  # (S, B, K)
        norms.add_(base.square().sum(-1)[None, :, None] + NORM_FLOOR**2).sqrt_()
        cosine = moved.div_(norms[..., None])
        return self._hinge(cosine, y[:, None]).mean(1)

    def unit_changes(self, base: torch.Tensor, shift: torch.Tensor, readout: Readout | None,
                     y: torch.Tensor) -> torch.Tensor:
        """(S, B, K): each sample's loss change with only output unit k moved by ``shift`` (S, B, K).

        Moving the features by ``s r`` (r: the readout's column k, or feature k) moves every dot
        product by ``s r . p_c`` and the squared norm by ``2 s f . r + s^2 |r|^2``. In float64: the
        change is a difference of two hinge losses of order 1.
        """
        base, shift, protos = base.double(), shift.double(), self.prototypes.double()
        if readout is None:
            along, base_r, r2 = protos, base, torch.ones(base.shape[-1], dtype=base.dtype, device=base.device)
        else:
            along, base_r, r2 = readout.pull(protos), readout.pull(base), readout.column_norms2().double()
        dots = base @ protos.T  # (B, C)
        moved = shift.unsqueeze(-1) * along.T + dots[:, None, :]  # (S, B, K, C)
        norm2 = base.square().sum(-1, keepdim=True) + NORM_FLOOR**2
        norms = (2 * base_r + shift * r2).mul_(shift).add_(norm2)
        losses = self._hinge(moved.div_(norms.sqrt_().unsqueeze(-1)), y[:, None])
        return (losses - self._hinge(dots / norm2.sqrt(), y)[:, None]).to(self.prototypes.dtype)

    def _hinge(self, goodness: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample hinge of goodness (..., C) against labels broadcastable to goodness[..., 0]."""
        classes = goodness.shape[-1]
        target = goodness.gather(-1, y.expand(goodness.shape[:-1]).unsqueeze(-1))
        # the target's own term is max(0, margin) = margin; drop it
        return (torch.relu(goodness - target + self.margin).sum(-1) - self.margin) / (classes - 1)


def simplex_prototypes(classes: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """``classes`` unit vectors in ``width`` dimensions, pairwise cosine ``-1/(classes-1)``.

    The centred basis vectors of R^classes (a regular simplex) are rotated into the feature space
    by a random orthonormal basis. A space narrower than ``classes`` gets random unit vectors.
    """
    if width < classes:
        return F.normalize(torch.randn(classes, width, generator=generator), dim=-1)
    basis, _ = torch.linalg.qr(torch.randn(width, classes, generator=generator))
    simplex = torch.eye(classes) - 1 / classes
    return F.normalize(simplex, dim=-1) @ basis.T

