"""Named device-physics presets for ``sim://KIND?preset=NAME`` (every option overridable in the URL).

A preset is built from typed option instances, each citing where its values come from (a crossbar
preset from each effect's own options, a mesh preset from slices of the mesh's options), and is
validated as a whole when this module loads: a misspelt option, a bad value or a value set twice
fails at import, not when a URL opens. README.md tabulates the values and their sources (Simulated
device physics, Simulated photonic mesh).
"""

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from simulators.crossbar.array import TileOptions
from simulators.crossbar.clock import TimingOptions
from simulators.crossbar.conductance import ConductanceOptions
from simulators.crossbar.drift import DriftOptions
from simulators.crossbar.faults import StuckOptions
from simulators.crossbar.inputs import DacOptions
from simulators.crossbar.options import CrossbarPhysics
from simulators.crossbar.programming import ProgrammingNoiseOptions
from simulators.crossbar.readout import AdcOptions, OutputNoiseOptions, ReadNoiseOptions
from simulators.photonic import PhotonicPhysics


@dataclass(frozen=True)
class Cited:
    """Option values and where they come from."""

    options: BaseModel
    source: str

    def values(self) -> dict[str, Any]:
        """The values this part sets (only those given, not the defaults)."""
        return self.options.model_dump(exclude_unset=True)


class Preset:
    """A named device: cited parts, checked to set each option once and validated together as ``kind``."""

    def __init__(self, kind: type[BaseModel], *parts: Cited) -> None:
        values: dict[str, Any] = {}
        for part in parts:
            if not part.source.strip():
                raise ValueError(f"{part.options!r} cites no source")
            twice = values.keys() & part.values().keys()
            if twice:
                raise ValueError(f"preset sets {sorted(twice)} twice")
            values.update(part.values())
        self.parts = parts
        self.options = kind.model_validate(values)

    def values(self) -> dict[str, Any]:
        """Option values the preset sets, for a URL's options to override."""
        return self.options.model_dump(exclude_unset=True)


_CROSSBAR_PERIPHERY = (
    Cited(DacOptions(dac_bits=8, dac_clip=1.0), "aihwkit standard HWA preset; CrossSim"),
    Cited(AdcOptions(adc_bits=8, adc_clip=10.0), "aihwkit (library default 9 bit, +-12)"),
    Cited(OutputNoiseOptions(output_noise=0.04), "aihwkit out_noise"),
    Cited(TileOptions(tile_rows=256), "NeuRRAM, HERMES"),
)
_WRITE_VERIFY = TimingOptions(write_seconds=1e-7, write_verify=5, read_seconds=1e-6)
_STUCK = StuckOptions(stuck_at_min=0.0025, stuck_at_max=0.0025)

CROSSBAR_PRESETS: dict[str, Preset] = {
    "ideal": Preset(CrossbarPhysics),
    "rram": Preset(
        CrossbarPhysics, *_CROSSBAR_PERIPHERY,
        Cited(ReadNoiseOptions(read_noise=0.01), "aihwkit short-term weight noise, RRAM"),
        Cited(ProgrammingNoiseOptions(prog_noise="percent", prog_noise_percent=2.0), "CrossSim RRAM fits 1.6-2.5 %"),
        Cited(ConductanceOptions(on_off_ratio=10.0), "NeuroSim, CrossSim"),
        Cited(_STUCK, "0.5 % stuck, MemTorch range (rate unverified)"),
        Cited(_WRITE_VERIFY, "memristor write-verify, several pulses per cell"),
    ),
    "pcm": Preset(
        CrossbarPhysics, *_CROSSBAR_PERIPHERY,
        Cited(ReadNoiseOptions(read_noise=0.0175), "aihwkit PCM short-term noise"),
        Cited(ProgrammingNoiseOptions(prog_noise="pcm"), "aihwkit PCM polynomial, g_max = 25 uS"),
        Cited(ConductanceOptions(on_off_ratio=25.0), "NeuroSim, CrossSim"),
        Cited(DriftOptions(drift_nu=0.05, drift_nu_std=0.01, drift_t0=20.0), "aihwkit PCM drift"),
        Cited(_STUCK, "0.5 % stuck, MemTorch range (rate unverified)"),
        Cited(_WRITE_VERIFY, "memristor write-verify, several pulses per cell"),
    ),
}

PHOTONIC_PRESETS: dict[str, Preset] = {
    "ideal": Preset(PhotonicPhysics),
    "silicon": Preset(  # thermo-optic silicon photonics, uncalibrated
        PhotonicPhysics,
        Cited(PhotonicPhysics(phase_bits=8), "L2ight configs"),
        Cited(PhotonicPhysics(phase_bias=True), "U[0, 2 pi) per shifter until calibrated (L2ight)"),
        Cited(PhotonicPhysics(gain_variation=0.002), "L2ight"),
        Cited(PhotonicPhysics(crosstalk=0.005), "L2ight / torchonn"),
        Cited(PhotonicPhysics(phase_noise=0.01), "0.005-0.02 rad (unverified)"),
        Cited(PhotonicPhysics(thermal_walk=0.001), "slow thermal drift (unverified)"),
        Cited(PhotonicPhysics(insertion_loss_db=0.2), "0.1-0.5 dB per MZI (unverified)"),
        Cited(PhotonicPhysics(shot_noise=0.01, thermal_noise=0.002), "photontorch defaults, simplified"),
        Cited(PhotonicPhysics(adc_bits=8, adc_clip=8.0), "an 8-bit camera / ADC (unsourced)"),
        Cited(PhotonicPhysics(write_seconds=1e-5, read_seconds=1e-3),
              "thermo-optic settle 2-50 us; camera / ADC 1-20 ms per read"),
    ),
}

PRESETS = {"crossbar": CROSSBAR_PRESETS, "photonic": PHOTONIC_PRESETS}


def preset_options(kind: str, name: str) -> dict[str, Any]:
    """Option values of preset ``name`` of simulator ``kind``; unknown names raise with the list."""
    if name not in PRESETS[kind]:
        raise KeyError(f"unknown preset {name!r} for sim://{kind}; choose one of {sorted(PRESETS[kind])}")
    return PRESETS[kind][name].values()
