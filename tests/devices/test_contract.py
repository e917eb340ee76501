"""What every bench device must do, checked through SerialDevice or VisaDevice (``--hil-device URL`` for
hardware): the handshake, measurements, the document's perturbation directions, STATUS, PING, RESET,
every refusal with its status and error text, and all of it over a link that loses frames."""

import math

import pytest
import torch

from devices import DeviceConfigError, Perturbation, open_device
from devices.bench import BenchDevice
from devices.directions import directions
from devices.info import DeviceInfo
from devices.messages import SET_INPUT_HEAD, SET_PARAMS_HEAD, MessageType, Status, pack_values
from devices.scpi import STATUS_TO_SCPI
from devices.serial_device import SerialDevice


@pytest.fixture
def device(contract_url):
    dev = open_device(contract_url)
    assert isinstance(dev, BenchDevice)
    yield dev
    dev.close()


@pytest.fixture
def lossy(request) -> bool:
    """Whether the device sits behind the emulator's faulty link."""
    return request.node.callspec.params["contract_url"] == "serial-lossy"


def _params_inside(dev, generator, scale=0.8):
    out = []
    for spec in dev.info().layers:
        layer = {}
        for p in spec.params:
            mid, half = (p.low + p.high) / 2, (p.high - p.low) / 2
            layer[p.name] = mid + scale * half * (2 * torch.rand(p.shape, generator=generator) - 1)
        out.append(layer)
    return out


def test_handshake_describes_a_usable_network(device):
    info = device.info()
    assert info.layers and info.max_batch >= 1
    for below, above in zip(info.layers, info.layers[1:]):
        assert below.outputs == above.inputs


def test_forward_returns_every_layer_and_is_repeatable(device):
    g = torch.Generator().manual_seed(1)
    params = _params_inside(device, g)
    x = torch.rand(8, device.info().layers[0].inputs, generator=g)
    first, again = device.forward(params, x), device.forward(params, x)
    assert [tuple(a.shape) for a in first] == [(8, s.outputs) for s in device.info().layers]
    spread = max(a.abs().max().item() for a in first) + 1e-6
    for a, b in zip(first, again):
        assert (a - b).abs().max().item() <= 0.05 * spread  # read noise only


def test_perturbed_pairs_bracket_the_base_measurement(device):
    """The midpoint of +eps and -eps outputs is the base output to first order."""
    g = torch.Generator().manual_seed(2)
    params = _params_inside(device, g)
    x = torch.rand(16, device.info().layers[0].inputs, generator=g)
    acts = device.forward(params, x)
    plus, minus = device.perturbed_pairs(0, params[0], x, Perturbation((11, 12, 13), 0.01))
    assert plus.shape == minus.shape == (3, 16, device.info().layers[0].outputs)
    spread = acts[0].abs().max().item() + 1e-6
    assert ((plus + minus) / 2 - acts[0]).abs().max().item() <= 0.05 * spread
    assert (plus - minus).abs().max().item() > 0


def test_host_never_sends_out_of_bounds_parameters(device):
    params = _params_inside(device, torch.Generator().manual_seed(3))
    spec = device.info().layers[0].params[0]
    params[0][spec.name] = params[0][spec.name].clone().fill_(spec.high + 1)
    sent = device.stats.bytes_sent
    with pytest.raises(DeviceConfigError, match="outside"):
        device.forward(params, torch.zeros(2, device.info().layers[0].inputs))
    assert device.stats.bytes_sent == sent


def test_round_trips_are_counted_and_the_error_queue_is_empty(device, lossy):
    device.forward(_params_inside(device, torch.Generator().manual_seed(4)),
                   torch.zeros(2, device.info().layers[0].inputs))
    stats = device.counters.as_dict()
    # answered in time: on a clean link no request timed out or was sent again (a round trip's length
    # depends on the link and on the load of the machine, so it is only required to be measured)
    assert stats["link_frames_received"] > 0 and stats["link_rtt_p99_ms"] > 0
    if not lossy:
        assert stats["link_timeouts"] == 0 and stats["link_resends"] == 0
    assert device.errors() == []


def test_a_bias_pair_moves_only_the_biases_by_eps(device):
    """A bias-only perturbation (distribution 3, or the host's fallback) equals writing bias +- eps."""
    g = torch.Generator().manual_seed(5)
    params = _params_inside(device, g, scale=0.5)
    x = torch.rand(8, device.info().layers[0].inputs, generator=g)
    spec = device.info().layers[0]
    eps = 0.25  # a whole number of cells on any fixed-point bias
    plus, minus = device.perturbed_pairs(0, params[0], x, Perturbation((0,), eps, "bias"))
    spread = device.forward(params, x)[0].abs().max().item() + 1e-6
    for sign, got in ((1, plus[0]), (-1, minus[0])):
        moved = [{**params[0], "bias": params[0]["bias"] + sign * eps}, *params[1:]]
        want = device.forward(moved, x)[0]
        assert (got - want).abs().max().item() <= 0.05 * spread  # read noise only
    assert (plus - minus).abs().max().item() > 0 and spec.has_bias


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian", "sphere"])
def test_perturbation_directions_are_the_documents(device, distribution):
    """Read back the directions the device applies to layer 0 and compare them with ``devices.directions``
    (firmware_protocol.md section 6). Weights at their midpoint, the bias above zero: on one-hot inputs
    the change of output unit i is ``gain * eps * v[i, k] + eps * v[i, bias]``, on a zero input ``eps * v[i, bias]``."""
    spec = device.info().layers[0]
    if spec.kind != "dense" or [p.name for p in spec.params] != ["weight", "bias"] or spec.n_chunks() != spec.outputs \
            or spec.activation not in ("relu", "identity", "hardtanh"):
        pytest.skip("directions are read back through a dense layer with weight and bias, a chunk per output unit, "
                    "and a piecewise-linear activation")
    weight, bias = spec.params
    eps = (weight.high - weight.low) / 16
    base = bias.low + 0.75 * (bias.high - bias.low)
    params = {"weight": torch.full(weight.shape, (weight.low + weight.high) / 2), "bias": torch.full(bias.shape, base)}
    x = torch.cat([torch.zeros(1, spec.inputs), torch.eye(spec.inputs)])
    seeds = (1, 0xDEADBEEF, 12345)
    plus, minus = device.perturbed_pairs(0, params, x, Perturbation(seeds, eps, distribution))
    moved = (plus - minus) / (2 * eps)  # (P, 1 + inputs, outputs)
    along_bias = moved[:, 0, :]
    along_weight = (moved[:, 1:, :] - along_bias.unsqueeze(1)) / spec.gain
    measured = torch.cat([along_weight.transpose(1, 2), along_bias.unsqueeze(-1)], dim=-1)
    expected = directions(seeds, spec.n_chunks(), spec.chunk_size(), distribution)
    # readable where nothing clips: the weights and the bias inside their bounds, the output above zero
    v_weight, v_bias = expected[..., :-1].abs(), expected[..., -1:].abs()
    bias_ok = (base + eps * v_bias < bias.high) & (base - eps * v_bias > max(bias.low, 1e-3))
    weight_ok = ((eps * v_weight < (weight.high - weight.low) / 2)
                 & (base - eps * (v_bias + spec.gain * v_weight) > 1e-3))
    readable = torch.cat([weight_ok & bias_ok, bias_ok], dim=-1)
    assert readable.float().mean() > 0.9
    # the device rounds each value to its resolution: a direction element is known to that over eps
    resolution = max(weight.resolution / spec.gain, bias.resolution) / eps
    assert (measured - expected)[readable].abs().max().item() <= resolution + 1e-4


def test_status_counts_queries_array_writes_frames_and_waiting_errors(device):
    info = device.info()
    if not isinstance(device, SerialDevice):
        # the SCPI dialect has no STATUS (firmware_protocol.md section 8): what waits is its error queue
        device._write(f"NETW:PAR {len(info.layers)},0,0,#14\x00\x00\x00\x00")
        ((code, _),) = device.errors()
        assert code == -222 and device.errors() == []
        return
    before = device.status()
    device.forward(_params_inside(device, torch.Generator().manual_seed(6)), torch.zeros(3, info.layers[0].inputs))
    after = device.status()
    assert after.queries - before.queries == len(info.layers)  # one FORWARD: a query per layer
    assert after.param_writes - before.param_writes == len(info.layers)  # every layer's array programmed once
    assert after.frames_received > before.frames_received and after.errors == 0
    device.transact([(MessageType.SET_PARAMS, SET_PARAMS_HEAD.pack(len(info.layers), 0, 0, 0))], check=False)
    assert device.status().errors == 1
    assert len(device.errors()) == 1 and device.status().errors == 0


def test_ping_echoes_the_largest_payload(device):
    if not isinstance(device, SerialDevice):
        assert device.query("*IDN?") == device.identity  # the dialect's round trip: *IDN? answers unchanged
        return
    payload = bytes(range(256)) * (device.hello.max_request // 256) + bytes(device.hello.max_request % 256)
    assert len(payload) == device.hello.max_request
    assert device.ping(payload) > 0  # checks the echo


def test_reset_forgets_what_was_written(device):
    params = _params_inside(device, torch.Generator().manual_seed(7))
    x = torch.rand(4, device.info().layers[0].inputs, generator=torch.Generator().manual_seed(8))
    first = device.forward(params, x)
    device.reset()
    code, _ = _refuse(device, (MessageType.FORWARD, b""), "MEAS:FORW?", None)  # nothing staged any more
    assert code == _code(device, Status.NOT_READY)
    again = device.forward(params, x)  # the host wrote everything again
    spread = max(a.abs().max().item() for a in first) + 1e-6
    assert all((a - b).abs().max().item() <= 0.05 * spread for a, b in zip(first, again))


def _value(value: float) -> bytes:
    return pack_values(torch.tensor([value]))


def _bad_requests(info: DeviceInfo) -> dict[str, tuple[Status, tuple[int, bytes], str, bytes | None]]:
    """Requests every device must refuse: the status, the binary request, the SCPI command and its block."""
    spec = info.layers[0]
    index, array = next((i, p) for i, p in enumerate(spec.params) if not p.periodic)
    size, inside = math.prod(array.shape), _value((array.low + array.high) / 2)
    layers, arrays, top = len(info.layers), len(spec.params), info.max_batch
    return {
        "unknown type": (Status.UNKNOWN_TYPE, (0x42, b""), "NETW:FROB", None),
        "bad layer": (Status.BAD_LAYER, (MessageType.SET_PARAMS, SET_PARAMS_HEAD.pack(layers, 0, 0, 0) + inside),
                      f"NETW:PAR {layers},0,0,", inside),
        "bad param": (Status.BAD_PARAM, (MessageType.SET_PARAMS, SET_PARAMS_HEAD.pack(0, arrays, 0, 0) + inside),
                      f"NETW:PAR 0,{arrays},0,", inside),
        "out of range": (Status.OUT_OF_RANGE, (MessageType.SET_PARAMS, SET_PARAMS_HEAD.pack(0, index, 0, size)
                                               + inside), f"NETW:PAR 0,{index},{size},", inside),
        "out of bounds": (Status.OUT_OF_BOUNDS, (MessageType.SET_PARAMS, SET_PARAMS_HEAD.pack(0, index, 0, 0)
                                                 + _value(2 * array.high - array.low)),
                          f"NETW:PAR 0,{index},0,", _value(2 * array.high - array.low)),
        "input out of range at a new batch": (
            Status.OUT_OF_RANGE, (MessageType.SET_INPUT, SET_INPUT_HEAD.pack(0, 0, 0, 1, spec.inputs) + inside),
            f"NETW:INP 0,1,{spec.inputs},", inside),
        "batch too large": (Status.BATCH_TOO_LARGE, (MessageType.SET_INPUT, SET_INPUT_HEAD.pack(0, 0, 0, top + 1, 0)
                                                     + inside), f"NETW:INP 0,{top + 1},0,", inside),
        "batch 0": (Status.BATCH_TOO_LARGE, (MessageType.SET_INPUT, SET_INPUT_HEAD.pack(0, 0, 0, 0, 0)),
                    "NETW:INP 0,0,0,", b""),
    }


def _code(device: BenchDevice, status: Status) -> int:
    return int(status) if isinstance(device, SerialDevice) else STATUS_TO_SCPI[status]


def _refuse(device: BenchDevice, binary: tuple[int, bytes], command: str, block: bytes | None) -> tuple[int, str]:
    """Send a request the device must refuse; the one error it queued (code, text), having checked that
    the reply was an empty refusal."""
    if isinstance(device, SerialDevice):
        (reply,) = device.transact([binary], check=False)
        assert reply.status != Status.OK and reply.payload == b""
    elif block is not None:
        device.resource.write_binary_values(command, block, datatype="B")
    elif command.endswith("?"):
        assert device.resource.query_binary_values(command, datatype="B", container=bytes) == b""
    else:
        device.resource.write(command)
    (error,) = device.errors()
    return error


@pytest.mark.parametrize("case", ["unknown type", "bad layer", "bad param", "out of range", "out of bounds",
                                  "input out of range at a new batch", "batch too large", "batch 0"])
def test_a_refused_request_queues_one_error_with_its_status_and_changes_nothing(device, case):
    params = _params_inside(device, torch.Generator().manual_seed(9))
    x = torch.rand(2, device.info().layers[0].inputs, generator=torch.Generator().manual_seed(10))
    first = device.forward(params, x)
    status, binary, command, block = _bad_requests(device.info())[case]
    code, text = _refuse(device, binary, command, block)
    assert code == _code(device, status) and text
    assert device.errors() == []
    # the host sends nothing but FORWARD now (it holds what it wrote), so this measures the device's own state
    again = device.forward(params, x)
    spread = max(a.abs().max().item() for a in first) + 1e-6
    assert all((a - b).abs().max().item() <= 0.05 * spread for a, b in zip(first, again))
