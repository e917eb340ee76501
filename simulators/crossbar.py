"""A simulated resistive-crossbar network of dense layers, with the physics of analog arrays.

Each weight in [-1, 1] is a differential pair of conductances (fractions of g_max; g_min is
1/on_off_ratio). An evaluation goes through one pipeline:

    input DAC (quantize, clip) -> IR-drop row attenuation -> column sums per tile
    -> read noise and output noise -> per-tile ADC (quantize, saturate)
    -> sum of tiles * gain (1/sqrt(inputs)) + digital bias -> activation

A write programs the target weights with programming noise; stuck-at devices ignore writes;
conductances drift as ((t + t0)/t0)^-nu from the layer's last write. Every effect draws from its
own seeded stream (:mod:`simulators.noise`) and is off in the ``ideal`` preset. A device clock
advances with writes, reads and the link, so drift happens between queries as on a bench.
"""

import copy
import math
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Literal, NamedTuple

import torch
from pydantic import Field

from devices.info import Activation, Capabilities, ConvShape, DeviceInfo, LayerSpec, ParamSpec
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
from simulators.conv import assemble, parse_convs, parse_image, patches, reference
from simulators.noise import NoiseStreams
from simulators.options import SimOptions

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
PCM_G_MAX_US = 25.0
BYTES_PER_VALUE = 4


class LastRead(NamedTuple):
    """A layer's last read, kept so the pairs that follow it on the same input skip repeating it."""

    input: torch.Tensor
    version: int
    rows: torch.Tensor
    sums: torch.Tensor | None


class CrossbarOptions(SimOptions):
    """Options of ``sim://crossbar``: topology and physics, each settable in the URL query."""

    activation: Activation = "relu"
    conv: str = Field("", description="conv layers before the dense ones, e.g. 16c3p2,32c3p2 "
                                      "(channels c kernel, optional p pool)")
    image: str = Field("", description="input image CxHxW for conv layers (default: a square of 1 or 3 channels)")
    pooling: Literal["avg", "max"] = Field("avg", description="pooling of conv layers")
    dac_bits: int = Field(0, ge=0, le=24, description="input DAC resolution (0: exact)")
    dac_clip: float = Field(1.0, gt=0, description="input DAC range +-")
    adc_bits: int = Field(0, ge=0, le=24, description="output ADC resolution per tile (0: exact)")
    adc_clip: float = Field(10.0, gt=0, description="ADC range +- in column-sum units")
    output_noise: float = Field(0.0, ge=0, description="additive Gaussian on column sums before the ADC")
    read_noise: float = Field(0.0, ge=0, description="per-read Gaussian weight noise, weight units")
    prog_noise: Literal["none", "percent", "pcm"] = Field("none", description="programming-noise model")
    prog_noise_percent: float = Field(3.0, ge=0, description="sigma in % of g_max for the percent model")
    on_off_ratio: float = Field(25.0, gt=1, description="g_max / g_min")
    drift_nu: float = Field(0.0, ge=0, description="mean drift exponent nu (0: no drift)")
    drift_nu_std: float = Field(0.0, ge=0, description="device-to-device spread of nu")
    drift_t0: float = Field(20.0, gt=0, description="drift reference time t0, seconds")
    stuck_at_min: float = Field(0.0, ge=0, le=1, description="fraction of devices stuck at g_min")
    stuck_at_max: float = Field(0.0, ge=0, le=1, description="fraction of devices stuck at g_max")
    tile_rows: int = Field(0, ge=0, description="inputs per tile, each tile with its own ADC (0: one tile)")
    ir_drop: float = Field(0.0, ge=0, lt=1, description="attenuation of a tile's farthest row")
    write_seconds: float = Field(0.0, ge=0, description="time to program one row, per verify iteration")
    write_verify: int = Field(1, ge=1, description="write-verify iterations per write")
    read_seconds: float = Field(0.0, ge=0, description="time of one read (one input vector)")
    link_bytes_per_second: float = Field(0.0, ge=0, description="link bandwidth (0: no link cost)")
    link_latency: float = Field(0.0, ge=0, description="link latency per message, seconds")

    def layer_count(self) -> int:
        return len(self.layers) - 1 + len([t for t in self.conv.split(",") if t.strip()])

    def parameter_count(self) -> int:
        """Weights and biases of every layer."""
        return sum(math.prod(p.shape) for spec in self.layer_specs() for p in spec.params)

    def layer_specs(self) -> list[LayerSpec]:
        """Conv layers first (from ``conv`` on ``image``), then dense layers of ``layers[1:]``."""
        specs = []
        width = self.layers[0]
        if self.conv.strip():
            for shape in parse_convs(self.conv, parse_image(self.image, width), self.pooling):
                specs.append(_layer(self, "conv", shape.patch, shape.out_channels,
                                    width, shape.out_channels * shape.out_height * shape.out_width, shape))
                width = specs[-1].outputs
        for n_out in self.layers[1:]:
            specs.append(_layer(self, "dense", width, n_out, width, n_out))
            width = n_out
        return specs

    @property
    def weight_effects(self) -> bool:
        """Effects that make every write land differently (no shortcut for perturbations)."""
        return self.prog_noise != "none" or self.stuck_at_min > 0 or self.stuck_at_max > 0


def quantize(t: torch.Tensor, bits: int, clip: float) -> torch.Tensor:
    """Signed uniform quantizer: clip to +-clip, 2**bits - 1 levels including 0."""
    step = clip / (2 ** (bits - 1) - 1)
    return torch.round(t.clamp(-clip, clip) / step) * step


def _layer(opts: CrossbarOptions, kind: str, rows: int, columns: int, inputs: int, outputs: int,
           conv: ConvShape | None = None) -> LayerSpec:
    """A layer whose array has ``rows`` inputs and ``columns`` outputs (weights in [-1, 1])."""
    return LayerSpec(
        kind=kind, inputs=inputs, outputs=outputs, activation=opts.activation, gain=1 / math.sqrt(rows),
        chunks=columns if conv else None, conv=conv,  # type: ignore[arg-type]
        params=(
            ParamSpec(name="weight", shape=(columns, rows), low=-1.0, high=1.0,
                      write_noise=write_noise_estimate(opts)),
            ParamSpec(name="bias", shape=(columns,), low=-1.0, high=1.0),
        ),
    )


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
        self._act = ACTIVATIONS[opts.activation]
        self._act_ = IN_PLACE[opts.activation]
        self.streams = NoiseStreams(opts.seed)
        self.clock = 0.0
        n_layers = len(self._info.layers)
        self._target: list[LayerParams | None] = [None] * n_layers
        self._programmed: list[torch.Tensor | None] = [None] * n_layers
        self._written_at = [0.0] * n_layers
        self._layer_writes = [0] * n_layers
        self._last_read: list[LastRead | None] = [None] * n_layers
        self._static = [self._draw_static(spec, i) for i, spec in enumerate(self._info.layers)]

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
        self._link(x.numel(), 0)
        acts = []
        a = x.to(self._dev)
        with torch.no_grad():
            for i, p in enumerate(params):
                a = self._evaluate(i, p, a)
                acts.append(a)
        self._counters.forwards += 1
        self._link(0, sum(a.numel() for a in acts))
        return acts

    def forward_layer(self, layer: int, params: LayerParams, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self._evaluate(layer, params, x.to(self._dev))

    def perturbed_pairs(
        self, layer: int, params: LayerParams, x: torch.Tensor, perturbation: Perturbation
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if perturbation.distribution == "bias" or perturbation.eps == 0:
            return self._array_reads(layer, params, x, perturbation)
        spec = self._info.layers[layer]
        n_dir = len(perturbation.seeds)
        queries = 2 * n_dir
        self._link(x.numel() + len(perturbation.seeds) + 4, 0)
        batch = len(x)
        with torch.no_grad():
            x, known_sums = self._read_rows(layer, x.to(self._dev), params["weight"].to(self._dev))
            v = perturbation.vectors(spec, self._dev)
            reach = perturbation.eps * (1.0 if perturbation.distribution == "rademacher" else _largest_magnitude(v))
            largest = max(_largest_magnitude(t) for t in params.values())
            if not self.options.weight_effects and largest + reach <= 1.0 + 1e-6:
                # Writes land exactly and nothing clips; the array's product is linear in its
                # conductances: (W +- eps V) x = W x +- eps V x, so P direction products serve 2P queries.
                along = split_chunks(spec, v)
                s0 = self._column_sums(layer, x, params["weight"].to(self._dev)) if known_sums is None else known_sums
                ds = self._column_sums(layer, x, along["weight"]).mul_(perturbation.eps)
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
                written = self._program(layer, shifted["weight"], sigma_at=params["weight"].to(self._dev))
                sums = self._column_sums(layer, x, written)
                bias = shifted["bias"]
            out = self._outputs(layer, self._act_(self._periphery(layer, sums, x, bias, owned=True)), batch)
        self._target[layer] = None  # the array now holds the last perturbed weights
        self._last_read[layer] = None
        self._layer_writes[layer] += queries
        self._tick(queries * self._write_time(spec) + queries * len(x) * self.options.read_seconds)
        self._counters.queries += queries
        self._counters.param_writes += queries
        self._counters.perturbation_batches += 1
        self._link(0, out.numel())
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
        check_layer_params(layer, spec, params)
        self._link(x.numel() + n_dir + 4, 0)
        with torch.no_grad():
            self._write_if_changed(layer, params)
            rows, sums = self._read_rows(layer, x.to(self._dev), params["weight"].to(self._dev))
            if sums is None:
                sums = self._column_sums(layer, rows, self._drifted(layer))
            base = params["bias"].to(self._dev)
            step = base.new_zeros(n_dir, *base.shape) if perturbation.eps == 0 else \
                perturbation.eps * split_chunks(spec, perturbation.vectors(spec, self._dev))["bias"]
            bias = clip_to_bounds(spec, {"weight": params["weight"], "bias": torch.cat([base + step, base - step])})
            reads = sums.expand(queries, *sums.shape)
            out = self._outputs(layer, self._act_(self._periphery(layer, reads, rows, bias["bias"])), len(x))
        self._tick(queries * len(rows) * self.options.read_seconds)
        self._counters.queries += queries
        self._counters.perturbation_batches += 1
        self._link(0, out.numel())
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
        self.clock += seconds

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue bit for bit."""
        return copy.deepcopy({
            "streams": self.streams.state_dict(), "clock": self.clock, "target": self._target,
            "programmed": self._programmed, "written_at": self._written_at,
            "layer_writes": self._layer_writes, "counters": asdict(self._counters),
        })

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = copy.deepcopy(state)
        self.streams.load_state_dict(state["streams"])
        self.clock = state["clock"]
        self._target, self._programmed = state["target"], state["programmed"]
        self._written_at, self._layer_writes = state["written_at"], state["layer_writes"]
        self._counters = Counters(**state["counters"])
        self._last_read = [None] * len(self._info.layers)

    # ----------------------------------------------------------------- physics

    def _evaluate(self, layer: int, params: LayerParams, x: torch.Tensor) -> torch.Tensor:
        """Write ``params`` if they changed, then read the layer on input ``x``."""
        self._write_if_changed(layer, params)
        weight = self._drifted(layer)
        rows = self._rows(layer, self._dac(x))
        sums = self._column_sums(layer, rows, weight)
        exact = not self.options.weight_effects and "nu_plus" not in self._static[layer]
        self._last_read[layer] = LastRead(x, x._version, rows, sums if exact else None)
        out = self._act_(self._periphery(layer, sums, rows, params["bias"].to(self._dev)))
        self._counters.queries += 1
        self._tick(len(rows) * self.options.read_seconds)
        return self._outputs(layer, out, len(x))

    def _write_if_changed(self, layer: int, params: LayerParams) -> None:
        """Program ``params`` unless the array already holds exactly their weights (the bias is digital)."""
        target = self._target[layer]
        if target is not None and torch.equal(target["weight"], params["weight"]):
            if not torch.equal(target["bias"], params["bias"]):
                self._target[layer] = {**target, "bias": params["bias"].detach().clone()}
                self._link(params["bias"].numel(), 0)
        else:
            self._target[layer] = {k: v.detach().clone() for k, v in params.items()}
            self._link(sum(v.numel() for v in params.values()), 0)
            self._programmed[layer] = self._program(layer, params["weight"].to(self._dev))
            self._written_at[layer] = self.clock
            self._layer_writes[layer] += 1
            self._counters.param_writes += 1
            self._tick(self._write_time(self._info.layers[layer]))

    def _read_rows(self, layer: int, x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What the array reads for input ``x`` and, when known, its exact column sums through ``weight``.

        Both come from the last read of this layer when it read this very input, unchanged
        (the host's base forward): its rows (DAC'd, and a conv layer's patches), and its sums
        while the array holds exactly ``weight`` with nothing but the ideal product in between.
        """
        last, target = self._last_read[layer], self._target[layer]
        if last is None or last.input is not x or last.version != x._version:
            return self._rows(layer, self._dac(x)), None
        if last.sums is None or target is None or not torch.equal(target["weight"], weight):
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

    def _program(self, layer: int, target: torch.Tensor, sigma_at: torch.Tensor | None = None) -> torch.Tensor:
        """Weights a write of ``target`` leaves on the array: programming noise, stuck devices.

        ``sigma_at`` gives the weights whose programming-noise sigma applies (a batch of
        perturbed writes uses its base weights: eps moves sigma by about 1 %).
        """
        opts = self.options
        w = target
        if opts.prog_noise != "none":
            sigma = self._prog_sigma(target if sigma_at is None else sigma_at)
            noise = self.streams.normal("write", "programming", tuple(w.shape)).to(self._dev)
            # into the noise's own fresh buffer: the target is never touched
            if isinstance(sigma, float):
                w = torch.add(target, noise, alpha=sigma, out=noise).clamp_(-1, 1)
            else:
                w = torch.addcmul(target, noise, sigma, out=noise).clamp_(-1, 1)
        static = self._static[layer]
        if "stuck_index" in static:
            flat = w.reshape(*w.shape[:-2], -1)
            if w is target:
                flat = flat.clone()
            cells = flat[..., static["stuck_index"]]
            g_plus, g_minus = self._pair(cells)
            g_plus = torch.where(static["stuck_plus"] >= 0, static["stuck_plus"], g_plus)
            g_minus = torch.where(static["stuck_minus"] >= 0, static["stuck_minus"], g_minus)
            flat[..., static["stuck_index"]] = (g_plus - g_minus) / self._span
            w = flat.reshape(w.shape)
        return w

    def _drifted(self, layer: int) -> torch.Tensor:
        """The programmed weights as read now: each device's conductance decays since the write."""
        w = self._programmed[layer]
        assert w is not None
        static = self._static[layer]
        if "nu_plus" not in static:
            return w
        factor = (self.clock - self._written_at[layer] + self.options.drift_t0) / self.options.drift_t0
        g_plus, g_minus = self._pair(w)
        log_f = math.log(factor)
        decayed_plus = g_plus * torch.exp(-static["nu_plus"] * log_f)
        decayed_minus = g_minus * torch.exp(-static["nu_minus"] * log_f)
        return (decayed_plus - decayed_minus) / self._span

    def _column_sums(self, layer: int, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Raw column sums per tile: (..., tiles, batch, outputs) for weights (..., outputs, inputs)."""
        opts = self.options
        static = self._static[layer]
        if "row_gain" in static:
            x = x * static["row_gain"]
        rows = opts.tile_rows or x.shape[-1]
        if rows >= x.shape[-1]:
            return torch.matmul(x, weight.transpose(-1, -2)).unsqueeze(-3)
        # one product per tile on column slices: BLAS reads the strided weights in place, no copy
        per_tile = [torch.matmul(x[:, start:start + rows], weight[..., start:start + rows].transpose(-1, -2))
                    for start in range(0, x.shape[-1], rows)]
        return torch.stack(per_tile, -3)

    def _periphery(self, layer: int, sums: torch.Tensor, x: torch.Tensor, bias: torch.Tensor,
                   owned: bool = False) -> torch.Tensor:
        """Read and output noise, per-tile ADC, tile sum, gain and bias: pre-activations.

        ``owned`` sums are the caller's scratch and may be overwritten (never a cached read).
        """
        opts = self.options
        if opts.read_noise > 0:
            # per-read weight noise sums over a tile's rows to N(0, sigma^2 |x_tile|^2) per output
            rows = opts.tile_rows or x.shape[-1]
            tiles = sums.shape[-3]
            xt = torch.nn.functional.pad(x, (0, tiles * rows - x.shape[-1])).reshape(len(x), tiles, rows)
            scale = opts.read_noise * xt.square().sum(-1).sqrt().T.unsqueeze(-1)
            noise = self.streams.normal("read", "read", tuple(sums.shape)).to(self._dev)
            sums = sums.addcmul_(noise, scale) if owned else torch.addcmul(sums, noise, scale)
            owned = True
        if opts.output_noise > 0:
            noise = self.streams.normal("read", "output", tuple(sums.shape)).to(self._dev)
            sums = torch.add(sums, noise, alpha=opts.output_noise, out=sums if owned else None)
            owned = True
        if opts.adc_bits:
            sums, owned = quantize(sums, opts.adc_bits, opts.adc_clip), True
        tiles = sums.squeeze(-3) if sums.shape[-3] == 1 else sums.sum(-3)
        out = tiles if owned or sums.shape[-3] > 1 else None
        return torch.add(bias.unsqueeze(-2), tiles, alpha=self._info.layers[layer].gain, out=out)

    def _dac(self, x: torch.Tensor) -> torch.Tensor:
        return quantize(x, self.options.dac_bits, self.options.dac_clip) if self.options.dac_bits else x

    def _draw_static(self, spec: LayerSpec, layer: int) -> dict[str, torch.Tensor]:
        """Per-device properties drawn once: drift exponents, stuck devices, IR-drop row gains."""
        opts = self.options
        shape = spec.params[0].shape  # the array: (columns, rows)
        out: dict[str, torch.Tensor] = {}
        if opts.drift_nu > 0:
            for side in ("plus", "minus"):
                nu = opts.drift_nu + self.streams.normal("static", f"drift/{layer}/{side}", shape, opts.drift_nu_std)
                out[f"nu_{side}"] = nu.clamp(min=0).to(self._dev)
        if opts.stuck_at_min > 0 or opts.stuck_at_max > 0:
            sides = {}
            for side in ("plus", "minus"):
                u = self.streams.uniform("static", f"stuck/{layer}/{side}", shape).reshape(-1)
                stuck = torch.full_like(u, -1.0)
                stuck[u < opts.stuck_at_min] = self._g_min
                stuck[(u >= opts.stuck_at_min) & (u < opts.stuck_at_min + opts.stuck_at_max)] = 1.0
                sides[side] = stuck
            index = torch.nonzero((sides["plus"] >= 0) | (sides["minus"] >= 0)).squeeze(1)
            out["stuck_index"] = index.to(self._dev)
            out["stuck_plus"] = sides["plus"][index].to(self._dev)
            out["stuck_minus"] = sides["minus"][index].to(self._dev)
        if opts.ir_drop > 0:
            rows = opts.tile_rows or shape[1]
            position = torch.arange(shape[1]) % rows
            out["row_gain"] = (1 - opts.ir_drop * position / max(rows - 1, 1)).to(self._dev)
        return out

    @property
    def _g_min(self) -> float:
        return 1 / self.options.on_off_ratio

    @property
    def _span(self) -> float:
        return 1 - self._g_min

    def _pair(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Conductances (fractions of g_max) of the differential pair holding weight ``w``."""
        return self._g_min + torch.relu(w) * self._span, self._g_min + torch.relu(-w) * self._span

    def _prog_sigma(self, w: torch.Tensor) -> torch.Tensor | float:
        """Programming-noise sigma of a weight, in weight units (both devices of the pair).

        One device of a pair sits at g_min, the other at g_min + |w| * span.
        """
        if self.options.prog_noise == "percent":
            return math.sqrt(2) * self.options.prog_noise_percent / 100 / self._span
        at_min = _pcm_sigma(torch.tensor(self._g_min)).item() ** 2
        sigma_on = _pcm_sigma(w.abs() * self._span + self._g_min)
        return sigma_on.square_().add_(at_min).sqrt_().div_(self._span)

    def _write_time(self, spec: LayerSpec) -> float:
        return spec.params[0].shape[0] * self.options.write_seconds * self.options.write_verify

    def _tick(self, seconds: float) -> None:
        self.clock += seconds
        self._counters.device_seconds += seconds

    def _link(self, values_out: int, values_in: int) -> None:
        opts = self.options
        self._counters.bytes_sent += values_out * BYTES_PER_VALUE
        self._counters.bytes_received += values_in * BYTES_PER_VALUE
        if opts.link_bytes_per_second > 0:
            seconds = opts.link_latency + (values_out + values_in) * BYTES_PER_VALUE / opts.link_bytes_per_second
            self.clock += seconds
            self._counters.extra["link_seconds"] = self._counters.extra.get("link_seconds", 0.0) + seconds


def write_noise_estimate(opts: CrossbarOptions) -> float:
    """Typical programming-noise sigma in weight units, for ``ParamSpec.write_noise``."""
    if opts.prog_noise == "none":
        return 0.0
    if opts.prog_noise == "percent":
        return math.sqrt(2) * opts.prog_noise_percent / 100 / (1 - 1 / opts.on_off_ratio)
    g = torch.tensor([0.5, 1 / opts.on_off_ratio])
    return float(_pcm_sigma(g).square().sum().sqrt()) / (1 - 1 / opts.on_off_ratio)


def _pcm_sigma(g: torch.Tensor) -> torch.Tensor:
    """PCM programming noise (aihwkit's fit) in fractions of g_max, for conductance fraction g."""
    return (0.263 + 1.965 * g - 1.173 * g.square()) / PCM_G_MAX_US


def _largest_magnitude(t: torch.Tensor) -> float:
    low, high = torch.aminmax(t)
    return max(-low.item(), high.item())
