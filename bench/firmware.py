"""Firmware in the loop: the reference C firmware on QEMU against the Python emulator.

Both serve the same 64-64-64 network on a real pseudo-terminal and are driven by the same
SerialDevice. Reports the QEMU image's flash and RAM, then for each: upload rate (SET_PARAMS),
FORWARD input vectors per second at batch 1 and 64, PERTURBED_FORWARD (P=4, both signs, batch 64)
evaluations per second, and the wall time of one mf-dd epoch on digits; ratios are
firmware / emulator (the baseline), measured in the same run.

    python bench/firmware.py            # writes bench/results/firmware.{json,md}
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, run_config, start_emulator, write_results  # noqa: E402

from devices.interface import Perturbation  # noqa: E402
from devices.messages import SET_PARAMS_HEAD, MessageType, PerturbedForward, pack_values  # noqa: E402
from devices.registry import open_device  # noqa: E402
from devices.serial_device import SerialDevice  # noqa: E402
from simulators.qemu import QemuFirmware, build_firmware, image_memory  # noqa: E402

LAYERS = "64,64,64"
DIRECTIONS = 4


def _rate(device: SerialDevice, requests: list[tuple[MessageType, bytes]], repeat: int) -> float:
    """Requests per second, pipelined as the host does in training."""
    started = time.perf_counter()
    for _ in range(repeat):
        device.transact(requests)
    return repeat * len(requests) / (time.perf_counter() - started)


def measure(url: str, epoch_seconds: bool) -> dict[str, Any]:
    device = open_device(url)
    assert isinstance(device, SerialDevice)
    info = device.info()
    g = torch.Generator().manual_seed(0)
    params = [{p.name: (torch.rand(p.shape, generator=g) * 2 - 1) * 0.9 for p in s.params} for s in info.layers]
    chunk = (device.hello.max_request - SET_PARAMS_HEAD.size) // 4
    weights = pack_values(params[0]["weight"].reshape(-1))
    uploads = [(MessageType.SET_PARAMS, SET_PARAMS_HEAD.pack(0, 0, 0, start) + weights[4 * start:4 * (start + chunk)])
               for start in range(0, info.layers[0].params[0].shape[0] * info.layers[0].inputs, chunk)]
    started = time.perf_counter()
    for _ in range(4):
        device.transact(uploads)
    upload = 4 * len(weights) / (time.perf_counter() - started)

    result: dict[str, Any] = {"identity": info.identity, "upload_bytes_per_second": upload}
    for batch in (1, 64):
        x = torch.rand(batch, info.layers[0].inputs, generator=g)
        device.forward(params, x)  # stages parameters and input
        forwards = _rate(device, [(MessageType.FORWARD, b"")] * 8, 4 if batch == 64 else 16)
        result[f"forward_vectors_per_second_batch{batch}"] = forwards * batch
    seeds = tuple(range(1, DIRECTIONS + 1))
    device.perturbed_pairs(0, params[0], x, Perturbation(seeds, 0.01))
    request = PerturbedForward(0, "rademacher", 3, 0.01, None, seeds).pack()
    perturbed = _rate(device, [(MessageType.PERTURBED_FORWARD, request)] * 4, 3)
    result["perturbed_evaluations_per_second_batch64"] = perturbed * 2 * DIRECTIONS * 64
    device.close()
    if epoch_seconds:
        run = run_config({"device": url, "epochs": 1, "batch_size": 64, "lr": 0.05, "threads": 1}, url)
        result["mf_dd_epoch_seconds"] = run["wall_seconds"]
        result["test_accuracy_after_1_epoch"] = run["summary"]["test_accuracy"]
    return result


TABLE_ROWS = [
    ("upload_bytes_per_second", "upload, bytes/s (SET_PARAMS)", "{:.0f}"),
    ("forward_vectors_per_second_batch1", "FORWARD, input vectors/s, batch 1", "{:.0f}"),
    ("forward_vectors_per_second_batch64", "FORWARD, input vectors/s, batch 64", "{:.0f}"),
    ("perturbed_evaluations_per_second_batch64", "PERTURBED_FORWARD P=4 +-, evaluations/s, batch 64", "{:.0f}"),
    ("mf_dd_epoch_seconds", "one mf-dd epoch on digits, s", "{:.1f}"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--no-epoch", action="store_true", help="skip the (minutes long) training epochs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    image = build_firmware()
    memory = image_memory(image)
    with tempfile.TemporaryDirectory() as scratch:
        link = Path(scratch) / "emulator"
        proc = start_emulator(link, "--layers", LAYERS)
        try:
            emulator = measure(f"serial://{link}", not args.no_epoch)
        finally:
            proc.terminate()
            proc.wait()
    with QemuFirmware(image) as qemu:
        firmware = measure(f"serial://{qemu.port}", not args.no_epoch)
    rows = ["| measure | C firmware on QEMU | Python emulator | firmware / emulator |", "|---|---|---|---|"]
    for key, label, fmt in TABLE_ROWS:
        if key in firmware:
            rows.append(f"| {label} | {fmt.format(firmware[key])} | {fmt.format(emulator[key])} | "
                        f"{firmware[key] / emulator[key]:.3f} |")
    table = (f"Reference firmware image (mps2-an385, Cortex-M3): flash {memory['flash_bytes']} bytes "
             f"({memory['flash_bytes'] / 1024:.1f} KiB of 256 KiB), RAM {memory['ram_bytes']} bytes "
             f"({memory['ram_bytes'] / 1024:.1f} KiB of 64 KiB, stack included).\n\n" + "\n".join(rows) + "\n")
    print(table)
    write_results(args.out, "firmware", {"environment": environment(), "memory": memory, "firmware": firmware,
                                         "emulator": emulator}, table)


if __name__ == "__main__":
    main()
