"""Throughput of ``hil sweep`` with 1 and 2 trials at once, and Ray's cost per trial against ``hil train`` alone.

The same short digits trials (a grid of rates and seeds, the bundled simulated crossbar, one torch
thread each) run three ways, one after the other on this machine: every config trained alone in
this process (``run_config``, what ``hil train`` does), then the sweep with ``--jobs 1`` and with
``--jobs 2``, each on a fresh local Ray. Reports trials per minute, the 2-vs-1 ratio (target >= 1.7 on
two cores), and the overhead per trial: (sweep with one job - the same trials alone) / trials, which
holds Ray's start, a worker and actor per trial, the reports to the driver and Tune's bookkeeping.

    python bench/sweep_throughput.py                    # 8 trials of 5 epochs
    python bench/sweep_throughput.py --trials 4 --epochs 2 --name sweep_throughput_quick
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, run_config, write_results  # noqa: E402

from hil.cluster.spec import trial_values  # noqa: E402
from hil.cluster.sweep import sweep  # noqa: E402
from hil.store import RunStore  # noqa: E402

RATES = [0.003, 0.01, 0.02, 0.03]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="trials: rates x seeds (default: 8)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--name", default="sweep_throughput")
    args = parser.parse_args()
    seeds = max(1, args.trials // len(RATES))
    rates = RATES[:args.trials // seeds]
    base = {"hidden": [64, 64], "batch_size": 32, "epochs": args.epochs, "lr_schedule": "cosine"}
    spec = {"base": base, "space": {"lr": {"grid": rates}, "seed": {"seeds": seeds}}, "cpus": 1}
    trials = len(rates) * seeds

    alone = []
    for lr in rates:
        for seed in range(seeds):
            started = time.perf_counter()
            run_config({**trial_values(base, {"lr": lr, "seed": seed}), "threads": 1}, f"alone lr {lr} seed {seed}",
                       progress=False)
            alone.append(time.perf_counter() - started)

    sweeps: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "sweep.yaml"
        path.write_text(yaml.safe_dump(spec))
        for jobs in (1, 2):
            out = Path(scratch) / f"jobs{jobs}"
            started = time.perf_counter()
            sweep(path, out, jobs=jobs)
            wall = time.perf_counter() - started
            ray.shutdown()
            runs = RunStore.for_runs(out / "runs").runs()
            assert len(runs) == trials and {r["status"] for r in runs} == {"finished"}, runs
            span = max(r["stopped"] for r in runs) - min(r["started"] for r in runs)
            sweeps[jobs] = {"wall_seconds": wall, "trials_per_minute": 60 * trials / wall,
                            "first_start_to_last_stop_seconds": span}

    ratio = sweeps[2]["trials_per_minute"] / sweeps[1]["trials_per_minute"]
    overhead = (sweeps[1]["wall_seconds"] - sum(alone)) / trials
    payload = {"environment": environment(), "trials": trials, "config": spec,
               "alone_seconds": alone, "alone_total_seconds": sum(alone), "sweeps": {str(k): v for k, v in
                                                                                     sweeps.items()},
               "throughput_ratio_2_vs_1": ratio, "overhead_seconds_per_trial": overhead}
    table = "\n".join([
        f"{trials} digits trials ({', '.join(map(str, rates))} x {seeds} seeds; MLP 64-64-64, batch 32, "
        f"{args.epochs} epochs, one torch thread each), on a machine of {os.cpu_count()} cores:", "",
        "| how | wall (s) | trials / min | vs hil train alone |", "|---|---|---|---|",
        f"| hil train alone, one after another | {sum(alone):.1f} | {60 * trials / sum(alone):.1f} | 1.00x |",
        *(f"| hil sweep --jobs {jobs} | {s['wall_seconds']:.1f} | {s['trials_per_minute']:.1f} | "
          f"{sum(alone) / s['wall_seconds']:.2f}x |" for jobs, s in sweeps.items()), "",
        f"Throughput with 2 jobs vs 1: **{ratio:.2f}x** (target >= 1.7x). Ray's cost per trial with one job "
        f"(its start, a worker and actor per trial, reports to the driver, Tune's bookkeeping): "
        f"**{overhead:.2f} s** on trials of {sum(alone) / trials:.1f} s alone.", ""])
    write_results(args.out, args.name, payload, table)
    print(table)


if __name__ == "__main__":
    main()
