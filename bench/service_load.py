"""Load on the status service while a run trains: does watching slow the training down?

Trains the same run twice with ``hil train`` (separate processes, same seed): once with
``hil serve`` running idle, once while 50 Server-Sent-Event clients follow the run and requests
arrive at 200 per second on ``/api/status`` and ``/api/runs``. Reports the training-time ratio
(target <= 1.05) and the latency percentiles of ``/api/status``.

    python bench/service_load.py          # writes bench/results/service_load.{json,md}
"""

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, write_results  # noqa: E402

TOKEN = "load-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(runs: Path, name: str, epochs: int, threads: int) -> subprocess.Popen:
    return subprocess.Popen(["hil", "train", "--run-dir", str(runs / name), "--epochs", str(epochs), "--json",
                             "--no-progress", "--threads", str(threads)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def _summary(proc: subprocess.Popen) -> dict[str, Any]:
    out, _ = proc.communicate()
    return json.loads(out.strip().splitlines()[-1])


async def _follow(client: httpx.AsyncClient, run_id: str) -> int:
    """One SSE client: read the run's events until the stream ends; returns how many arrived."""
    count = 0
    async with client.stream("GET", f"/api/runs/{run_id}/events", headers=AUTH, timeout=None) as response:
        async for line in response.aiter_lines():
            count += line.startswith("event: ")
    return count


async def _load(base: str, run_id: str, proc: subprocess.Popen, sse_clients: int, rate: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=sse_clients + 100)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        followers = [asyncio.create_task(_follow(client, run_id)) for _ in range(sse_clients)]

        async def hit(path: str) -> None:
            nonlocal errors
            started = time.perf_counter()
            response = await client.get(path, headers=AUTH)
            if response.status_code != 200:
                errors += 1
            if path == "/api/status":
                latencies.append(time.perf_counter() - started)

        pending: set[asyncio.Task] = set()
        sent = 0
        started = time.perf_counter()
        while proc.poll() is None:
            path = "/api/status" if sent % 2 == 0 else "/api/runs"
            task = asyncio.create_task(hit(path))
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
            await asyncio.sleep(max(0.0, started + sent / rate - time.perf_counter()))
        elapsed = time.perf_counter() - started
        await asyncio.gather(*pending)
        events = await asyncio.wait_for(asyncio.gather(*followers), timeout=30)
    latencies.sort()

    def pick(q: float) -> float:
        return 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    return {"requests": sent, "request_rate": sent / elapsed, "errors": errors, "sse_clients": sse_clients,
            "events_per_client": min(events), "status_p50_ms": pick(0.5), "status_p99_ms": pick(0.99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40, help="epochs of each training run (default: 40)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the trainer (default: 1)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent SSE clients (default: 50)")
    parser.add_argument("--rate", type=float, default=200.0, help="status requests per second (default: 200)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        runs = Path(scratch)
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(["hil", "serve", "--runs", str(runs), "--port", str(port), "--token", TOKEN],
                                  stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    httpx.get(f"{base}/api/status", headers=AUTH)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            quiet = _summary(_train(runs, "quiet", args.epochs, args.threads))
            print(f"no clients: {quiet['train_seconds']:.2f} s of training", file=sys.stderr)
            proc = _train(runs, "watched", args.epochs, args.threads)
            while not any(r["id"] == "watched" for r in httpx.get(f"{base}/api/runs", headers=AUTH).json()):
                time.sleep(0.05)
            load = asyncio.run(_load(base, "watched", proc, args.clients, args.rate))
            watched = _summary(proc)
            print(f"under load: {watched['train_seconds']:.2f} s of training; {load}", file=sys.stderr)
        finally:
            server.terminate()
            server.wait()
    ratio = watched["train_seconds"] / quiet["train_seconds"]
    payload = {"environment": environment(), "epochs": args.epochs, "threads": args.threads,
               "quiet_train_seconds": quiet["train_seconds"],
               "watched_train_seconds": watched["train_seconds"], "slowdown_ratio": ratio,
               "same_accuracy": quiet["test_accuracy"] == watched["test_accuracy"], **load}
    table = "\n".join([
        f"Default `hil train` job ({args.epochs} epochs, `--threads {args.threads}`), `hil serve` and the load "
        "generator in their own processes, all on 2 CPU cores.", "",
        "| training, no clients | training, under load | slowdown | SSE clients | requests/s | errors "
        "| /api/status p50 | p99 |",
        "|---|---|---|---|---|---|---|---|",
        f"| {quiet['train_seconds']:.2f} s | {watched['train_seconds']:.2f} s | {ratio:.3f}x | {args.clients} "
        f"| {load['request_rate']:.0f} | {load['errors']} | {load['status_p50_ms']:.1f} ms "
        f"| {load['status_p99_ms']:.1f} ms |", ""])
    write_results(args.out, "service_load", payload, table)


if __name__ == "__main__":
    main()
