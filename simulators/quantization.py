"""Quantizers shared by the simulated converters: a crossbar's DAC and ADC, a mesh's phase DAC and ADC."""

import torch


def quantize(t: torch.Tensor, bits: int, clip: float) -> torch.Tensor:
    """Signed uniform quantizer: clip to +-clip, 2**bits - 1 levels including 0."""
    step = clip / (2 ** (bits - 1) - 1)
    return t.clamp(-clip, clip).div_(step).round_().mul_(step)


def quantize_periodic(t: torch.Tensor, bits: int, period: float) -> torch.Tensor:
    """Periodic quantizer: 2**bits levels over one period, wrapped into [0, period)."""
    step = period / 2 ** bits
    return torch.round(t / step) % 2 ** bits * step
