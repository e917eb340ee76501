"""Conv layers on a crossbar: the array is read once per image patch, then the maps are pooled.

A conv layer's array has one row per patch input (``in_channels * kernel**2``) and one column
per output channel, so a conv evaluation is the same matrix-vector pipeline as a dense layer,
with the patches of every image as the batch. These helpers turn images into patch rows and the
per-patch outputs back into pooled, channel-major activations.
"""

import re
from collections.abc import Callable

import torch
import torch.nn.functional as F
from pydantic import ValidationError

from devices.info import ConvShape

TOKEN = re.compile(r"^(\d+)c(\d+)(?:p(\d+))?$")


def parse_convs(text: str, image: tuple[int, int, int], pooling: str = "avg") -> list[ConvShape]:
    """Conv layers from ``16c3p2,32c3p2`` (channels ``c`` kernel, optional ``p`` pool) on an image.

    ``image`` is (channels, height, width) of the input; each layer's output is the next input.
    """
    shapes: list[ConvShape] = []
    channels, height, width = image
    for token in filter(None, (t.strip() for t in text.split(","))):
        match = TOKEN.match(token)
        if match is None:
            raise ValueError(f"conv layer {token!r} is not CHANNELScKERNEL[pPOOL], e.g. 16c3p2")
        out, kernel, pool = int(match[1]), int(match[2]), int(match[3] or 1)
        try:
            shape = ConvShape(in_channels=channels, out_channels=out, height=height, width=width,
                              kernel=kernel, pool=pool, pooling=pooling)  # type: ignore[arg-type]
        except ValidationError as err:
            reason = "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
            raise ValueError(f"conv layer {token!r} (layer {len(shapes) + 1}, on a {height}x{width} map): "
                             f"{reason}") from None
        shapes.append(shape)
        channels, height, width = out, shape.out_height, shape.out_width
    return shapes


def parse_image(text: str, features: int) -> tuple[int, int, int]:
    """``CxHxW``, or inferred from the input width: a square of 1 or 3 channels."""
    if text:
        try:
            c, h, w = (int(v) for v in text.lower().split("x"))
        except ValueError:
            raise ValueError(f"image {text!r} is not CHANNELSxHEIGHTxWIDTH, e.g. 1x28x28") from None
        if c * h * w != features:
            raise ValueError(f"image {text} holds {c * h * w} values but the input width is {features}")
        return c, h, w
    for channels in (1, 3):
        side = round((features / channels) ** 0.5)
        if channels * side * side == features:
            return channels, side, side
    raise ValueError(f"cannot infer an image shape from {features} inputs; give image=CxHxW")


def patches(shape: ConvShape, x: torch.Tensor) -> torch.Tensor:
    """Flattened images (B, C*H*W) to patch rows (B*H*W, C*k*k), zero-padded at the borders."""
    images = x.reshape(len(x), shape.in_channels, shape.height, shape.width)
    cols = F.unfold(images, shape.kernel, padding=shape.kernel // 2)  # (B, patch, H*W)
    return cols.transpose(1, 2).reshape(-1, shape.patch)


def assemble(shape: ConvShape, rows: torch.Tensor, batch: int) -> torch.Tensor:
    """Per-patch outputs (..., B*H*W, C_out) to pooled channel-major activations (..., B, outputs).

    The maps are pooled in the patches' own (channels-last) layout, so only the pooled maps
    are copied into channel-major order.
    """
    lead = rows.shape[:-2]
    maps = rows.reshape(-1, shape.height, shape.width, shape.out_channels).permute(0, 3, 1, 2)
    if shape.pool > 1:
        pool = F.avg_pool2d if shape.pooling == "avg" else F.max_pool2d
        maps = pool(maps, shape.pool)
    return maps.contiguous().reshape(*lead, batch, -1)


def reference(shape: ConvShape, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
              gain: float, activation: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The layer as torch's conv2d computes it (autograd baselines, and tests of the patch path)."""
    images = x.reshape(len(x), shape.in_channels, shape.height, shape.width)
    kernels = weight.reshape(shape.out_channels, shape.in_channels, shape.kernel, shape.kernel)
    maps = activation(gain * F.conv2d(images, kernels, padding=shape.kernel // 2) + bias[:, None, None])
    if shape.pool > 1:
        maps = (F.avg_pool2d if shape.pooling == "avg" else F.max_pool2d)(maps, shape.pool)
    return maps.reshape(len(x), -1)
