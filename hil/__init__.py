"""hil: hardware-in-the-loop training with Mono-Forward and zeroth-order directional derivatives."""

__version__ = "0.1.0"
