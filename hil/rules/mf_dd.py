"""``mf-dd``: Mono-Forward with directional derivatives measured on the device (the product)."""

from functools import partial
from typing import Any

import torch

from devices.interface import Device
from hil.calibration import choose_eps
from hil.config import TrainConfig
from hil.estimator import estimate_layer, estimate_projection, exact_projection_grad
from hil.model import MonoForward
from hil.rules.base import Rule, StepOutput, step_seeds

LOSS_DECAY = 0.9  # the ``loss`` budget's running average: about the last 10 steps


class MonoForwardDD(Rule):
    """One base forward, then per layer P perturbation pairs; no autograd anywhere."""

    name = "mf-dd"
    eps: float = 0.0

    def __init__(self, device: Device, model: MonoForward, config: TrainConfig) -> None:
        super().__init__(device, model, config)
        self.directions = config.directions_per_layer(len(self.info.layers))
        self.running_loss: list[float] | None = None
        """Per layer, an exponential average of the local loss (the ``loss`` budget's weights)."""

    def calibrate(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float] | None:
        """Fix eps: the configured value, or one chosen above the device's measured noise."""
        if self.config.eps != "auto":
            self.eps = self.config.eps
            return None
        result = choose_eps(self.device, self.model, x, y, self.directions, self.config.distribution)
        self.eps = result.eps
        return result.as_dict()

    def step(self, x: torch.Tensor, y: torch.Tensor, step: int) -> StepOutput:
        cfg = self.config
        params = self.model.device_params()
        acts = self.device.forward(params, x)
        inputs = [x, *acts[:-1]]
        losses = []
        with torch.no_grad():
            for i, spec in enumerate(self.info.layers):
                objective = self.model.objective(i)
                seeds = step_seeds(cfg.seed, step, i, self.directions[i])
                grads = estimate_layer(self.device, i, spec, params[i], inputs[i], acts[i], objective, y,
                                       seeds, self.eps, cfg.distribution, cfg.combine,
                                       features=partial(self.model.features, i))
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
        """Average this step's losses into the running ones and share the directions out by them."""
        if self.running_loss is None:
            self.running_loss = list(losses)
        else:
            self.running_loss = [LOSS_DECAY * r + (1 - LOSS_DECAY) * v for r, v in zip(self.running_loss, losses)]
        self.directions = share_directions(sum(self.directions), self.running_loss)

    def _projection_grad(self, feat: torch.Tensor, y: torch.Tensor, step: int, layer: int) -> torch.Tensor:
        """Gradient for layer ``layer``'s M: closed form on the host, or its own DD estimate."""
        cfg = self.config
        m = self.model.projections[layer].detach()
        if cfg.m_update == "exact":
            return exact_projection_grad(feat, m, y)
        seeds = step_seeds(cfg.seed, step, len(self.info.layers) + layer, self.directions[layer])
        return estimate_projection(feat, m, y, seeds, self.eps, cfg.distribution, cfg.combine)

    def state_dict(self) -> dict[str, Any]:
        return {"eps": self.eps, "directions": list(self.directions), "running_loss": self.running_loss}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.eps = state["eps"]
        self.directions = state.get("directions", self.directions)  # absent from runs saved before budgets
        self.running_loss = state.get("running_loss")

    def margin(self) -> float:
        """Room for a +-eps step: |v| is 1 for Rademacher directions, rarely above 3 otherwise."""
        return self.eps * (1.0 if self.config.distribution == "rademacher" else 3.0)

    def summary(self) -> str:
        parts = []
        for p, (i, spec) in zip(self.directions, enumerate(self.info.layers)):
            if spec.spliceable:
                parts.append(f"layer {i}: {1 + 2 * p} (1 + 2P, chunks spliced)")
            else:
                parts.append(f"layer {i}: {1 + 2 * p * spec.n_chunks()} (1 + 2P x {spec.n_chunks()} chunks "
                             f"queried one at a time)")
        host = f"M by {'closed form' if self.config.m_update == 'exact' else 'DD'}" if self.model.trains_projection \
            else f"cosine to fixed prototypes, margin {self.model.margin}"
        budget = ",".join(map(str, self.directions)) if len(set(self.directions)) > 1 else str(self.directions[0])
        if self.config.budget == "loss":
            budget += f" now, {sum(self.directions)} shared by loss"
        return f"mf-dd, P={budget}, eps {self.eps:.4g}, {host}; queries per layer per step: " + "; ".join(parts)


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
