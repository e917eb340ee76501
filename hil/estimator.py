"""Zeroth-order gradient estimates from directional derivatives measured on the device.

For one layer, every chunk (one output unit: its weight row and bias) is perturbed along its own
direction in the same query, and the host splices each chunk's perturbed activation into the base
activations to get that chunk's loss. A chunk changes only its own unit, so this equals perturbing
chunks one at a time, for 2P queries per layer instead of 2P per chunk.
"""

from typing import Literal

import torch
import torch.nn.functional as F

from devices.directions import directions
from devices.info import LayerSpec
from devices.interface import Device, LayerParams, Perturbation, split_chunks

Combine = Literal["mean", "projection"]


def combine(dd: torch.Tensor, v: torch.Tensor, how: Combine) -> torch.Tensor:
    """Gradient estimate per chunk from derivatives ``dd`` (P, K) along directions ``v`` (P, K, n).

    ``mean`` averages ``dd_p v_p``; ``projection`` returns the orthogonal projection of the
    gradient onto the span of the P directions, solving the P x P Gram system in float64.
    """
    if how == "mean":
        out = v[0] * dd[0, :, None]
        for p in range(1, len(v)):
            out.addcmul_(v[p], dd[p, :, None])
        return out.div_(len(v))
    if how == "projection":
        v64 = v.to(torch.float64)
        gram = torch.einsum("pkn,qkn->kpq", v64, v64)
        coef = torch.linalg.pinv(gram, hermitian=True) @ dd.T.to(torch.float64).unsqueeze(-1)
        return torch.einsum("kp,pkn->kn", coef.squeeze(-1), v64).to(v.dtype)
    raise ValueError(f"unknown combination {how!r}; choose mean or projection")


def goodness_loss(goodness: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean softmax cross-entropy over the batch (last two dims: batch, classes)."""
    flat = goodness.reshape(-1, goodness.shape[-1])
    return F.cross_entropy(flat, y.repeat(flat.shape[0] // len(y)), reduction="none").reshape(
        goodness.shape[:-1]
    ).mean(-1)


def chunk_losses(
    base_goodness: torch.Tensor, shift: torch.Tensor, weights: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """Loss of every (setting, chunk) whose goodness moves by ``shift[s,b,k] * weights[:, k]``.

    ``base_goodness`` is (B, C), ``shift`` (S, B, K), ``weights`` (C, K); returns (S, K).
    The log-sum-exp is accumulated class by class on (B, K) slabs, offset by the base
    goodness' maximum; a shift large enough to overflow that falls back to the fully stable form.
    """
    top = base_goodness.amax(1, keepdim=True)
    scale = (base_goodness - top).exp()
    total = torch.zeros_like(shift)
    term = torch.empty_like(shift[0])
    for s in range(shift.shape[0]):  # one (B, K) slab at a time stays in cache
        for c in range(base_goodness.shape[1]):
            torch.mul(shift[s], weights[c], out=term)
            total[s].addcmul_(term.exp_(), scale[:, c, None])
    # mean over the batch of the target goodness: base part plus shift times the target's weight
    target = base_goodness.gather(1, y[:, None]).mean() + (shift * weights[y]).mean(1)
    losses = total.log_().mean(1) + top.mean() - target
    if not torch.isfinite(losses).all():
        logits = base_goodness.T[:, None, :, None] + weights[:, None, None, :] * shift
        losses = torch.logsumexp(logits, 0).mean(1) - target
    return losses


def spliced_losses(
    base_act: torch.Tensor, perturbed: torch.Tensor, projection: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """Loss of every chunk with only that chunk's unit taken from ``perturbed``.

    ``base_act`` is (B, K), ``perturbed`` (S, B, K); returns (S, K). Replacing unit k moves the
    goodness by ``(perturbed_k - base_k) M[:, k]``.
    """
    return chunk_losses(base_act @ projection.T, perturbed - base_act, projection, y)


def estimate_projection(
    act: torch.Tensor,
    projection: torch.Tensor,
    y: torch.Tensor,
    seeds: tuple[int, ...],
    eps: float,
    distribution: str = "rademacher",
    how: Combine = "mean",
) -> torch.Tensor:
    """DD estimate of the gradient of the local loss for the host projection M (no queries).

    Chunks are rows of M: row c moves only class c's goodness, by ``eps * v_c . a``.
    """
    classes, width = projection.shape
    v = directions(seeds, classes, width, distribution, device=act.device)  # type: ignore[arg-type]
    shift = eps * torch.einsum("pcn,bn->pbc", v, act)
    eye = torch.eye(classes, dtype=act.dtype, device=act.device)
    losses = chunk_losses(act @ projection.T, torch.cat([shift, -shift]), eye, y)
    n_dir = len(seeds)
    return combine((losses[:n_dir] - losses[n_dir:]) / (2 * eps), v, how)


def exact_projection_grad(act: torch.Tensor, projection: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Closed-form gradient of the local loss for M: ``(softmax(G) - onehot(y))^T a / B``."""
    probs = torch.softmax(act @ projection.T, -1)
    probs[torch.arange(len(y)), y] -= 1
    return probs.T @ act / len(y)


def estimate_layer(
    device: Device,
    layer: int,
    spec: LayerSpec,
    params: LayerParams,
    layer_input: torch.Tensor,
    base_act: torch.Tensor,
    projection: torch.Tensor,
    y: torch.Tensor,
    seeds: tuple[int, ...],
    eps: float,
    distribution: str = "rademacher",
    how: Combine = "mean",
    splice: bool = True,
) -> LayerParams:
    """Estimate the gradient of layer ``layer``'s local loss for every parameter array.

    With ``splice`` (and a spliceable layer) this costs 2P queries; otherwise every chunk is
    queried on its own, 2P per chunk.
    """
    pert = Perturbation(seeds, eps, distribution)  # type: ignore[arg-type]
    n_dir = len(seeds)
    if splice and spec.spliceable:
        plus, minus = device.perturbed_pairs(layer, params, layer_input, pert)
        dd = (spliced_losses(base_act, plus, projection, y)
              - spliced_losses(base_act, minus, projection, y)) / (2 * eps)
    else:
        dd = torch.empty(n_dir, spec.n_chunks(), device=base_act.device)
        for k in range(spec.n_chunks()):
            chunk = Perturbation(seeds, eps, distribution, chunk=k)  # type: ignore[arg-type]
            plus, minus = device.perturbed_pairs(layer, params, layer_input, chunk)
            dd[:, k] = (goodness_loss(plus @ projection.T, y) - goodness_loss(minus @ projection.T, y)) / (2 * eps)
    v = pert.vectors(spec, base_act.device)
    return split_chunks(spec, combine(dd, v, how))
