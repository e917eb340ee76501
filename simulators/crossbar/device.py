"""The simulated crossbar as a device: the contract, what each array holds, the counters, resuming.

Each weight in [-1, 1] is a differential pair of conductances; every read and write goes through
the physics :class:`~simulators.crossbar.pipeline.Pipeline`, whose effects are all off in the
``ideal`` preset. A device clock advances with writes, reads and the link, so drift happens
between queries as on a bench.
"""

import copy
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch

from devices.info import Capabilities, DeviceInfo
from devices.interface import (
    Counters,
    Device,
    LayerParams,
    Perturbation,
    check_layer_params,
    check_params,
    clip_to_bounds,
    join_chunks,
    split_chunks,
)
from simulators.conv import assemble, patches, reference
from simulators.crossbar.cache import ReadCache
from simulators.crossbar.clock import DeviceClock
from simulators.crossbar.options import CrossbarOptions
from simulators.crossbar.pipeline import Pipeline
from simulators.noise import NoiseStreams

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "hardtanh": torch.nn.functional.hardtanh,
    "identity": lambda z: z,
}
IN_PLACE: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu_,
    "tanh": torch.tanh_,
    "hardtanh": torch.nn.functional.hardtanh_,
    "identity": lambda z: z,
}
"""The activations again, overwriting a fresh tensor of pre-activations (the array's own reads)."""


class SimulatedCrossbar(Device):
    """In-process crossbar network: forward, vectorized perturbation pairs, physics, a clock."""

    def __init__(self, options: CrossbarOptions | None = None, preset: str = "ideal") -> None:
        self.options = opts = options or CrossbarOptions()
        self.preset = preset
        self._dev = torch.device(opts.torch_device)
        topology = "x".join(map(str, opts.layers))
        if opts.conv:
            topology = f"conv {opts.conv} + {topology}"
        self._info = DeviceInfo(
            identity=f"hil simulated crossbar {topology} ({preset})",
            firmware="sim",
            layers=tuple(opts.layer_specs()),
            max_batch=opts.max_batch,
            capabilities=Capabilities(differentiable=True, bias_perturbation=True),
        )
        self._counters = Counters()
        self._clock = DeviceClock(opts, self._counters)
        self._act = ACTIVATIONS[opts.activation]
        self._act_ = IN_PLACE[opts.activation]
        self.streams = NoiseStreams(opts.seed, opts.noise, self._dev)
        n_layers = len(self._info.layers)
        shapes = [spec.params[0].shape for spec in self._info.layers]
        self.physics = Pipeline(opts, shapes, self.streams, self._dev)
        self._target: list[LayerParams | None] = [None] * n_layers
        self._programmed: list[torch.Tensor | None] = [None] * n_layers
        self._written_at = [0.0] * n_layers
        self._layer_writes = [0] * n_layers
        self._cache = ReadCache(n_layers)
        self._seen: dict[tuple[int, str], tuple[torch.Tensor, int]] = {}

    @property
    def clock(self) -> float:
        """Device seconds since the device was opened (see :class:`DeviceClock`)."""
        return self._clock.now

    # ----------------------------------------------------------------- the Device contract

    def info(self) -> DeviceInfo:
        return self._info

    @property
    def counters(self) -> Counters:
        self._counters.extra["writes_per_cell"] = float(max(self._layer_writes))
        self._counters.extra["device_clock_seconds"] = self.clock
        return self._counters

    def forward(self, params: list[LayerParams], x: torch.Tensor) -> list[torch.Tensor]:
        check_params(self._info, params)
        self._clock.link(x.numel(), 0)
        acts = []
        a = x.to(self._dev)
        with torch.no_grad():
            for i, p in enumerate(params):
                a = self._evaluate(i, p, a)
                acts.append(a)
        self._counters.forwards += 1
        self._clock.link(0, sum(a.numel() for a in acts))
        return acts

    def forward_layer(self, layer: int, params: LayerParams, x: torch.Tensor) -> torch.Tensor:
        self._check_layer(layer, params)
        with torch.no_grad():
            return self._evaluate(layer, params, x.to(self._dev))

    def perturbed_pairs(
        self, layer: int, params: LayerParams, x: torch.Tensor, perturbation: Perturbation
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_layer(layer, params)
        if perturbation.distribution == "bias" or perturbation.eps == 0:
            return self._array_reads(layer, params, x, perturbation)
        spec = self._info.layers[layer]
        n_dir = len(perturbation.seeds)
        queries = 2 * n_dir
        self._clock.link(x.numel() + len(perturbation.seeds) + 4, 0)
        batch = len(x)
        with torch.no_grad():
            x, known_sums = self._read_rows(layer, x.to(self._dev), params["weight"].to(self._dev))
            v = perturbation.vectors(spec, self._dev)
            if self.physics.writes_land_exactly and _nothing_clips(params, v, perturbation):
                # Writes land exactly and nothing clips; the array's product is linear in its
                # conductances: (W +- eps V) x = W x +- eps V x, so P direction products serve 2P queries.
                along = split_chunks(spec, v)
                weight = params["weight"].to(self._dev)
                s0 = self.physics.column_sums(layer, x, weight) if known_sums is None else known_sums
                ds = self.physics.column_sums(layer, x, along["weight"]).mul_(perturbation.eps)
                sums = torch.empty(2 * n_dir, *s0.shape, dtype=s0.dtype, device=s0.device)
                torch.add(s0, ds, out=sums[:n_dir])
                torch.sub(s0, ds, out=sums[n_dir:])
                db = perturbation.eps * along["bias"]
                bias = torch.cat([params["bias"] + db, params["bias"] - db])
            else:
                base = join_chunks(spec, params).to(self._dev)
                step = perturbation.eps * v
                both = torch.empty(2 * n_dir, *base.shape, dtype=base.dtype, device=base.device)
                torch.add(base, step, out=both[:n_dir])
                torch.sub(base, step, out=both[n_dir:])
                shifted = clip_to_bounds(spec, split_chunks(spec, both))
                written = self.physics.write(layer, shifted["weight"], sigma_at=params["weight"].to(self._dev))
                sums = self.physics.column_sums(layer, x, written)
                bias = shifted["bias"]
            pre = self.physics.periphery(sums, x, bias, spec.gain, owned=True)
            out = self._outputs(layer, self._act_(pre), batch)
        self._retarget(layer, None)  # the array now holds the last perturbed weights
        self._cache.forget(layer)
        self._layer_writes[layer] += queries
        self._clock.tick(queries * self._clock.write_time(spec.params[0].shape[0])
                         + queries * len(x) * self.options.read_seconds)
        self._counters.queries += queries
        self._counters.param_writes += queries
        self._counters.perturbation_batches += 1
        self._clock.link(0, out.numel())
        return out[:n_dir], out[n_dir:]

    def _array_reads(
        self, layer: int, params: LayerParams, x: torch.Tensor, perturbation: Perturbation
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pairs that leave the array's weights alone: the digital bias at +-eps, or nothing at eps 0.

        Nothing is written; every query is its own read (its own read and output noise) of the
        array as programmed, and shifted biases are clipped into their bounds as any perturbed
        parameter is.
        """
        spec = self._info.layers[layer]
        n_dir = len(perturbation.seeds)
        queries = 2 * n_dir
        self._clock.link(x.numel() + n_dir + 4, 0)
        with torch.no_grad():
            self._write_if_changed(layer, params)
            rows, sums = self._read_rows(layer, x.to(self._dev), params["weight"].to(self._dev))
            if sums is None:
                sums = self.physics.column_sums(layer, rows, self._weights_now(layer))
            base = params["bias"].to(self._dev)
            if perturbation.eps == 0:
                step = base.new_zeros(n_dir, *base.shape)
            elif perturbation.chunk is None:  # the bias direction: 1 on every bias, built without the weights
                step = base.new_full((n_dir, *base.shape), perturbation.eps)
            else:
                step = perturbation.eps * split_chunks(spec, perturbation.vectors(spec, self._dev))["bias"]
            bounds = next(p for p in spec.params if p.name == "bias")
            bias = torch.cat([base + step, base - step]).clamp(bounds.low, bounds.high)
            reads = sums.expand(queries, *sums.shape)
            pre = self.physics.periphery(reads, rows, bias, spec.gain)
            out = self._outputs(layer, self._act_(pre), len(x))
        self._clock.tick(queries * len(rows) * self.options.read_seconds)
        self._counters.queries += queries
        self._counters.perturbation_batches += 1
        self._clock.link(0, out.numel())
        return out[:n_dir], out[n_dir:]

    def differentiable_layer(self, layer: int, params: LayerParams, x: torch.Tensor) -> torch.Tensor:
        """Autograd forward of one layer of the *ideal* array (the simulator-only baselines).

        Baselines trained this way are ex situ: their weights are then written to the device.
        """
        self._counters.queries += 1
        spec = self._info.layers[layer]
        if spec.conv is not None:
            return reference(spec.conv, x.to(self._dev), params["weight"], params["bias"], spec.gain, self._act)
        return self._act(torch.addmm(params["bias"], x.to(self._dev), params["weight"].T, alpha=spec.gain))

    def wait(self, seconds: float) -> None:
        """Let time pass on the bench: drift continues, nothing is written or read."""
        self._clock.now += seconds

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue bit for bit (a noise bank is rebuilt from the seed)."""
        return copy.deepcopy({
            "streams": self.streams.state_dict(), "clock": self.clock, "target": self._target,
            "programmed": self._programmed, "written_at": self._written_at,
            "layer_writes": self._layer_writes, "counters": asdict(self._counters),
        })

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = copy.deepcopy(state)
        self.streams.load_state_dict(state["streams"])
        self._target, self._programmed = state["target"], state["programmed"]
        self._written_at, self._layer_writes = state["written_at"], state["layer_writes"]
        self._counters = Counters(**state["counters"])
        self._clock = DeviceClock(self.options, self._counters, state["clock"])
        self._cache.clear()
        self._seen.clear()

    # ----------------------------------------------------------------- what the arrays hold

    def _evaluate(self, layer: int, params: LayerParams, x: torch.Tensor) -> torch.Tensor:
        """Write ``params`` if they changed, then read the layer on input ``x``."""
        self._write_if_changed(layer, params)
        weight = self._weights_now(layer)
        rows = self._rows(layer, self.physics.inputs(x))
        sums = self.physics.column_sums(layer, rows, weight)
        self._cache.remember(layer, x, rows, sums if self.physics.reads_what_was_written else None)
        pre = self.physics.periphery(sums, rows, params["bias"].to(self._dev), self._info.layers[layer].gain)
        self._counters.queries += 1
        self._clock.tick(len(rows) * self.options.read_seconds)
        return self._outputs(layer, self._act_(pre), len(x))

    def _seen_unchanged(self, layer: int, name: str, value: torch.Tensor | None) -> bool:
        """Whether ``value`` is the very tensor last found to equal the target, unmodified since."""
        seen = self._seen.get((layer, name))
        return seen is not None and seen[0] is value and seen[1] == value._version

    def _check_layer(self, layer: int, params: LayerParams) -> None:
        """Refuse bad parameters; tensors the array holds as they are were checked when they were sent."""
        if not all(self._seen_unchanged(layer, name, params.get(name)) for name in ("weight", "bias")):
            check_layer_params(layer, self._info.layers[layer], params)

    def _holds(self, layer: int, name: str, value: torch.Tensor) -> bool:
        """Whether the array's target holds exactly ``value``.

        The tensor last found equal, unmodified since (same object, same version counter), needs no
        compare: a step sends the same parameters with each of its queries.
        """
        if self._seen_unchanged(layer, name, value):
            return True
        target = self._target[layer]
        if target is None or not torch.equal(target[name], value):
            return False
        self._seen[layer, name] = (value, value._version)
        return True

    def _retarget(self, layer: int, target: LayerParams | None, sent: LayerParams | None = None) -> None:
        """What the array is now meant to hold, and the host's tensors ``sent`` that hold exactly that."""
        self._target[layer] = target
        for name in ("weight", "bias"):
            self._seen.pop((layer, name), None)
        for name, value in (sent or {}).items():
            self._seen[layer, name] = (value, value._version)

    def _write_if_changed(self, layer: int, params: LayerParams) -> None:
        """Program ``params`` unless the array already holds exactly their weights (the bias is digital)."""
        target = self._target[layer]
        if target is not None and self._holds(layer, "weight", params["weight"]):
            if not self._holds(layer, "bias", params["bias"]):
                self._retarget(layer, {**target, "bias": params["bias"].detach().clone()}, params)
                self._clock.link(params["bias"].numel(), 0)
        else:
            self._retarget(layer, {k: v.detach().clone() for k, v in params.items()}, params)
            self._clock.link(sum(v.numel() for v in params.values()), 0)
            self._programmed[layer] = self.physics.write(layer, params["weight"].to(self._dev))
            self._written_at[layer] = self.clock
            self._layer_writes[layer] += 1
            self._counters.param_writes += 1
            self._clock.tick(self._clock.write_time(self._info.layers[layer].params[0].shape[0]))

    def _weights_now(self, layer: int) -> torch.Tensor:
        """The programmed weights as read now (drifted since their write)."""
        w = self._programmed[layer]
        assert w is not None
        return self.physics.age(layer, w, self.clock - self._written_at[layer])

    def _read_rows(self, layer: int, x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What the array reads for input ``x`` and, when known, its exact column sums through ``weight``.

        Both come from the last read of this layer when it read this very input, unchanged
        (the host's base forward): its rows (DAC'd, and a conv layer's patches), and its sums
        while the array holds exactly ``weight`` with nothing but the ideal product in between.
        """
        last, target = self._cache.read_of(layer, x), self._target[layer]
        if last is None:
            return self._rows(layer, self.physics.inputs(x)), None
        if last.sums is None or target is None or not self._holds(layer, "weight", weight):
            return last.rows, None
        return last.rows, last.sums

    def _rows(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """What the array reads: the inputs themselves, or a conv layer's patches of them."""
        conv = self._info.layers[layer].conv
        return x if conv is None else patches(conv, x)

    def _outputs(self, layer: int, out: torch.Tensor, batch: int) -> torch.Tensor:
        """Activations per input: the array's outputs, or a conv layer's pooled maps."""
        conv = self._info.layers[layer].conv
        return out if conv is None else assemble(conv, out, batch)


def _nothing_clips(params: LayerParams, v: torch.Tensor, perturbation: Perturbation) -> bool:
    """Whether every parameter stays within [-1, 1] at +-eps along every direction."""
    reach = perturbation.eps * (1.0 if perturbation.distribution == "rademacher" else _largest_magnitude(v))
    return max(_largest_magnitude(t) for t in params.values()) + reach <= 1.0 + 1e-6


def _largest_magnitude(t: torch.Tensor) -> float:
    low, high = torch.aminmax(t)
    return max(-low.item(), high.item())
