"""How to estimate a pooled conv layer's gradient from a bias pair: the measurements behind ``auto``.

A channel's bias pair moves every position of its map, but a pooled output mixes a window of
positions, so the per-sample difference gives a per-window derivative, not each position's. Three
candidates, on the Fashion-MNIST conv-only CNN (32c3p2,64c3p2,128c3) on the ideal crossbar:

- ``window`` (what mf-dd does): the per-window derivative applied to the mean patch of its window;
  needs nothing but the bias pair the protocol has (distribution 3).
- ``pre-pool``: a chip that returned its maps before pooling for the pair would give each position's
  derivative; emulated here from the ideal array's own conv (no such reply exists in the protocol).
- ``weight``: the poster's weight-space estimate, P = 4.

Part 1: cosine of each estimate to the autograd gradient of each layer's local loss, on one batch,
at initialisation and after ``--steps`` mf-ad steps, for average and max pooling. Part 2: test
accuracy after short training with window, pre-pool and (as the reference) mf-ad.

    python bench/conv_estimates.py                       # about 30 min on one core
    python bench/conv_estimates.py --quick               # a minute: fewer steps, no training
"""

import argparse
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, write_results  # noqa: E402

from devices import open_device  # noqa: E402
from hil.data import load_dataset  # noqa: E402
from hil.estimator import (  # noqa: E402
    estimate_activity,
    estimate_layer,
    exact_projection_grad,
    sample_loss_changes,
)
from hil.model import MonoForward  # noqa: E402

CONV = "32c3p2,64c3p2,128c3"
EPS = 0.01


class Bench:
    """A CNN on the ideal simulated crossbar, its Mono-Forward model and an Adam optimizer."""

    def __init__(self, pooling: str, seed: int) -> None:
        self.device = open_device(f"sim://crossbar?layers=784&conv={CONV}&pooling={pooling}")
        self.info = self.device.info()
        self.model = MonoForward.initialise(self.info, 10, seed, features=10)
        self.optimizer = torch.optim.Adam(self.model.tensors(), lr=3e-3)

    def autograd(self, layer: int, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """The local loss's gradient by autograd through the ideal array (the reference)."""
        leaf = {k: v.detach().clone().requires_grad_() for k, v in self.model.params[layer].items()}
        loss = self.model.layer_loss(layer, self.device.differentiable_layer(layer, leaf, x), y)
        return dict(zip(leaf, torch.autograd.grad(loss, list(leaf.values()))))

    def window(self, layer: int, x: torch.Tensor, act: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        spec = self.info.layers[layer]
        with torch.no_grad():
            return estimate_activity(self.device, layer, spec, self.model.device_params()[layer], x, act,
                                     self.model.objective(layer), y, EPS, partial(self.model.features, layer),
                                     self.model.readout(layer))

    def pre_pool(self, layer: int, x: torch.Tensor, act: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each position's derivative, from maps before pooling at bias +-eps (emulated on the ideal array)."""
        spec = self.info.layers[layer]
        conv = spec.conv
        weight, bias = (self.model.params[layer][k].detach() for k in ("weight", "bias"))
        images = x.reshape(len(x), conv.in_channels, conv.height, conv.width)
        kernels = weight.reshape(conv.out_channels, conv.in_channels, conv.kernel, conv.kernel)
        z = spec.gain * F.conv2d(images, kernels, padding=conv.kernel // 2)
        maps = [torch.relu(z + (bias + s)[:, None, None]) for s in (EPS, -EPS)]
        with torch.no_grad():
            m = self.model.projections[layer].detach()
            readout = self.model.readout(layer)
            per_window = (m if readout is None else readout.pull(m)).reshape(10, conv.out_channels,
                                                                             conv.out_height, conv.out_width)
            # a position moves its window's pooled output: by 1/pool^2 of its change (average pooling)
            weights = per_window.repeat_interleave(conv.pool, 2).repeat_interleave(conv.pool, 3).reshape(10, -1)
            shift = ((maps[0] - maps[1]) / (2 * conv.pool**2)).reshape(1, len(x), -1)
            goodness = self.model.features(layer, act) @ m.T
            changes = sample_loss_changes(goodness, torch.cat([shift, -shift]), weights, y)
        delta = ((changes[0] - changes[1]) / (2 * EPS) / len(y)).reshape(len(x), conv.out_channels, -1)
        patches = F.unfold(images, conv.kernel, padding=conv.kernel // 2)
        return {"weight": spec.gain * torch.einsum("bcp,bkp->ck", delta, patches), "bias": delta.sum((0, 2))}

    def weight_space(self, layer: int, x: torch.Tensor, act: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        spec = self.info.layers[layer]
        with torch.no_grad():
            return estimate_layer(self.device, layer, spec, self.model.device_params()[layer], x, act,
                                  self.model.objective(layer), y, (11, 12, 13, 14), EPS,
                                  features=partial(self.model.features, layer))

    def step(self, x: torch.Tensor, y: torch.Tensor, how: str) -> None:
        """One training step, every layer by ``how`` (window, pre-pool or autograd)."""
        self.optimizer.zero_grad()
        acts = self.device.forward(self.model.device_params(), x)
        inputs = [x, *acts[:-1]]
        for i, spec in enumerate(self.info.layers):
            if how == "autograd" or (how == "pre-pool" and spec.conv.pool == 1):
                grads = self.autograd(i, inputs[i], y) if how == "autograd" else self.window(i, inputs[i], acts[i], y)
            else:
                grads = (self.window if how == "window" else self.pre_pool)(i, inputs[i], acts[i], y)
            for name, g in grads.items():
                self.model.params[i][name].grad = g
            feat = self.model.features(i, acts[i]).detach()
            self.model.projections[i].grad = exact_projection_grad(feat, self.model.projections[i].detach(), y)
        self.optimizer.step()
        self.model.clip_(self.info, EPS)

    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        with torch.no_grad():
            correct = sum(int((self.model.predict(self.device.forward(self.model.device_params(), x[s:s + 1000]))[1]
                               == y[s:s + 1000]).sum()) for s in range(0, len(x), 1000))
        return correct / len(x)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def cosines(bench: Bench, x: torch.Tensor, y: torch.Tensor) -> list[dict[str, Any]]:
    acts = bench.device.forward(bench.model.device_params(), x)
    inputs = [x, *acts[:-1]]
    rows = []
    for i in range(len(acts)):
        want = bench.autograd(i, inputs[i], y)
        found = {"window": bench.window(i, inputs[i], acts[i], y), "weight P=4": bench.weight_space(i, inputs[i],
                                                                                                    acts[i], y)}
        if bench.info.layers[i].conv.pooling == "avg":
            found["pre-pool"] = bench.pre_pool(i, inputs[i], acts[i], y)
        rows.append({"layer": i, "pool": bench.info.layers[i].conv.pool,
                     **{f"{k} {name}": cosine(g[name], want[name]) for k, g in found.items()
                        for name in ("weight", "bias")}})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150, help="mf-ad steps before the second cosine measurement")
    parser.add_argument("--epochs", type=int, default=3, help="training comparison: epochs")
    parser.add_argument("--samples", type=int, default=30000, help="training comparison: training samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--name", default="conv_estimates")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    data = load_dataset("fashion-mnist")
    batch = 128
    probe_x, probe_y = data.x_test[:batch], data.y_test[:batch]
    measured: dict[str, Any] = {"cosines": {}, "training": {}}
    for pooling in ("avg", "max"):
        bench = Bench(pooling, args.seed)
        measured["cosines"][pooling] = {"initial": cosines(bench, probe_x, probe_y)}
        for s in range(10 if args.quick else args.steps):
            bench.step(data.x_train[s * batch:(s + 1) * batch], data.y_train[s * batch:(s + 1) * batch], "autograd")
        measured["cosines"][pooling]["trained"] = cosines(bench, probe_x, probe_y)
    for how in ([] if args.quick else ["window", "pre-pool", "autograd"]):
        bench = Bench("avg", args.seed)
        started, curve = time.perf_counter(), []
        for epoch in range(args.epochs):
            order = torch.randperm(args.samples, generator=torch.Generator().manual_seed(epoch))
            for s in range(args.samples // batch):
                idx = order[s * batch:(s + 1) * batch]
                bench.step(data.x_train[idx], data.y_train[idx], how)
            curve.append(bench.accuracy(data.x_test, data.y_test))
            print(f"{how}: epoch {epoch + 1}, test accuracy {curve[-1]:.4f}", file=sys.stderr, flush=True)
        measured["training"][how] = {"test_accuracy": curve, "seconds": time.perf_counter() - started}

    rows = []
    for pooling, stages in measured["cosines"].items():
        for stage, layers in stages.items():
            for row in layers:
                cells = [f"{row[f'{k} weight']:.3f} / {row[f'{k} bias']:.3f}" if f"{k} weight" in row else "n/a"
                         for k in ("window", "pre-pool", "weight P=4")]
                where = f"| {pooling} | {stage} | {row['layer']} (pool {row['pool']}) | "
                rows.append(where + " | ".join(cells) + " |")
    table = ("Fashion-MNIST CNN " + CONV + ", ideal crossbar, batch 128, eps 0.01. Cosine to autograd's local "
             "gradient, weight / bias (`initial`: at initialisation; `trained`: after "
             f"{10 if args.quick else args.steps} mf-ad steps; pre-pool is emulated and for average pooling):\n\n"
             "| pooling | model | layer | window | pre-pool | weight P=4 |\n|---|---|---|---|---|---|\n"
             + "\n".join(rows) + "\n")
    if measured["training"]:
        table += (f"\nTest accuracy (cumulative) per epoch, {args.samples} training samples, Adam 3e-3, seed "
                  f"{args.seed} (a comparison of the estimates, not a tuned run):\n\n| estimate | "
                  + " | ".join(f"epoch {e + 1}" for e in range(args.epochs)) + " | seconds |\n|---|"
                  + "---|" * (args.epochs + 1) + "\n"
                  + "\n".join(f"| {how} | " + " | ".join(f"{a:.4f}" for a in r["test_accuracy"])
                              + f" | {r['seconds']:.0f} |" for how, r in measured["training"].items()) + "\n")
    write_results(args.out, args.name, {"environment": environment(), **measured}, table)
    print(table)


if __name__ == "__main__":
    main()
