"""A simulated photonic network: each layer a rectangular (Clements) mesh of MZIs.

Layer ``l`` has ``N = max(inputs, outputs)`` optical modes and ``N (N - 1) / 2`` Mach-Zehnder
interferometers in N columns, each with an internal phase theta and an external phase phi, the
device's parameters (periodic, [0, 2 pi)). The input vector drives the amplitudes of the first
``inputs`` modes; photodetectors measure the intensity of the first ``outputs`` modes (square-law
detection is the layer's nonlinearity). Every phase moves every output, so chunks cannot be spliced:
the N (N - 1) phases are split into N equal chunks queried one at a time.

Physics, each effect from its own seeded stream and off in the ideal device: phase DAC
quantization, static phase bias (uncalibrated shifters), thermo-optic gain variation, nearest-
neighbour thermal crosstalk, phase noise per read, a slow thermal random walk, insertion loss
per MZI, shot and thermal detector noise, and an ADC.
"""

import copy
import math
from dataclasses import asdict
from typing import Any

import torch
from pydantic import Field

from devices.info import Capabilities, DeviceInfo, LayerSpec, ParamSpec
from devices.interface import Counters, Device, LayerParams, Perturbation, check_params, clip_to_bounds
from simulators.noise import NoiseStreams
from simulators.options import SimOptions, StrictOptions
from simulators.quantization import quantize, quantize_periodic

TWO_PI = 2 * math.pi


class PhotonicPhysics(StrictOptions):
    """The mesh's physics: what a photonic preset sets (all off by default)."""

    phase_bits: int = Field(0, ge=0, le=24, description="phase DAC resolution over 2 pi (0: exact)")
    phase_bias: bool = Field(False, description="static phase offset U[0, 2 pi) per shifter (uncalibrated)")
    gain_variation: float = Field(0.0, ge=0, description="relative thermo-optic efficiency spread")
    crosstalk: float = Field(0.0, ge=0, description="fraction of a neighbour heater's phase picked up")
    phase_noise: float = Field(0.0, ge=0, description="phase noise per read, rad")
    thermal_walk: float = Field(0.0, ge=0, description="phase random walk, rad per sqrt(second)")
    insertion_loss_db: float = Field(0.0, ge=0, description="loss per MZI, dB")
    shot_noise: float = Field(0.0, ge=0, description="detector shot noise: sigma = shot_noise * sqrt(I)")
    thermal_noise: float = Field(0.0, ge=0, description="detector thermal noise sigma")
    adc_bits: int = Field(0, ge=0, le=24, description="detector ADC resolution (0: exact)")
    adc_clip: float = Field(8.0, gt=0, description="ADC full scale, intensity units")
    write_seconds: float = Field(0.0, ge=0, description="thermo-optic settle time per write")
    read_seconds: float = Field(0.0, ge=0, description="time of one read (one input vector)")

    def parameter_count(self) -> int:
        """Two phases per MZI: N (N - 1) for a mesh of N modes."""
        return sum(n * (n - 1) for n in map(max, self.layers[:-1], self.layers[1:]))


class PhotonicOptions(PhotonicPhysics, SimOptions):
    """Options of ``sim://photonic``, each settable in the URL query."""

    layers: list[int] = Field([64, 64, 64], description="widths, input first")
    chunks: int = Field(0, ge=0, description="phase chunks per layer, queried one at a time "
                        "(0: one per mode); must divide modes * (modes - 1)")


def clements_columns(modes: int) -> list[torch.Tensor]:
    """The upper mode of every MZI, column by column, in the rectangular (Clements) layout."""
    return [torch.arange(c % 2, modes - 1, 2) for c in range(modes)]


def propagate(field: torch.Tensor, theta: torch.Tensor, phi: torch.Tensor, columns: list[torch.Tensor],
              loss: float = 1.0) -> torch.Tensor:
    """Send complex amplitudes (..., batch, modes) through a mesh with phases (..., n_mzi).

    An MZI on modes (i, i+1) is coupler, internal phase theta, coupler, external phase phi:
    T = 1/2 [[a (t - 1), i (t + 1)], [i a (t + 1), 1 - t]] with t = e^{i theta}, a = e^{i phi}.
    """
    start = 0
    for top in columns:
        count = len(top)
        t = torch.polar(torch.ones_like(theta[..., start:start + count]), theta[..., start:start + count]).unsqueeze(-2)
        a = torch.polar(torch.ones_like(phi[..., start:start + count]), phi[..., start:start + count]).unsqueeze(-2)
        start += count
        e0, e1 = field[..., top], field[..., top + 1]
        new0 = 0.5 * (a * (t - 1) * e0 + 1j * (t + 1) * e1)
        new1 = 0.5 * (1j * a * (t + 1) * e0 + (1 - t) * e1)
        field = field.clone()
        field[..., top] = new0 * loss
        field[..., top + 1] = new1 * loss
    return field


class SimulatedPhotonicMesh(Device):
    """In-process photonic network of MZI meshes with photodetection."""

    def __init__(self, options: PhotonicOptions | None = None, preset: str = "ideal") -> None:
        self.options = opts = options or PhotonicOptions()
        if len(opts.layers) < 2 or min(opts.layers) < 2:
            raise ValueError("give at least two widths of 2 or more, input first")
        self.preset = preset
        self._dev = torch.device(opts.torch_device)
        layers = []
        self._modes = []
        for n_in, n_out in zip(opts.layers[:-1], opts.layers[1:]):
            modes = max(n_in, n_out)
            self._modes.append(modes)
            n_mzi = modes * (modes - 1) // 2
            chunks = opts.chunks or modes
            if (2 * n_mzi) % chunks:
                raise ValueError(f"chunks={chunks} does not divide the {2 * n_mzi} phases of a {modes}-mode mesh")
            layers.append(LayerSpec(
                kind="mesh", inputs=n_in, outputs=n_out, activation="identity", spliceable=False,
                chunks=chunks,
                params=(ParamSpec(name="phases", shape=(n_mzi, 2), low=0.0, high=TWO_PI, periodic=True,
                                  resolution=TWO_PI / 2 ** opts.phase_bits if opts.phase_bits else 0.0),),
            ))
        self._info = DeviceInfo(
            identity=f"hil simulated photonic mesh {'x'.join(map(str, opts.layers))} ({preset})",
            firmware="sim", layers=tuple(layers), max_batch=opts.max_batch,
            capabilities=Capabilities(differentiable=True),
        )
        self._columns = [clements_columns(m) for m in self._modes]
        self._counters = Counters()
        self.streams = NoiseStreams(opts.seed, opts.noise, self._dev)
        self.clock = 0.0
        self._walk = [torch.zeros(spec.params[0].shape) for spec in layers]
        self._walk_time = 0.0
        self._static = [self._draw_static(i, spec) for i, spec in enumerate(layers)]

    def info(self) -> DeviceInfo:
        return self._info

    @property
    def counters(self) -> Counters:
        self._counters.extra["device_clock_seconds"] = self.clock
        return self._counters

    def forward(self, params: list[LayerParams], x: torch.Tensor) -> list[torch.Tensor]:
        check_params(self._info, params)
        acts = []
        a = x.to(self._dev)
        with torch.no_grad():
            for i, p in enumerate(params):
                a = self._evaluate(i, p["phases"].unsqueeze(0), a)[0]
                acts.append(a)
        self._counters.forwards += 1
        return acts

    def forward_layer(self, layer: int, params: LayerParams, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self._evaluate(layer, params["phases"].unsqueeze(0), x.to(self._dev))[0]

    def perturbed_pairs(self, layer: int, params: LayerParams, x: torch.Tensor,
                        perturbation: Perturbation) -> tuple[torch.Tensor, torch.Tensor]:
        spec = self._info.layers[layer]
        n_dir = len(perturbation.seeds)
        with torch.no_grad():
            step = perturbation.eps * perturbation.vectors(spec, self._dev).reshape(n_dir, *spec.params[0].shape)
            phases = params["phases"].to(self._dev)
            shifted = clip_to_bounds(spec, {"phases": torch.cat([phases + step, phases - step])})["phases"]
            out = self._evaluate(layer, shifted, x.to(self._dev))
        self._counters.perturbation_batches += 1
        return out[:n_dir], out[n_dir:]

    def differentiable_layer(self, layer: int, params: LayerParams, x: torch.Tensor) -> torch.Tensor:
        """Autograd forward of one ideal mesh, for the simulator-only baselines."""
        self._counters.queries += 1
        spec = self._info.layers[layer]
        phases = params["phases"]
        field = self._inject(layer, x.to(self._dev))
        out = propagate(field, phases[..., 0], phases[..., 1], self._columns[layer])
        return out[..., :spec.outputs].abs().square()

    def wait(self, seconds: float) -> None:
        """Let time pass on the bench: the thermal random walk continues."""
        self.clock += seconds

    def state_dict(self) -> dict[str, Any]:
        return copy.deepcopy({"streams": self.streams.state_dict(), "clock": self.clock, "walk": self._walk,
                              "walk_time": self._walk_time, "counters": asdict(self._counters)})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = copy.deepcopy(state)
        self.streams.load_state_dict(state["streams"])
        self.clock, self._walk, self._walk_time = state["clock"], state["walk"], state["walk_time"]
        self._counters = Counters(**state["counters"])

    def _evaluate(self, layer: int, phases: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Write Q phase settings (Q, n_mzi, 2) and read each on batch ``x``: (Q, batch, outputs)."""
        opts = self.options
        spec = self._info.layers[layer]
        queries = phases.shape[0]
        self._tick(queries * (opts.write_seconds + len(x) * opts.read_seconds))
        effective = self._effective_phases(layer, phases)
        if opts.phase_noise > 0:
            effective = effective + self.streams.normal("read", f"phase/{layer}", tuple(effective.shape),
                                                        opts.phase_noise)
        loss = 10 ** (-opts.insertion_loss_db / 20)
        field = self._inject(layer, x).expand(queries, *x.shape[:-1], self._modes[layer])
        out = propagate(field, effective[..., 0], effective[..., 1], self._columns[layer], loss)
        intensity = out[..., :spec.outputs].abs().square()
        if opts.shot_noise > 0:
            intensity = intensity + opts.shot_noise * intensity.sqrt() * self.streams.normal(
                "read", "shot", tuple(intensity.shape))
        if opts.thermal_noise > 0:
            intensity = intensity + self.streams.normal("read", "thermal", tuple(intensity.shape),
                                                        opts.thermal_noise)
        # the receiver's transimpedance gain undoes the mesh's nominal loss (N columns of MZIs),
        # amplifying detector noise with the signal, so the ADC range matches a lossless mesh
        intensity = intensity * 10 ** (opts.insertion_loss_db * self._modes[layer] / 10)
        if opts.adc_bits:
            intensity = quantize(intensity, opts.adc_bits, opts.adc_clip)
        self._counters.queries += queries
        self._counters.param_writes += queries
        return intensity

    def _effective_phases(self, layer: int, phases: torch.Tensor) -> torch.Tensor:
        """Phases the light sees: DAC, gain variation, crosstalk, static bias, thermal walk."""
        opts = self.options
        static = self._static[layer]
        if opts.phase_bits:
            phases = quantize_periodic(phases, opts.phase_bits, TWO_PI)
        if opts.gain_variation > 0:
            phases = phases * static["gain"]
        if opts.crosstalk > 0:
            # heaters of neighbouring MZIs in the phase list sit side by side on the chip
            neighbours = torch.zeros_like(phases)
            neighbours[..., 1:, :] += phases[..., :-1, :]
            neighbours[..., :-1, :] += phases[..., 1:, :]
            phases = phases + opts.crosstalk * neighbours
        if opts.phase_bias:
            phases = phases + static["bias"]
        if opts.thermal_walk > 0:
            self._advance_walk()
            phases = phases + self._walk[layer].to(self._dev)
        return phases

    def _advance_walk(self) -> None:
        elapsed = self.clock - self._walk_time
        if elapsed <= 0:
            return
        for i, walk in enumerate(self._walk):
            walk += self.streams.normal("time", f"walk/{i}", tuple(walk.shape),
                                        self.options.thermal_walk * math.sqrt(elapsed)).cpu()
        self._walk_time = self.clock

    def _inject(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        field = torch.zeros(*x.shape[:-1], self._modes[layer], dtype=torch.complex64, device=self._dev)
        field[..., :x.shape[-1]] = x.to(torch.float32)
        return field

    def _draw_static(self, layer: int, spec: LayerSpec) -> dict[str, torch.Tensor]:
        shape = spec.params[0].shape
        out = {}
        if self.options.gain_variation > 0:
            out["gain"] = (1 + self.streams.static(f"gain/{layer}").normal(shape,
                                                                           self.options.gain_variation)).to(self._dev)
        if self.options.phase_bias:
            out["bias"] = (self.streams.static(f"bias/{layer}").uniform(shape) * TWO_PI).to(self._dev)
        return out

    def _tick(self, seconds: float) -> None:
        self.clock += seconds
        self._counters.device_seconds += seconds
