"""Zeroth-order gradient estimates from directional derivatives measured on the device.

Weight space (the poster's estimator, any device): for one layer, every chunk (one output unit:
its weight row and bias) is perturbed along its own direction in the same query, and the host
splices each chunk's perturbed activation into the base activations to get that chunk's loss. A
chunk changes only its own unit, so this equals perturbing chunks one at a time, for 2P queries
per layer instead of 2P per chunk.

Activity space (affine layers with a bias): one query pair moves every bias by +-eps, which moves
every unit's pre-activation by eps for every sample. Splicing each output into the base
activations per sample gives ``dL_b/dz[b, j]``, measured through the device's activation, ADC and
noise; the weight gradient is then ``gain * delta^T x / B`` from the layer input the host knows:
2 queries per layer, no random directions. A pooled conv layer's output mixes a window of
positions, so its derivative is per window and is applied to the window's mean patch.
"""

import math
from collections.abc import Callable
from typing import Literal, Protocol

import torch
import torch.nn.functional as F

from devices.directions import directions
from devices.info import LayerSpec
from devices.interface import Device, LayerParams, Perturbation, split_chunks

Combine = Literal["mean", "projection"]


class Objective(Protocol):
    """A layer's local loss on its features (see :mod:`hil.goodness`)."""

    def loss(self, feat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean loss over the batch, per leading index of ``feat`` (..., B, F)."""

    def spliced(self, base: torch.Tensor, perturbed: torch.Tensor, y: torch.Tensor, chunks: int) -> torch.Tensor:
        """(S, chunks) losses with only one chunk's features at a time taken from ``perturbed``."""

    def unit_changes(self, base: torch.Tensor, shift: torch.Tensor, readout: "Readout | None",
                     y: torch.Tensor) -> torch.Tensor:
        """(S, B, K): how each sample's loss changes when only output unit k moves, by ``shift``."""


class Readout(Protocol):
    """How a layer's outputs move what M sees: features are a fixed linear map ``J`` of the outputs."""

    def pull(self, t: torch.Tensor) -> torch.Tensor:
        """``t J`` for ``t`` (..., features): each output's share of a per-feature quantity."""

    def column_norms2(self) -> torch.Tensor:
        """(outputs,): the squared norm of each output's column of ``J``."""


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
    The log-sum-exp is offset by the base goodness' maximum; its sum over classes,
    ``sum_c scale[b,c] exp(shift * weights[c,k])``, comes from :func:`_class_sums`.
    """
    top = base_goodness.amax(1, keepdim=True)
    scale = (base_goodness - top).exp()
    # mean over the batch of the target goodness: base part plus shift times the target's weight
    target = base_goodness.gather(1, y[:, None]).mean() + (shift * weights[y]).mean(1)
    losses = _class_sums(scale, shift, weights).log_().mean(1) + top.mean() - target
    if not torch.isfinite(losses).all():
        logits = base_goodness.T[:, None, :, None] + weights[:, None, None, :] * shift
        losses = torch.logsumexp(logits, 0).mean(1) - target
    return losses


def sample_loss_changes(
    base_goodness: torch.Tensor, shift: torch.Tensor, weights: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """How much each sample's loss changes when only unit k moves its goodness by ``shift[s,b,k] * weights[:, k]``.

    ``base_goodness`` is (B, C), ``shift`` (S, B, K), ``weights`` (C, K); returns (S, B, K).
    Computed relative to the base, ``log1p(sum_c p_c expm1(shift * weights[c,k])) - shift * weights[y,k]``
    with ``p = softmax(base_goodness)``, so a change of 1e-6 keeps float32's digits instead of
    vanishing in the difference of two losses near 2.
    """
    probs = torch.softmax(base_goodness, -1)
    moved = _class_sums(probs, shift, weights, minus_one=True)
    if not torch.isfinite(moved.sum()):  # sum: one cheap reduction finds any inf or nan
        logits = base_goodness.T[:, None, :, None] + weights[:, None, None, :] * shift
        base = torch.logsumexp(base_goodness, -1)[:, None]
        return torch.logsumexp(logits, 0) - base - shift * weights[y]
    return moved.log1p_().sub_(shift * weights[y])


def series_order(reach: float, tolerance: float = 2.0**-24) -> int | None:
    """Terms of the exponential series needed for |x| <= ``reach`` to ``tolerance`` relative.

    The remainder after order J is below ``reach^(J+1) e^reach / (J+1)!`` of ``sum_c scale_c``
    and the sum itself is at least ``e^-reach`` of it. None when more than 16 terms are needed.
    """
    if reach > 4:  # beyond any 16-term series; also keeps exp() below overflow
        return None
    for order in range(17):
        if reach ** (order + 1) * math.exp(2 * reach) / math.factorial(order + 1) <= tolerance:
            return order
    return None


def _class_sums(scale: torch.Tensor, shift: torch.Tensor, weights: torch.Tensor,
                minus_one: bool = False) -> torch.Tensor:
    """``sum_c scale[b,c] exp(shift[s,b,k] * weights[c,k])``, shaped like ``shift``.

    With ``minus_one`` each exponential is ``expm1`` instead, which keeps small sums exact.
    Shifts are small (perturbation-sized), so the exponential's power series, summed over the
    classes first (``coef_j = scale @ weights^j / j!``, one small product per order), is exact
    to float32 rounding with a few terms and costs one Horner step per order per (B, K) slab
    instead of an exp per class. Larger shifts sum the exponentials class by class.
    """
    reach = max(-float(shift.min()), float(shift.max())) * float(weights.abs().amax())
    # without its constant term the sum is of the order of ``reach``: the series must be exact relative to that
    order = series_order(reach, 2.0**-24 * (min(reach, 1.0) if minus_one else 1.0))
    if order is None:
        total = torch.zeros_like(shift)
        term = torch.empty_like(shift[0])
        for s in range(shift.shape[0]):  # one (B, K) slab at a time stays in cache
            for c in range(weights.shape[0]):
                torch.mul(shift[s], weights[c], out=term)
                total[s].addcmul_(term.expm1_() if minus_one else term.exp_(), scale[:, c, None])
        return total
    first = 1 if minus_one else 0
    order = max(order, first)
    coef = [scale @ weights.pow(j).div_(math.factorial(j)) for j in range(order + 1)]
    total = torch.empty_like(shift)
    spare = torch.empty_like(shift[0])
    for s in range(shift.shape[0]):
        # Horner: acc = coef_J; acc = coef_j + acc * shift down to j = first, ending in total[s]
        acc, nxt = (total[s], spare) if (order - first) % 2 == 0 else (spare, total[s])
        acc.copy_(coef[order])
        for j in range(order - 1, first - 1, -1):
            torch.addcmul(coef[j], acc, shift[s], out=nxt)
            acc, nxt = nxt, acc
        if minus_one:  # the series without its constant term: shift * (coef_1 + ...)
            acc.mul_(shift[s])
    return total


def spliced_losses(
    base_feat: torch.Tensor, perturbed: torch.Tensor, projection: torch.Tensor, y: torch.Tensor, chunks: int
) -> torch.Tensor:
    """Loss of every chunk with only that chunk's features taken from ``perturbed``.

    ``base_feat`` is (B, F), ``perturbed`` (S, B, F), with each of the ``chunks`` chunks owning
    F / chunks consecutive features; returns (S, chunks). Replacing chunk k's features moves the
    goodness by ``(perturbed_k - base_k) M[:, k]^T``: a scalar times a column of M when a chunk
    owns one feature (a dense unit), a small product per chunk otherwise (a conv channel).
    """
    goodness = base_feat @ projection.T
    shift = perturbed - base_feat
    per = base_feat.shape[-1] // chunks
    if per == 1:
        return chunk_losses(goodness, shift, projection, y)
    moved = torch.einsum("sbkj,ckj->sbkc", shift.reshape(*shift.shape[:2], chunks, per),
                         projection.reshape(len(projection), chunks, per))  # (S, B, K, C)
    logits = goodness[None, :, None, :] + moved
    target = logits.gather(-1, y[None, :, None, None].expand(*moved.shape[:3], 1)).squeeze(-1)
    return (torch.logsumexp(logits, -1) - target).mean(1)


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
    objective: Objective,
    y: torch.Tensor,
    seeds: tuple[int, ...],
    eps: float,
    distribution: str = "rademacher",
    how: Combine = "mean",
    splice: bool = True,
    features: Callable[[torch.Tensor], torch.Tensor] = lambda a: a,
) -> LayerParams:
    """Estimate the gradient of layer ``layer``'s local loss (``objective``) for every parameter array.

    ``features`` maps activations to what M sees (the model's per-layer features). With
    ``splice`` (and a spliceable layer) this costs 2P queries; otherwise every chunk is
    queried on its own, 2P per chunk.
    """
    pert = Perturbation(seeds, eps, distribution)  # type: ignore[arg-type]
    n_dir = len(seeds)
    if splice and spec.spliceable:
        plus, minus = device.perturbed_pairs(layer, params, layer_input, pert)
        base = features(base_act)
        chunks = spec.n_chunks()
        dd = (objective.spliced(base, features(plus), y, chunks)
              - objective.spliced(base, features(minus), y, chunks)) / (2 * eps)
    else:
        dd = torch.empty(n_dir, spec.n_chunks(), device=base_act.device)
        for k in range(spec.n_chunks()):
            chunk = Perturbation(seeds, eps, distribution, chunk=k)  # type: ignore[arg-type]
            plus, minus = device.perturbed_pairs(layer, params, layer_input, chunk)
            dd[:, k] = (objective.loss(features(plus), y) - objective.loss(features(minus), y)) / (2 * eps)
    v = pert.vectors(spec, base_act.device)
    return split_chunks(spec, combine(dd, v, how))


def estimate_activity(
    device: Device,
    layer: int,
    spec: LayerSpec,
    params: LayerParams,
    layer_input: torch.Tensor,
    base_act: torch.Tensor,
    objective: Objective,
    y: torch.Tensor,
    eps: float,
    features: Callable[[torch.Tensor], torch.Tensor] = lambda a: a,
    readout: Readout | None = None,
) -> LayerParams:
    """Activity-space estimate of the gradient of layer ``layer``'s local loss: one bias pair, 2 queries.

    ``readout`` says how each output moves what M sees (None: the outputs are the features).
    Near a bound the device clips the shifted bias, so each chunk's difference is divided by the
    distance its bias actually moved.
    """
    plus, minus = device.perturbed_pairs(layer, params, layer_input, Perturbation((0,), eps, "bias"))
    changes = objective.unit_changes(features(base_act), torch.cat([plus, minus]) - base_act, readout, y)
    moved = bias_travel(spec, params, eps).to(changes).repeat_interleave(spec.chunk_outputs())
    delta = (changes[0] - changes[1]).div_(moved).div_(len(y))  # d(batch-mean loss)/d pre-activation
    return activity_gradient(spec, layer_input, delta)


def bias_travel(spec: LayerSpec, params: LayerParams, eps: float) -> torch.Tensor:
    """How far each chunk's bias moves between its +eps and -eps settings once clipped into bounds."""
    bounds = next(p for p in spec.params if p.name == "bias")
    bias = params["bias"]
    return (bias + eps).clamp(bounds.low, bounds.high) - (bias - eps).clamp(bounds.low, bounds.high)


def activity_gradient(spec: LayerSpec, x: torch.Tensor, delta: torch.Tensor) -> LayerParams:
    """Weight and bias gradients from per-sample output derivatives ``delta`` (B, outputs) and input ``x``.

    Dense: ``gain * delta^T x``. Conv: a pooled output's derivative applies to the mean of the
    patches in its window (exact without pooling, or where the activation's slope is the same
    across the window).
    """
    if spec.conv is None:
        return {"weight": spec.gain * delta.T @ x, "bias": delta.sum(0)}
    conv = spec.conv
    windows = delta.reshape(len(x), conv.out_channels, conv.out_height, conv.out_width)
    # spread evenly over its window, a window's derivative meets each patch of it: the mean patch
    per_position = windows.repeat_interleave(conv.pool, 2).repeat_interleave(conv.pool, 3) / conv.pool**2
    images = x.reshape(len(x), conv.in_channels, conv.height, conv.width)
    weight = torch.nn.grad.conv2d_weight(images, (conv.out_channels, conv.in_channels, conv.kernel, conv.kernel),
                                         per_position, padding=conv.kernel // 2)
    return {"weight": spec.gain * weight.reshape(conv.out_channels, -1), "bias": windows.sum((0, 2, 3))}
