"""Bench links on a real pseudo-terminal: query rates, bytes per query, framing efficiency.

Starts ``hil emulate --pty`` in a separate process and drives it with SerialDevice. For FORWARD
and PERTURBED_FORWARD it measures queries per second and bytes on the wire per query with
pipelining on and off (off is the baseline), and at 0 ms and 1 ms link latency (1 ms is a USB
full-speed frame). The in-process simulator's rate is measured in the same run for reference. It
compares the binary protocol with the SCPI dialect over VISA, and counts the bytes a training step
saves by sending seeds instead of perturbed parameters.

    python bench/link.py            # writes bench/results/link.{json,md}
"""

import argparse
import functools
import itertools
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, start_emulator, write_results  # noqa: E402

from devices.codec import Frame, encode_frame
from devices.interface import Perturbation
from devices.messages import SET_PARAMS_HEAD, MessageType, PerturbedForward, pack_values
from devices.registry import open_device
from devices.serial_device import SerialDevice
from simulators.registry import open_sim

DIRECTIONS = 4


def _params(device: Any, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{p.name: (torch.rand(p.shape, generator=g) * 2 - 1) * 0.9 for p in s.params} for s in device.info().layers]


def _measure(device: SerialDevice, kind: MessageType, payload: bytes, queries_each: int,
             requests: int) -> dict[str, float]:
    stats = device.stats
    sent, received, payload_in = stats.bytes_sent, stats.bytes_received, stats.payload_bytes_received
    started = time.perf_counter()
    device.transact([(kind, payload)] * requests)
    seconds = time.perf_counter() - started
    queries = requests * queries_each
    wire_in = stats.bytes_received - received
    return {
        "queries_per_second": queries / seconds,
        "bytes_per_query": (stats.bytes_sent - sent + wire_in) / queries,
        "payload_to_wire": (stats.payload_bytes_received - payload_in) / wire_in,
    }


def _in_process_rate(layers: str, batch: int, repeats: int) -> dict[str, float]:
    sim = open_sim(f"sim://crossbar?layers={layers}")
    params = _params(sim)
    x = torch.rand(batch, sim.info().layers[0].inputs)
    pert = Perturbation(tuple(range(DIRECTIONS)), 0.01)
    started = time.perf_counter()
    for _ in range(repeats):
        sim.forward(params, x)
    forward = repeats * len(params) / (time.perf_counter() - started)
    started = time.perf_counter()
    for _ in range(repeats):
        sim.perturbed_pairs(0, params[0], x, pert)
    perturbed = repeats * 2 * DIRECTIONS / (time.perf_counter() - started)
    return {"FORWARD": forward, "PERTURBED_FORWARD": perturbed}


def compare_dialects(layers: str, batches: list[int], requests: int) -> list[dict[str, Any]]:
    """The binary protocol (pipelining off) against SCPI over VISA, each from an emulator on a local
    TCP socket, through the public Device calls (repeated with unchanged params and input: no writes)."""
    rows = []
    for dialect in ("binary", "scpi"):
        proc = subprocess.Popen(["hil", "emulate", "--tcp", "0", "--layers", layers,
                                 *(["--scpi"] if dialect == "scpi" else [])],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert proc.stdout is not None
        url = proc.stdout.readline().strip() + ("" if dialect == "scpi" else "?pipeline=0")
        try:
            with open_device(url) as device:
                for batch in batches:
                    params = _params(device)
                    x = torch.rand(batch, device.info().layers[0].inputs)
                    pert = Perturbation(tuple(range(DIRECTIONS)), 0.01)
                    device.perturbed_pairs(0, params[0], x, pert)
                    device.forward(params, x)
                    calls = {"FORWARD": (functools.partial(device.forward, params, x), len(params)),
                             "PERTURBED_FORWARD": (functools.partial(device.perturbed_pairs, 0, params[0], x, pert),
                                                   2 * DIRECTIONS)}
                    for message, (call, each) in calls.items():
                        stats = device.stats
                        wire = stats.bytes_sent + stats.bytes_received
                        started = time.perf_counter()
                        for _ in range(requests):
                            call()
                        seconds = time.perf_counter() - started
                        rows.append({"dialect": dialect, "message": message, "batch": batch,
                                     "queries_per_second": requests * each / seconds,
                                     "bytes_per_query": (stats.bytes_sent + stats.bytes_received - wire)
                                     / (requests * each)})
                        print(rows[-1], file=sys.stderr)
        finally:
            proc.terminate()
            proc.wait()
    for row in rows:
        binary = next(r for r in rows if r["dialect"] == "binary"
                      and all(r[k] == row[k] for k in ("message", "batch")))
        row["rate_vs_binary"] = row["queries_per_second"] / binary["queries_per_second"]
    return rows


def seed_savings(layers: list[int], max_request: int) -> dict[str, float]:
    """Host-to-device bytes per step: seeded PERTURBED_FORWARD vs writing 2P perturbed parameter sets."""
    seeded = sent = 0
    for n_in, n_out in zip(layers[:-1], layers[1:]):
        request = PerturbedForward(0, "rademacher", 3, 0.01, None, tuple(range(DIRECTIONS))).pack()
        seeded += len(encode_frame(Frame(int(MessageType.PERTURBED_FORWARD), 1, request)))
        per_frame = (max_request - SET_PARAMS_HEAD.size) // 4
        for size in (n_out * n_in, n_out):
            for start in range(0, size, per_frame):
                count = min(per_frame, size - start)
                body = SET_PARAMS_HEAD.pack(0, 0, 0, start) + pack_values(torch.zeros(count))
                sent += 2 * DIRECTIONS * len(encode_frame(Frame(int(MessageType.SET_PARAMS), 1, body)))
    return {"seeded_bytes": seeded, "perturbed_params_bytes": sent, "saved_bytes": sent - seeded,
            "ratio": sent / seeded}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default="64,256,256", help="network the emulator serves (default: 64,256,256)")
    parser.add_argument("--batches", default="1,64", help="samples per query, comma separated (default: 1,64)")
    parser.add_argument("--requests", type=int, default=200, help="requests per measurement (default: 200)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for latency in (0.0, 1.0):
            link = Path(scratch) / f"tty{latency:g}"
            proc = start_emulator(link, "--layers", args.layers, "--latency", str(latency))
            try:
                for batch, pipeline in itertools.product(batches, (1, 0)):
                    with SerialDevice(f"serial://{link}?pipeline={pipeline}") as device:
                        params = _params(device)
                        x = torch.rand(batch, device.info().layers[0].inputs)
                        device.forward(params, x)  # writes params and input once
                        request = PerturbedForward(0, "rademacher", 3, 0.01, None, tuple(range(DIRECTIONS)))
                        for kind, payload, each in (
                            (MessageType.FORWARD, b"", len(params)),
                            (MessageType.PERTURBED_FORWARD, request.pack(), request.queries),
                        ):
                            row = {"message": kind.name, "batch": batch, "latency_ms": latency,
                                   "pipelining": bool(pipeline),
                                   **_measure(device, kind, payload, each, args.requests)}
                            rows.append(row)
                            print(row, file=sys.stderr)
                        rtt = device.counters.as_dict()
            finally:
                proc.terminate()
                proc.wait()
    dialects = compare_dialects(args.layers, batches, args.requests)
    local = {b: _in_process_rate(args.layers, b, args.requests) for b in batches}
    for row in rows:
        baseline = next(r for r in rows if not r["pipelining"]
                        and all(r[k] == row[k] for k in ("message", "batch", "latency_ms")))
        row["speedup_vs_no_pipelining"] = row["queries_per_second"] / baseline["queries_per_second"]
        row["fraction_of_in_process_rate"] = row["queries_per_second"] / local[row["batch"]][row["message"]]
    widths = [int(w) for w in args.layers.split(",")]
    savings = {"default": seed_savings(widths, 1 << 16), "784,1000,1000": seed_savings([784, 1000, 1000], 1 << 16)}
    payload = {"environment": environment(), "layers": args.layers, "directions": DIRECTIONS,
               "rows": rows, "dialects": dialects, "in_process_queries_per_second": local,
               "seed_savings_per_step": savings, "last_link_counters": rtt}
    table = [f"Network {args.layers}, P = {DIRECTIONS} (PERTURBED_FORWARD = {2 * DIRECTIONS} queries), "
             f"{args.requests} requests per row, emulator in its own process on a pty.", "",
             "| message | batch | latency | pipelining | queries/s | x no-pipelining | x in-process | bytes/query "
             "| payload/wire |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['message']} | {r['batch']} | {r['latency_ms']:g} ms | {'on' if r['pipelining'] else 'off'} "
                     f"| {r['queries_per_second']:.0f} | {r['speedup_vs_no_pipelining']:.2f} | "
                     f"{r['fraction_of_in_process_rate']:.2f} | {r['bytes_per_query']:.0f} | "
                     f"{r['payload_to_wire']:.4f} |")
    table.append("")
    table.append("Binary protocol (`socket://`, pipelining off) against SCPI over VISA "
                 "(`visa://TCPIP0::...::SOCKET`, pyvisa-py), emulator on a local TCP port, same run:")
    table.append("")
    table.append("| message | batch | dialect | queries/s | x binary | bytes/query |")
    table.append("|---|---|---|---|---|---|")
    for r in sorted(dialects, key=lambda r: (r["message"], r["batch"], r["dialect"])):
        table.append(f"| {r['message']} | {r['batch']} | {r['dialect']} | {r['queries_per_second']:.0f} | "
                     f"{r['rate_vs_binary']:.2f} | {r['bytes_per_query']:.0f} |")
    table.append("")
    table.append("| network | seeded bytes/step | perturbed-parameter bytes/step | saved | ratio |")
    table.append("|---|---|---|---|---|")
    for name, s in savings.items():
        table.append(f"| {args.layers if name == 'default' else name} | {s['seeded_bytes']} | "
                     f"{s['perturbed_params_bytes']} | {s['saved_bytes']} | {s['ratio']:.0f}x |")
    write_results(args.out, "link", payload, "\n".join(table) + "\n")


if __name__ == "__main__":
    main()
