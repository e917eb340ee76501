"""What every bench link (serial, VISA) shares: the host's copy of the device state, queries
built on a link's few primitives, and link statistics.

A link subclass moves bytes: it writes parameter arrays and inputs, runs FORWARD and
PERTURBED_FORWARD, and reconnects. This class decides *what* to send (only what changed since
the device last confirmed it), splits batches at ``max_batch``, checks bounds before anything
leaves the host, shapes the replies and counts queries.
"""

import collections
import json
import logging
import time
from abc import abstractmethod
from dataclasses import dataclass, field

import torch
from pydantic import ValidationError

from devices.errors import CapabilityError, DeviceConfigError, LinkError
from devices.info import DeviceInfo, LayerSpec
from devices.interface import Counters, Device, LayerParams, Perturbation, check_layer_params, check_params
from devices.messages import SIGN_MINUS, SIGN_PLUS, PerturbedForward, ProtocolError, unpack_values

ParamWrite = tuple[int, int, torch.Tensor]  # layer, index of the array in the layer's spec, values
InputWrite = tuple[int, torch.Tensor]  # layer, (batch, inputs)

log = logging.getLogger(__name__)


@dataclass
class LinkStats:
    """What the link did: bytes, frames, round trips, and everything that went wrong."""

    bytes_sent: int = 0
    bytes_received: int = 0
    payload_bytes_received: int = 0
    frames_sent: int = 0
    frames_received: int = 0
    resends: int = 0
    probes: int = 0
    timeouts: int = 0
    crc_errors: int = 0
    reconnects: int = 0
    round_trips: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=10000))

    def as_dict(self) -> dict[str, float]:
        """Counts, and round-trip p50/p99 in ms once any reply has arrived."""
        out = {f"link_{k}": float(v) for k, v in self.__dict__.items() if k != "round_trips"}
        rtts = sorted(self.round_trips)
        if rtts:
            out["link_rtt_p50_ms"] = 1000 * rtts[len(rtts) // 2]
            out["link_rtt_p99_ms"] = 1000 * rtts[min(len(rtts) - 1, int(0.99 * len(rtts)))]
        return out


class BenchDevice(Device):
    """A device across a link; subclasses open the link and fill in the primitives below."""

    reopen_errors: tuple[type[BaseException], ...] = (LinkError,)

    def __init__(self, url: str) -> None:
        self.url = url
        self.identity = ""
        self.reconnect_tries = 10
        self.stats = LinkStats()
        self._counters = Counters()
        self._info: DeviceInfo | None = None
        self._params: list[LayerParams] = []
        self._inputs: list[torch.Tensor | None] = []
        self._warned_bias = False

    # ----------------------------------------------------------------- link primitives

    @abstractmethod
    def _reopen(self) -> str:
        """Open the link again and handshake; returns the identity the device gives."""

    @abstractmethod
    def _send_writes(self, params: list[ParamWrite], inputs: list[InputWrite]) -> None:
        """Write these arrays and inputs (in any order, pipelined where the link can)."""

    @abstractmethod
    def _measure_forward(self) -> bytes:
        """FORWARD on layer 0's input: every layer's activations as f32 bytes."""

    @abstractmethod
    def _measure_perturbed(self, request: PerturbedForward) -> bytes:
        """PERTURBED_FORWARD: the requested blocks as f32 bytes."""

    # ----------------------------------------------------------------- the Device contract

    def info(self) -> DeviceInfo:
        assert self._info is not None
        return self._info

    @property
    def counters(self) -> Counters:
        self._counters.bytes_sent = self.stats.bytes_sent
        self._counters.bytes_received = self.stats.bytes_received
        self._counters.extra.update(self.stats.as_dict())
        return self._counters

    def forward(self, params: list[LayerParams], x: torch.Tensor) -> list[torch.Tensor]:
        info = self.info()
        check_params(info, params)
        outputs = [spec.outputs for spec in info.layers]
        pieces = []
        for part in x.split(info.max_batch):
            self._write_state(dict(enumerate(params)), {0: part})
            values = unpack_values(self._measure_forward(), len(part) * sum(outputs)).to(x.device)
            split = values.split([len(part) * n for n in outputs])
            pieces.append([v.reshape(len(part), n) for v, n in zip(split, outputs)])
        self._counters.queries += len(outputs) * len(pieces)
        self._counters.forwards += len(pieces)
        return [torch.cat(layer) for layer in zip(*pieces)]

    def perturbed_pairs(
        self, layer: int, params: LayerParams, x: torch.Tensor, perturbation: Perturbation
    ) -> tuple[torch.Tensor, torch.Tensor]:
        spec = self._layer(layer)
        check_layer_params(layer, spec, params)
        if perturbation.distribution == "bias" and not self.info().capabilities.bias_perturbation:
            if not self._warned_bias:
                self._warned_bias = True
                log.warning("%s has no bias perturbations (capability bit 3): writing each layer's bias "
                            "array at base +- eps and measuring at eps 0 instead", self.url)
            return super().perturbed_pairs(layer, params, x, perturbation)
        request = PerturbedForward(layer, perturbation.distribution, SIGN_PLUS | SIGN_MINUS, perturbation.eps,
                                   perturbation.chunk, perturbation.seeds)
        n_dir = len(perturbation.seeds)
        pluses, minuses = [], []
        for part in x.split(self.info().max_batch):
            self._write_state({layer: params}, {layer: part})
            values = unpack_values(self._measure_perturbed(request), 2 * n_dir * len(part) * spec.outputs)
            values = values.to(x.device).reshape(2, n_dir, len(part), spec.outputs)
            pluses.append(values[0])
            minuses.append(values[1])
        self._counters.queries += request.queries
        self._counters.perturbation_batches += 1
        return torch.cat(pluses, dim=1), torch.cat(minuses, dim=1)

    def forward_layer(self, layer: int, params: LayerParams, x: torch.Tensor) -> torch.Tensor:
        """One layer on an injected input: its changed arrays written, then a PERTURBED_FORWARD at eps 0."""
        spec = self._layer(layer)
        check_layer_params(layer, spec, params)
        request = PerturbedForward(layer, "rademacher", SIGN_PLUS, 0.0, None, (0,))
        pieces = []
        for part in x.split(self.info().max_batch):
            self._write_state({layer: params}, {layer: part})
            values = unpack_values(self._measure_perturbed(request), len(part) * spec.outputs)
            pieces.append(values.to(x.device).reshape(len(part), spec.outputs))
        self._counters.queries += 1
        return torch.cat(pieces)

    def _require_capabilities(self) -> None:
        """Refuse, once and at connect, a device without a capability training needs (bits 0 and 1)."""
        info = self.info()
        missing = []
        if not info.capabilities.seeded_perturbations:
            missing.append("bit 0 (seeded perturbations: PERTURBED_FORWARD generates each direction from its "
                           "seed, firmware_protocol.md section 6)")
        if len(info.layers) > 1 and not info.capabilities.layer_input_injection:
            missing.append("bit 1 (layer input injection: SET_INPUT and PERTURBED_FORWARD for the layers above 0, "
                           "which every training step uses)")
        if missing:
            raise CapabilityError(f"{self.url}: the device lacks capability {' and '.join(missing)}; hil cannot "
                                  "train it: update its firmware to one that provides it (bit 3, bias "
                                  "perturbations, is optional)")

    def _describe(self, payload: bytes, what: str) -> DeviceInfo:
        """Parse the device's INFO JSON; a malformed one is a protocol error naming ``what``."""
        try:
            return DeviceInfo.model_validate(json.loads(payload))
        except (ValidationError, json.JSONDecodeError) as err:
            raise ProtocolError(f"{self.url}: {what} is not a valid device description: {err}") from None

    # ----------------------------------------------------------------- host copy of the device state

    def _forget(self) -> None:
        """The device holds nothing we wrote (after opening, a reset or a power cycle)."""
        layers = len(self.info().layers)
        self._params = [{} for _ in range(layers)]
        self._inputs = [None] * layers

    def _reconnect(self, cause: str) -> None:
        """Reopen with backoff (0.1 s doubling to 5 s), insist on the same device, write its state back."""
        self.stats.reconnects += 1
        log.warning("%s: link lost (%s); reconnecting", self.url, cause)
        self.close()
        delay = 0.1
        for _ in range(self.reconnect_tries):
            time.sleep(delay)
            delay = min(2 * delay, 5.0)
            try:
                identity = self._reopen()
                break
            except self.reopen_errors as err:
                log.info("%s: reopen failed: %s", self.url, err)
                self.close()
        else:
            raise LinkError(f"{self.url}: lost the device ({cause}) and could not reopen it")
        if identity != self.identity:
            raise LinkError(f"{self.url}: a different device answered after reconnecting "
                            f"({identity!r}, was {self.identity!r})")
        self._restore()

    def _restore(self) -> None:
        """Write back everything the device held before it lost it (after a reconnect)."""
        params, inputs = self._params, self._inputs
        self._forget()
        self._write_state(dict(enumerate(params)), {i: x for i, x in enumerate(inputs) if x is not None})

    def _write_state(self, params: dict[int, LayerParams], inputs: dict[int, torch.Tensor]) -> None:
        """Write the arrays and inputs that differ from what the device holds, then remember them."""
        param_writes: list[ParamWrite] = []
        for layer, layer_params in params.items():
            for index, spec in enumerate(self.info().layers[layer].params):
                if spec.name not in layer_params:
                    continue
                value = layer_params[spec.name].detach().to("cpu", torch.float32)
                held = self._params[layer].get(spec.name)
                if held is None or not torch.equal(held, value):
                    param_writes.append((layer, index, value.clone()))
        input_writes: list[InputWrite] = []
        for layer, x in inputs.items():
            value = x.detach().to("cpu", torch.float32)
            held = self._inputs[layer]
            if held is None or not torch.equal(held, value):
                input_writes.append((layer, value.clone()))
        if not param_writes and not input_writes:
            return
        self._send_writes(param_writes, input_writes)
        for layer, index, value in param_writes:
            self._params[layer][self.info().layers[layer].params[index].name] = value
        for layer, value in input_writes:
            self._inputs[layer] = value
        self._counters.param_writes += len(param_writes)

    def _layer(self, layer: int) -> LayerSpec:
        layers = self.info().layers
        if not 0 <= layer < len(layers):
            raise DeviceConfigError(f"no layer {layer}; the device has {len(layers)}")
        return layers[layer]
