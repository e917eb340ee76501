"""Named device-physics presets for ``sim://crossbar?preset=NAME`` (every field overridable).

Values and sources are tabulated in README.md (Simulated device physics).
"""

from typing import Any

_CROSSBAR_PERIPHERY: dict[str, Any] = {
    "dac_bits": 8, "dac_clip": 1.0,          # aihwkit standard HWA preset, CrossSim
    "adc_bits": 8, "adc_clip": 10.0,         # aihwkit (library default 9 bit / +-12)
    "output_noise": 0.04,                    # aihwkit out_noise
    "tile_rows": 256,                        # NeuRRAM, HERMES tiles
    "read_seconds": 1e-6,
}

CROSSBAR_PRESETS: dict[str, dict[str, Any]] = {
    "ideal": {},
    "rram": {
        **_CROSSBAR_PERIPHERY,
        "read_noise": 0.01,                  # aihwkit short-term weight noise, RRAM
        "prog_noise": "percent", "prog_noise_percent": 2.0,   # CrossSim RRAM fits 1.6-2.5 %
        "on_off_ratio": 10.0,                # NeuroSim, CrossSim
        "stuck_at_min": 0.0025, "stuck_at_max": 0.0025,       # 0.5 % stuck (MemTorch range)
        "write_seconds": 1e-7, "write_verify": 5,
    },
    "pcm": {
        **_CROSSBAR_PERIPHERY,
        "read_noise": 0.0175,                # aihwkit PCM short-term noise
        "prog_noise": "pcm",                 # aihwkit PCM polynomial, g_max = 25 uS
        "on_off_ratio": 25.0,
        "drift_nu": 0.05, "drift_nu_std": 0.01, "drift_t0": 20.0,   # aihwkit PCM drift
        "stuck_at_min": 0.0025, "stuck_at_max": 0.0025,
        "write_seconds": 1e-7, "write_verify": 5,
    },
}

PHOTONIC_PRESETS: dict[str, dict[str, Any]] = {
    "ideal": {},
    "silicon": {                             # thermo-optic silicon photonics, uncalibrated
        "phase_bits": 8,                     # L2ight configs
        "phase_bias": True,                  # U[0, 2 pi) per shifter until calibrated (L2ight)
        "gain_variation": 0.002,             # L2ight
        "crosstalk": 0.005,                  # L2ight / torchonn
        "phase_noise": 0.01,                 # 0.005-0.02 rad (unverified)
        "thermal_walk": 0.001,
        "insertion_loss_db": 0.2,            # 0.1-0.5 dB per MZI (unverified)
        "shot_noise": 0.01, "thermal_noise": 0.002,
        "adc_bits": 8, "adc_clip": 8.0,
        "write_seconds": 1e-5,               # thermo-optic settle 2-50 us
        "read_seconds": 1e-3,                # camera / ADC 1-20 ms per read
    },
}

PRESETS = {"crossbar": CROSSBAR_PRESETS, "photonic": PHOTONIC_PRESETS}


def preset_options(kind: str, name: str) -> dict[str, Any]:
    """Option values of preset ``name`` of simulator ``kind``; unknown names raise with the list."""
    if name not in PRESETS[kind]:
        raise KeyError(f"unknown preset {name!r} for sim://{kind}; choose one of {sorted(PRESETS[kind])}")
    return dict(PRESETS[kind][name])
