"""``mf-dd``: Mono-Forward with directional derivatives measured on the device (the product).

Each layer's gradient comes from one of two estimates (:mod:`hil.estimator`): ``activity`` (a bias
pair, 2 queries) where the layer is an affine array with a bias, ``weight`` (P random directions,
2P queries) anywhere. ``estimator: auto`` picks the first where it applies.
"""

from functools import partial
from typing import Any, Literal

import torch
from pydantic import Field, field_validator

from devices.directions import Distribution
from devices.errors import CapabilityError
from devices.info import LayerSpec
from devices.interface import Device, Perturbation
from hil.calibration import choose_activity_eps, choose_eps
from hil.config import ConfigError, TrainConfig
from hil.estimator import estimate_activity, estimate_layer, estimate_projection, exact_projection_grad
from hil.model import MonoForward
from hil.rules.base import Rule, RuleOptions, StepOutput, fastest, step_seeds

LOSS_DECAY = 0.9  # the ``loss`` budget's running average: about the last 10 steps
TIMING_EPS = 0.01  # any step: :meth:`MonoForwardDD.step_seconds` times the queries, not their result
BYTES_PER_DIRECTION_ELEMENT = 64
"""Peak bytes per element of one layer's P weight-space directions in a step (measured on a crossbar:
22 for rademacher, 57-65 for gaussian and sphere: the generator's int64 words, the directions, the
perturbed parameters)."""
MAX_DIRECTIONS = 1024
Estimator = Literal["activity", "weight"]


class MonoForwardDDOptions(RuleOptions):
    """How ``mf-dd`` measures each layer's gradient on the device."""

    estimator: Literal["auto", "activity", "weight"] = Field(
        "auto", description="auto, activity (a bias pair per layer: 3 queries per layer and step) or weight (P "
                            "random directions per layer: 1 + 2P queries); auto: activity where a layer allows it, "
                            "weight elsewhere"
    )
    directions: int | list[int] = Field(
        4, description="P, perturbation directions per layer and step, or one P per layer: 8,4"
    )
    budget: Literal["fixed", "loss"] = Field(
        "fixed", description="fixed, or loss: share the directions' total among layers by their running loss"
    )
    distribution: Distribution = Field("rademacher", description="rademacher, gaussian or sphere")
    combine: Literal["mean", "projection"] = Field(
        "mean", description="mean, or projection onto the span of the directions"
    )
    eps: float | Literal["auto"] = Field(
        "auto", description="perturbation step in parameter units, or auto (calibrated at start-up)"
    )
    m_update: Literal["exact", "dd"] = Field(
        "exact", description="exact (closed-form local gradient) or dd for the host projection M"
    )

    @field_validator("directions", mode="before")
    @classmethod
    def _split_directions(cls, v: object) -> object:
        if isinstance(v, str):
            try:
                values = [int(p) for p in v.split(",")]
            except ValueError:
                raise ValueError(f"directions must be a number or numbers separated by commas, got {v!r}") from None
            return values[0] if len(values) == 1 else values
        return v

    @field_validator("directions")
    @classmethod
    def _directions_in_range(cls, v: int | list[int]) -> int | list[int]:
        counts = v if isinstance(v, list) else [v]
        if not counts or not all(1 <= p <= MAX_DIRECTIONS for p in counts):
            raise ValueError(f"every directions count must be at least 1 and at most {MAX_DIRECTIONS}")
        return v

    @field_validator("eps")
    @classmethod
    def _eps_in_range(cls, v: float | str) -> float | str:
        if isinstance(v, float) and not 0 < v <= 1:
            raise ValueError("eps must be a finite step above 0 and at most 1 (parameter units), or auto")
        return v

    def directions_per_layer(self, layers: int) -> list[int]:
        """P for each of ``layers`` layers; a list must name one P per layer."""
        if isinstance(self.directions, int):
            return [self.directions] * layers
        if len(self.directions) != layers:
            raise ConfigError(f"config field 'directions': {len(self.directions)} values for a device with "
                              f"{layers} layers; give one P per layer or a single P")
        return list(self.directions)


def activity_applies(spec: LayerSpec) -> bool:
    """An affine array with a bias whose chunks own their outputs: a bias pair measures its units."""
    return spec.kind in ("dense", "conv") and spec.has_bias and spec.spliceable


def layer_estimators(setting: str, layers: tuple[LayerSpec, ...]) -> list[Estimator]:
    """Each layer's estimate for the config's ``estimator`` (auto: activity where it applies)."""
    if setting == "weight":
        return ["weight"] * len(layers)
    if setting == "activity":
        unfit = [f"layer {i} ({spec.kind})" for i, spec in enumerate(layers) if not activity_applies(spec)]
        if unfit:
            raise CapabilityError(f"estimator 'activity' needs affine layers with a bias; {', '.join(unfit)} "
                                  "has none. Use --estimator auto (weight space there) or weight")
        return ["activity"] * len(layers)
    return ["activity" if activity_applies(spec) else "weight" for spec in layers]


class MonoForwardDD(Rule):
    """One base forward, then per layer a bias pair or P perturbation pairs; no autograd anywhere."""

    name = "mf-dd"
    Options = MonoForwardDDOptions
    options: MonoForwardDDOptions

    def __init__(self, device: Device, model: MonoForward, config: TrainConfig) -> None:
        super().__init__(device, model, config)
        self.estimators = layer_estimators(self.options.estimator, self.info.layers)
        self.directions = self.options.directions_per_layer(len(self.info.layers))
        self.eps = [0.0] * len(self.info.layers)
        """Per layer, the perturbation step of its estimate."""
        self.running_loss: list[float] | None = None
        """Per layer, an exponential average of the local loss (the ``loss`` budget's weights)."""

    def layers_using(self, estimator: Estimator) -> list[int]:
        return [i for i, e in enumerate(self.estimators) if e == estimator]

    def calibrate(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any] | None:
        """Fix eps per estimate: the configured value, or one chosen above the device's measured noise."""
        if self.options.eps != "auto":
            self.eps = [self.options.eps] * len(self.eps)
            return None
        found: dict[str, Any] = {}
        if weight := self.layers_using("weight"):
            result = choose_eps(self.device, self.model, x, y, self.directions, self.options.distribution, weight)
            found["weight"] = result.as_dict()
            for i in weight:
                self.eps[i] = result.eps
        if activity := self.layers_using("activity"):
            result = choose_activity_eps(self.device, self.model, x, activity)
            found["activity"] = result.as_dict()
            for i in activity:
                self.eps[i] = result.eps
        return found

    def step(self, x: torch.Tensor, y: torch.Tensor, step: int) -> StepOutput:
        cfg = self.options
        params = self.model.device_params()
        acts = self.device.forward(params, x)
        inputs = [x, *acts[:-1]]
        losses = []
        with torch.no_grad():
            for i, spec in enumerate(self.info.layers):
                objective = self.model.objective(i)
                features = partial(self.model.features, i)
                if self.estimators[i] == "activity":
                    grads = estimate_activity(self.device, i, spec, params[i], inputs[i], acts[i], objective, y,
                                              self.eps[i], features, self.model.readout(i))
                else:
                    seeds = step_seeds(self.config.seed, step, i, self.directions[i])
                    grads = estimate_layer(self.device, i, spec, params[i], inputs[i], acts[i], objective, y,
                                           seeds, self.eps[i], cfg.distribution, cfg.combine, features=features)
                for name, g in grads.items():
                    self.model.params[i][name].grad = g
                feat = self.model.features(i, acts[i])
                if self.model.trains_projection:
                    self.model.projections[i].grad = self._projection_grad(feat, y, step, i)
                losses.append(objective.loss(feat, y).item())
        if cfg.budget == "loss":
            self._share_budget(losses)
        return StepOutput(sum(losses) / len(losses), acts)

    def _share_budget(self, losses: list[float]) -> None:
        """Average this step's losses into the running ones; share the weight-space layers' directions by them."""
        if self.running_loss is None:
            self.running_loss = list(losses)
        else:
            self.running_loss = [LOSS_DECAY * r + (1 - LOSS_DECAY) * v for r, v in zip(self.running_loss, losses)]
        weight = self.layers_using("weight")
        if weight:
            shares = share_directions(sum(self.directions[i] for i in weight), [self.running_loss[i] for i in weight])
            for i, p in zip(weight, shares):
                self.directions[i] = p

    def _projection_grad(self, feat: torch.Tensor, y: torch.Tensor, step: int, layer: int) -> torch.Tensor:
        """Gradient for layer ``layer``'s M: closed form on the host, or its own DD estimate."""
        cfg = self.options
        m = self.model.projections[layer].detach()
        if cfg.m_update == "exact":
            return exact_projection_grad(feat, m, y)
        seeds = step_seeds(self.config.seed, step, len(self.info.layers) + layer, self.directions[layer])
        return estimate_projection(feat, m, y, seeds, self.eps[layer], cfg.distribution, cfg.combine)

    def step_seconds(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """A timed base forward, and per layer one timed query batch of its estimate times the step's count of them
        (a bias pair; P pairs spliced; or P pairs for one chunk, times the chunks queried one at a time)."""
        params = self.model.device_params()
        seconds = fastest(lambda: self.device.forward(params, x))
        acts = self.device.forward(params, x)
        for i, (spec, layer_input) in enumerate(zip(self.info.layers, [x, *acts[:-1]])):
            repeats, perturbation = 1, Perturbation((0,), TIMING_EPS, "bias")
            if self.estimators[i] == "weight":
                seeds = step_seeds(self.config.seed, 0, i, self.directions[i])
                chunk = None if spec.spliceable else 0
                repeats = 1 if spec.spliceable else spec.n_chunks()
                perturbation = Perturbation(seeds, TIMING_EPS, self.options.distribution, chunk)
            seconds += repeats * fastest(partial(self.device.perturbed_pairs, i, params[i], layer_input, perturbation))
        return seconds

    def step_bytes(self) -> int:
        """The largest weight-space layer's P directions and perturbed copies; with ``projection``, its Gram solves."""
        peak = 0
        for i in self.layers_using("weight"):
            spec, p = self.info.layers[i], self.directions[i]
            size = spec.n_chunks() * spec.chunk_size()
            gram = 3 * 8 * p * p * spec.n_chunks() if self.options.combine == "projection" else 0
            peak = max(peak, BYTES_PER_DIRECTION_ELEMENT * p * size + gram)
        return peak

    def state_dict(self) -> dict[str, Any]:
        return {"eps": list(self.eps), "estimators": list(self.estimators), "directions": list(self.directions),
                "running_loss": self.running_loss}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        eps = state["eps"]
        self.eps = list(eps) if isinstance(eps, list) else [eps] * len(self.eps)  # one eps before estimators
        self.directions = state.get("directions", self.directions)  # absent from runs saved before budgets
        self.running_loss = state.get("running_loss")

    def margin(self) -> float:
        """Room for a +-eps step: |v| is 1 for Rademacher directions and a bias pair, rarely above 3 otherwise."""
        spread = 1.0 if self.options.distribution == "rademacher" else 3.0
        return max(e * (spread if kind == "weight" else 1.0) for e, kind in zip(self.eps, self.estimators))

    def queries_per_layer(self) -> list[int]:
        """Device queries each layer costs per step, its share of the base forward included."""
        out = []
        for p, kind, spec in zip(self.directions, self.estimators, self.info.layers):
            if kind == "activity":
                out.append(3)
            else:
                out.append(1 + 2 * p * (1 if spec.spliceable else spec.n_chunks()))
        return out

    def memory_advice(self) -> str:
        return ("use fewer --directions (P), narrower layers, or --estimator auto where layers allow the activity "
                "estimate")

    def report(self) -> dict[str, Any]:
        """Its options, with ``eps`` as each layer's step (what ``auto`` chose), and each layer's estimate and cost."""
        return {**super().report(), "estimators": list(self.estimators), "eps": list(self.eps),
                "queries_per_layer_step": self.queries_per_layer(),
                "directions_by_layer": [p if kind == "weight" else None
                                        for p, kind in zip(self.directions, self.estimators)]}

    def summary(self) -> str:
        parts = []
        bias_written = not self.info.capabilities.bias_perturbation
        for i, (kind, queries, spec) in enumerate(zip(self.estimators, self.queries_per_layer(), self.info.layers)):
            if kind == "activity":
                how = "bias pair" + (", bias written: the device has no bias perturbation" if bias_written else "")
            elif spec.spliceable:
                how = f"weight space, P={self.directions[i]}, chunks spliced"
            else:
                how = f"weight space, P={self.directions[i]} x {spec.n_chunks()} chunks queried one at a time"
            parts.append(f"layer {i}: {kind} ({how}, eps {self.eps[i]:.4g}): {queries}")
        host = f"M by {'closed form' if self.options.m_update == 'exact' else 'DD'}" if self.model.trains_projection \
            else f"cosine to fixed prototypes, margin {self.model.margin}"
        budget = ""
        if self.options.budget == "loss" and self.layers_using("weight"):
            budget = f"; weight-space directions shared by loss, {sum(self.directions)} in all"
        return f"mf-dd, {host}{budget}; queries per layer per step: " + "; ".join(parts)


def share_directions(total: int, losses: list[float]) -> list[int]:
    """``total`` directions over layers in proportion to ``losses``, at least 1 each, summing to ``total``.

    Each layer first gets 1; the rest goes by largest remainder of the proportional shares, ties to
    the earlier layer, so the split is deterministic.
    """
    layers = len(losses)
    if total < layers:
        raise ValueError(f"{total} directions cannot give each of {layers} layers one")
    weights = [max(v, 0.0) for v in losses]
    if not any(weights):
        weights = [1.0] * layers
    shares = [(total - layers) * w / sum(weights) for w in weights]
    out = [1 + int(s) for s in shares]
    by_remainder = sorted(range(layers), key=lambda i: (-(shares[i] - int(shares[i])), i))
    for i in by_remainder[:total - sum(out)]:
        out[i] += 1
    return out
