"""Load on the status service while a run trains: does watching slow training, and what does a dashboard cost?

Trains the default job with ``hil train`` (separate processes, same seed) three times while
``hil serve`` runs: watched by no dashboard, by one, and by 50. Each simulated dashboard does what
``hil/dashboard/app.js`` does: on opening, ``/api/status`` and ``/api/runs``, then the run's event
stream (EventSource) and ``/api/runs/{id}`` with ``/api/runs/{id}/metrics?since=CURSOR`` (its own
cursor); then the last two every second and the first two every 3 s, each dashboard opened at
its own moment. Reports the training time against the unwatched run (target <= 1.05), the
service's CPU time per second, latency percentiles per endpoint, errors, and whether every
dashboard got every metric row and every event exactly once.

    python bench/service_load.py          # writes bench/results/service_load.{json,md}
"""

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
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
HIL = [sys.executable, "-m", "hil.cli"]
RUN_SECONDS, LIST_SECONDS = 1.0, 3.0  # app.js: setInterval(refreshRun, 1000), setInterval(refreshRuns, 3000)
ENDPOINTS = ("/api/runs/{id}", "/api/runs/{id}/metrics", "/api/status", "/api/runs")
RUN_POLLS, PER_REQUEST, CLIENT_CPU = "run_polls_per_second", "service_ms_per_request", "client_cpu_share"


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]


def _train(runs: Path, name: str, epochs: int, threads: int) -> subprocess.Popen:
    return subprocess.Popen([*HIL, "train", "--run-dir", str(runs / name), "--epochs", str(epochs), "--json",
                             "--no-progress", "--threads", str(threads)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def _summary(proc: subprocess.Popen) -> dict[str, Any]:
    out, _ = proc.communicate()
    return json.loads(out.strip().splitlines()[-1])


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Stats:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = {e: [] for e in ENDPOINTS}
        self.errors = 0
        self.retries = 0

    async def get(self, client: httpx.AsyncClient, endpoint: str, run_id: str, **params: Any) -> Any:
        started = time.perf_counter()
        try:
            response = await client.get(endpoint.replace("{id}", run_id), params=params, headers=AUTH)
        except (httpx.RemoteProtocolError, httpx.ReadError):  # the server closed the idle connection: browsers retry
            self.retries += 1
            response = await client.get(endpoint.replace("{id}", run_id), params=params, headers=AUTH)
        self.latency[endpoint].append(time.perf_counter() - started)
        if response.status_code != 200:
            self.errors += 1
            return None
        return response.json()


async def _dashboard(client: httpx.AsyncClient, run_id: str, stats: _Stats, done: asyncio.Event,
                     delay: float) -> dict[str, Any]:
    """One dashboard, as app.js behaves; returns the metric ids and event ids it received."""
    await asyncio.sleep(delay)
    state: dict[str, Any] = {"since": 0, "rows": [], "events": []}

    async def refresh_runs() -> None:
        await asyncio.gather(stats.get(client, "/api/status", run_id), stats.get(client, "/api/runs", run_id))

    async def refresh_run() -> None:
        _, page = await asyncio.gather(stats.get(client, "/api/runs/{id}", run_id),
                                       stats.get(client, "/api/runs/{id}/metrics", run_id, since=state["since"]))
        if page is not None:
            state["rows"].extend(row["id"] for row in page["rows"])
            state["since"] = page["next"]

    async def follow() -> None:
        async with client.stream("GET", f"/api/runs/{run_id}/events", headers=AUTH, timeout=None) as response:
            async for line in response.aiter_lines():
                if line.startswith("id: "):
                    state["events"].append(int(line[4:]))

    async def every(seconds: float, poll: Any) -> None:
        ticks = time.monotonic()
        while not done.is_set():
            ticks += seconds
            await asyncio.sleep(max(0.0, ticks - time.monotonic()))
            await poll()

    await refresh_runs()
    stream = asyncio.create_task(follow())
    await refresh_run()
    await asyncio.gather(every(RUN_SECONDS, refresh_run), every(LIST_SECONDS, refresh_runs))
    await refresh_run()  # the next tick after the run ended
    await asyncio.wait_for(stream, timeout=60)
    return state


async def _watch(base: str, run_id: str, proc: subprocess.Popen, dashboards: int, server_pid: int) -> dict[str, Any]:
    """Dashboards on the run until it ends; the service's CPU time while they watch."""
    stats = _Stats()
    done = asyncio.Event()
    rng = random.Random(0)
    limits = httpx.Limits(max_connections=3 * dashboards + 10, max_keepalive_connections=3 * dashboards + 10)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        cpu, own, started = _cpu_seconds(server_pid), time.process_time(), time.perf_counter()
        clients = [asyncio.create_task(_dashboard(client, run_id, stats, done, rng.uniform(0, RUN_SECONDS)))
                   for _ in range(dashboards)]
        while proc.poll() is None:
            await asyncio.sleep(0.05)
        service = {"service_cpu_seconds": _cpu_seconds(server_pid) - cpu,
                   "client_cpu_seconds": time.process_time() - own, "watched_seconds": time.perf_counter() - started,
                   "polls": sum(len(v) for v in stats.latency.values()),
                   "polls_of_run": len(stats.latency["/api/runs/{id}"])}
        done.set()
        states = await asyncio.gather(*clients)
        rows: list[int] = []
        page = {"next": 0, "rows": [None]}
        while page["rows"]:
            response = await client.get(f"/api/runs/{run_id}/metrics", params={"since": page["next"]}, headers=AUTH)
            page = response.json()
            rows.extend(row["id"] for row in page["rows"])
        async with client.stream("GET", f"/api/runs/{run_id}/events", headers=AUTH) as response:
            events = [int(line[4:]) async for line in response.aiter_lines() if line.startswith("id: ")]
    return {**service, "errors": stats.errors, "retries": stats.retries, "latency": stats.latency,
            "metric_rows": len(rows), "events": len(events),
            "complete": all(s["rows"] == rows and s["events"] == events for s in states)}


def _run(base: str, runs: Path, server: subprocess.Popen, name: str, dashboards: int,
         args: argparse.Namespace) -> dict[str, Any]:
    """Train one run while ``dashboards`` dashboards watch it."""
    proc = _train(runs, name, args.epochs, args.threads)
    while not any(r["id"] == name for r in httpx.get(f"{base}/api/runs", headers=AUTH).json()):
        time.sleep(0.05)
    load = asyncio.run(_watch(base, name, proc, dashboards, server.pid))
    summary = _summary(proc)
    result = {"dashboards": dashboards, **load, "train_seconds": summary["train_seconds"],
              "test_accuracy": summary["test_accuracy"]}
    print(f"{dashboards} dashboards: training {result['train_seconds']:.2f} s, service CPU "
          f"{result['service_cpu_seconds']:.2f} s in {result['watched_seconds']:.1f} s, errors {result['errors']} "
          f"(retried {result['retries']}), "
          f"complete {result['complete']}", file=sys.stderr)
    return result


def _summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One configuration over its repeats: medians of times, pooled latencies, totals of errors."""
    latency = {e: sorted(x for r in runs for x in r["latency"][e]) for e in ENDPOINTS}

    def pick(values: list[float], q: float) -> float | None:
        return round(1000 * values[min(len(values) - 1, int(q * len(values)))], 2) if values else None

    return {"dashboards": runs[0]["dashboards"], "repeats": len(runs),
            "train_seconds": statistics.median(r["train_seconds"] for r in runs),
            "train_seconds_each": [r["train_seconds"] for r in runs],
            "service_cpu_share": statistics.median(r["service_cpu_seconds"] / r["watched_seconds"] for r in runs),
            "client_cpu_share": statistics.median(r["client_cpu_seconds"] / r["watched_seconds"] for r in runs),
            "service_ms_per_request": 1000 * sum(r["service_cpu_seconds"] for r in runs) / max(1, sum(
                r["polls"] for r in runs)) if runs[0]["dashboards"] else None,
            "run_polls_per_second": statistics.median(r["polls_of_run"] / r["watched_seconds"] / r["dashboards"]
                                                      for r in runs) if runs[0]["dashboards"] else None,
            "requests": {e: len(v) for e, v in latency.items()}, "errors": sum(r["errors"] for r in runs),
            "retries": sum(r["retries"] for r in runs),
            "p50_ms": {e: pick(v, 0.5) for e, v in latency.items()},
            "p99_ms": {e: pick(v, 0.99) for e, v in latency.items()},
            "metric_rows": runs[0]["metric_rows"], "events": runs[0]["events"],
            "complete": all(r["complete"] for r in runs), "test_accuracy": sorted({r["test_accuracy"] for r in runs})}


def _table(args: argparse.Namespace, results: list[dict[str, Any]], load: str) -> str:
    quiet = results[0]["train_seconds"]
    lines = [
        f"Default `hil train` job ({args.epochs} epochs, `--threads {args.threads}`), `hil serve` and the simulated "
        f"dashboards in their own processes, all on {os.cpu_count()} CPU cores (load average {load} at the start). "
        "Each dashboard polls what `hil/dashboard/app.js` polls: `/api/runs/{id}` and `/api/runs/{id}/metrics?since=` "
        "every second, `/api/status` and `/api/runs` every 3 s, and follows the run's events. Medians of "
        f"{args.repeats} runs per row, the rows' runs interleaved.", "",
        "| dashboards | training | slowdown | polls of the run per dashboard and second | service CPU "
        "| service CPU per request | dashboards' CPU | requests | errors | run p50 / p99 | metrics p50 / p99 "
        "| status p50 / p99 | every row and event, once |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        watched = ["-"] * 7
        if r["dashboards"]:
            watched = [f"{r[RUN_POLLS]:.2f}", f"{r[PER_REQUEST]:.2f} ms", f"{100 * r[CLIENT_CPU]:.1f} %",
                       *(f"{r['p50_ms'][e]:.1f} / {r['p99_ms'][e]:.1f} ms" for e in ENDPOINTS[:3]),
                       "yes" if r["complete"] else "NO"]
        cells = [str(r["dashboards"]), f"{r['train_seconds']:.2f} s", f"{r['train_seconds'] / quiet:.3f}x",
                 watched[0], f"{100 * r['service_cpu_share']:.1f} %", *watched[1:3],
                 str(sum(r["requests"].values())), f"{r['errors']} ({r['retries']} retried)", *watched[3:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", "Training: the run's own step time (`train_seconds`). Polls: how often each "
                      "dashboard got its `/api/runs/{id}` answer (app.js asks every second: 1.00 keeps pace). Service "
                      "CPU: the `hil serve` process's CPU time while the run trained, over that time (100 % is one "
                      "core); per request: that CPU time over the requests answered. Dashboards' CPU: the load "
                      "generator's process, likewise. Retried: requests sent again once, as browsers do, after the "
                      "server had closed the idle keep-alive connection they went out on.", ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40, help="epochs of each training run (default: 40)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the trainer (default: 1)")
    parser.add_argument("--dashboards", type=int, default=50, help="dashboards of the loaded run (default: 50)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration, interleaved (default: 3)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory() as scratch:
        runs = Path(scratch)
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([*HIL, "serve", "--runs", str(runs), "--port", str(port), "--token", TOKEN],
                                  stderr=subprocess.DEVNULL)
        try:
            for _ in range(600):
                try:
                    httpx.get(f"{base}/api/status", headers=AUTH)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            counts = (0, 1, args.dashboards)
            each: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
            for repeat in range(args.repeats):
                for n in counts:
                    each[n].append(_run(base, runs, server, f"r{repeat}-{n}", n, args))
            results = [_summarise(each[n]) for n in counts]
        finally:
            server.terminate()
            server.wait()
    payload = {"environment": environment(), "epochs": args.epochs, "threads": args.threads,
               "load_average_at_start": load,
               "slowdown_ratio": results[-1]["train_seconds"] / results[0]["train_seconds"],
               "same_accuracy": len({a for r in results for a in r["test_accuracy"]}) == 1, "results": results}
    write_results(args.out, "service_load", payload, _table(args, results, load))


if __name__ == "__main__":
    main()
