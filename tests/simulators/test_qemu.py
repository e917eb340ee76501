"""The reference C firmware booted on QEMU's Cortex-M3, driven through SerialDevice over its pty."""

import json
import subprocess
import sys

import pytest
import torch

from devices import DeviceConfigError, Perturbation, open_device
from devices.codec import Frame, FrameDecoder, encode_frame
from devices.directions import directions
from devices.interface import split_chunks
from devices.messages import MessageType, Status
from simulators.conv import reference
from simulators.qemu import QemuFirmware
from tests.devices.test_protocol_doc import REFUSALS, doc_table


@pytest.fixture
def device(qemu_firmware):
    dev = open_device(f"serial://{qemu_firmware.port}")
    yield dev
    dev.close()


def _probe(dev, distribution, eps, seeds):
    """Read layer 0's directions back: zero weights, bias 0.5, one-hot inputs (and a zero input for the
    bias element). Returns the directions as the device applied them, shaped (P, chunks, chunk size)."""
    spec = dev.info().layers[0]
    params = {"weight": torch.zeros(spec.outputs, spec.inputs), "bias": torch.full((spec.outputs,), 0.5)}
    perturbation = Perturbation(seeds, eps, distribution)
    hot, _ = dev.perturbed_pairs(0, params, torch.eye(spec.inputs), perturbation)
    zero, _ = dev.perturbed_pairs(0, params, torch.zeros(1, spec.inputs), perturbation)
    bias = (zero[:, 0, :] - 0.5) / eps  # (P, outputs)
    weight = (hot - 0.5 - eps * bias.unsqueeze(1)) / (spec.gain * eps)  # (P, inputs, outputs)
    return torch.cat([weight.transpose(1, 2), bias.unsqueeze(-1)], dim=-1)


def test_rademacher_directions_agree_bit_for_bit_with_the_host(device):
    seeds = (1, 0xDEADBEEF, 12345)
    spec = device.info().layers[0]
    measured = _probe(device, "rademacher", 0.25, seeds)
    expected = directions(seeds, spec.n_chunks(), spec.chunk_size(), "rademacher")
    assert torch.equal(measured, expected)


def test_bias_directions_agree_bit_for_bit_with_the_host(device):
    """Distribution 3 moves the biases alone, by eps: capability bit 3 and INFO say so."""
    spec = device.info().layers[0]
    assert device.info().capabilities.bias_perturbation and device.hello.capabilities & 8
    writes = device.status().param_writes
    measured = _probe(device, "bias", 0.25, (0,))
    assert torch.equal(measured, Perturbation((0,), 0.25, "bias").vectors(spec))
    # the base weights are programmed once per upload, never per bias query (the probe uploads twice)
    assert device.status().param_writes - writes <= 2


@pytest.mark.parametrize("distribution", ["gaussian", "sphere"])
def test_gaussian_directions_agree_to_the_cell_resolution(device, distribution):
    seeds = (7, 8)
    spec = device.info().layers[0]
    eps = 0.25
    measured = _probe(device, distribution, eps, seeds)
    expected = directions(seeds, spec.n_chunks(), spec.chunk_size(), distribution)
    # Readable where nothing clips: weights eps v and the bias 0.5 + eps v inside [-1, 1], relu output above 0.
    bias = expected[..., -1:]
    readable = ((expected.abs() < 0.99 / eps) & (bias.abs() < 0.5 / eps * 0.99)
                & (0.5 + eps * bias + spec.gain * eps * expected > 1e-3))
    assert readable.float().mean() > 0.9
    resolution = spec.params[0].resolution
    assert (measured - expected)[readable].abs().max().item() <= resolution / eps / spec.gain


def test_injected_layer_input_matches_the_forward_chain(device):
    """Layer 1 evaluated on the layer-0 activations the host sends equals the device's own chain."""
    g = torch.Generator().manual_seed(5)
    params = [{"weight": torch.rand(s.outputs, s.inputs, generator=g) * 2 - 1,
               "bias": torch.rand(s.outputs, generator=g) * 0.2} for s in device.info().layers]
    x = torch.rand(16, device.info().layers[0].inputs, generator=g)
    acts = device.forward(params, x)
    plus, minus = device.perturbed_pairs(1, params[1], acts[0], Perturbation((3, 4), 1e-3))
    assert ((plus + minus) / 2 - acts[1]).abs().max().item() < 1e-3
    assert (plus - minus).abs().max().item() > 1e-4


def test_corrupted_and_malformed_frames_are_dropped_and_the_firmware_keeps_serving(device):
    rejected = device.status().frames_rejected
    good = encode_frame(Frame(MessageType.PING, 999, b"payload"))
    flipped = bytearray(good)
    flipped[5] ^= 0x10
    garbage = [bytes(flipped), good[:8] + b"\x00", bytes(range(1, 200)) + b"\x00",
               b"\x7f" * 5000 + b"\x00", encode_frame(Frame(MessageType.PING, 1000, b"x", version=2))]
    for junk in garbage:
        device.port.write(junk)
    assert device.ping(b"still serving") > 0
    assert device.status().frames_rejected - rejected == len(garbage)


def test_unknown_message_types_are_answered_with_status_1(device):
    device.port.write(encode_frame(Frame(0x42, 77)))
    decoder, frames = FrameDecoder(), []
    while not frames:
        frames = decoder.feed(device.port.read(1) + device.port.read(device.port.in_waiting))
    assert (frames[0].type, frames[0].request_id, frames[0].status) == (0x42 | 0x80, 77, Status.UNKNOWN_TYPE)
    assert device.errors() == [(Status.UNKNOWN_TYPE, "unknown message type")]


@pytest.mark.parametrize("row", [row for row, (hidden, _) in REFUSALS.items() if not hidden], ids=" ".join)
def test_refusals_are_the_documented_ones_in_the_documented_order(device, row):
    """Each row of firmware_protocol.md's refusal table (those of a device with every capability), sent to the
    firmware as it powers up: the documented status, an empty payload and one error with its text."""
    _, requests = REFUSALS[row]
    for request in requests(device.info()):
        device.reset()
        (reply,) = device.transact([request], check=False)
        assert (reply.status, reply.payload) == (int(_status(row)), b""), request
        ((code, text),) = device.errors()
        assert code == reply.status and text


def _status(row: tuple[str, str]) -> int:
    message, when = row
    return next(int(status) for m, w, status in doc_table("| message | refused when | status |")
                if (m, w) == (message, when.strip("`")))


def test_out_of_bounds_parameters_never_leave_the_host(device):
    spec = device.info().layers[0]
    params = {"weight": torch.full((spec.outputs, spec.inputs), 1.5), "bias": torch.zeros(spec.outputs)}
    sent = device.stats.bytes_sent
    with pytest.raises(DeviceConfigError, match="outside"):
        device.perturbed_pairs(0, params, torch.zeros(1, spec.inputs), Perturbation((1,), 0.01))
    assert device.stats.bytes_sent == sent


def test_hil_firmware_run_qemu_prints_a_port_that_trains(firmware_image, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "hil.cli", "firmware", "run-qemu", "--image", str(firmware_image)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = proc.stdout.readline().strip()
        dev = open_device(f"serial://{port}")
        assert dev.info().identity.startswith("hil reference firmware")
        dev.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0


def test_trains_digits_through_the_firmware_to_090(qemu_firmware, tmp_path):
    """Firmware in the loop: `hil train` over the pty to the C firmware on the emulated Cortex-M3.

    The emulated UART moves about 20 KB/s towards the board, so this is the slowest test (about 5 min)."""
    done = subprocess.run([sys.executable, "-m", "hil.cli", "train", "--device", f"serial://{qemu_firmware.port}",
                           "--epochs", "4", "--lr", "0.05", "--lr-schedule", "cosine", "--seed", "0",
                           "--run-dir", str(tmp_path / "fw"), "--json", "--no-progress"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    print({k: summary[k] for k in ("test_accuracy", "train_seconds", "device_queries")})
    assert summary["device_identity"].startswith("hil reference firmware")
    assert summary["test_accuracy"] >= 0.90
    assert summary["device_counters"]["link_reconnects"] == 0  # a loaded machine may stall a reply into a resend


def _conv_reference(spec, params, x):
    return reference(spec.conv, x, params["weight"], params["bias"], spec.gain, torch.relu)


def test_conv_build_computes_its_conv_layer_and_its_perturbations(conv_firmware_image):
    """The conv network's image: INFO describes the conv layer, and its forward and perturbation
    pairs equal torch's conv2d (same gain, pooling, channel-major order) up to the cells' and the
    DAC's quantization."""
    with QemuFirmware(conv_firmware_image) as qemu:
        dev = open_device(f"serial://{qemu.port}")
        try:
            conv, dense = dev.info().layers
            assert (conv.kind, conv.conv.out_channels, conv.conv.pool, conv.n_chunks()) == ("conv", 4, 2, 4)
            assert dense.kind == "dense" and dense.inputs == conv.outputs == 64
            gen = torch.Generator().manual_seed(0)
            params = [{p.name: (torch.rand(p.shape, generator=gen) - 0.5) for p in spec.params}
                      for spec in (conv, dense)]
            x = torch.rand(6, 64, generator=gen)
            acts = dev.forward(params, x)
            assert torch.allclose(acts[0], _conv_reference(conv, params[0], x), atol=1e-3)
            assert torch.allclose(acts[1], torch.relu(acts[0] @ params[1]["weight"].T * dense.gain
                                                      + params[1]["bias"]), atol=1e-3)
            pert = Perturbation((4, 9), 0.25, "rademacher")
            plus, minus = dev.perturbed_pairs(0, params[0], x, pert)
            step = split_chunks(conv, 0.25 * pert.vectors(conv, "cpu"))
            for k in range(2):
                for sign, got in ((1, plus[k]), (-1, minus[k])):
                    moved = {name: params[0][name] + sign * step[name][k] for name in params[0]}
                    assert torch.allclose(got, _conv_reference(conv, moved, x), atol=1e-3)
            assert (plus[0] - acts[0]).abs().max() > 0.05  # the perturbation moved the maps
        finally:
            dev.close()
