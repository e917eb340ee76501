"""Link recovery: the default 2-epoch digits run through an emulator that corrupts and drops frames.

For each fault rate R (default 0, 1 % and 5 %) it starts ``hil emulate --pty --corrupt R --drop R
--fault-seed S`` in its own process (R per frame, in each direction) and trains the job of
``hil train --epochs 2`` through it. Each rate runs ``--repeats`` times (fault seeds 1, 2, ...),
the rates interleaved so that the load of the machine falls on all of them alike. It reports the
training time (median and range over the repeats) and its ratio to the fault-free median, the
link counters (resends, loss probes and CRC errors per run; timeouts and reconnects over all
runs), and whether every run's final parameters equal the first fault-free run's, bit for bit.

    python bench/link_recovery.py      # writes bench/results/link_recovery.{json,md}
"""

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, start_emulator, write_results  # noqa: E402

from hil.config import build_config
from hil.runs import RunFolder
from hil.trainer import Trainer

COUNTERS = ("resends", "probes", "timeouts", "crc_errors", "reconnects")
RARE = ("timeouts", "reconnects")  # summed over the runs; the others are medians per run


def train_through(url: str, run_dir: Path) -> tuple[dict[str, Any], list[torch.Tensor]]:
    """The default job of ``hil train --epochs 2`` through ``url``: its summary and final parameters."""
    config = build_config({"device": url, "epochs": 2, "run_dir": run_dir})
    with Trainer(config, RunFolder.create(config), progress=False) as trainer:
        summary = trainer.fit()
    return summary, [t.detach().clone() for t in trainer.model.tensors()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="0,0.01,0.05", help="fault rates, comma separated (default: 0,0.01,0.05)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per rate (default: 3)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    assert rates[0] == 0, "the first rate is the fault-free reference"
    runs: list[dict[str, Any]] = []
    reference: list[torch.Tensor] | None = None
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(1, args.repeats + 1):
            for rate in rates:
                link = Path(scratch) / f"tty-{rate:g}-{repeat}"
                proc = start_emulator(link, "--corrupt", str(rate), "--drop", str(rate), "--fault-seed", str(repeat))
                try:
                    summary, params = train_through(f"serial://{link}", Path(scratch) / f"run-{rate:g}-{repeat}")
                finally:
                    proc.terminate()
                    proc.wait()
                reference = reference or params
                counters = summary["device_counters"]
                run = {"rate": rate, "fault_seed": repeat, "train_seconds": summary["train_seconds"],
                       "test_accuracy": summary["test_accuracy"],
                       "identical": all(torch.equal(a, b) for a, b in zip(params, reference)),
                       **{name: int(counters[f"link_{name}"]) for name in COUNTERS}}
                runs.append(run)
                print(run, file=sys.stderr)
    clean = statistics.median(r["train_seconds"] for r in runs if r["rate"] == 0)
    rows = []
    for rate in rates:
        mine = [r for r in runs if r["rate"] == rate]
        times = [r["train_seconds"] for r in mine]
        seconds = statistics.median(times)
        rows.append({"rate": rate, "runs": len(mine), "median_train_seconds": seconds,
                     "train_seconds_range": [min(times), max(times)], "ratio_to_fault_free": seconds / clean,
                     "worst_ratio_to_fault_free": max(times) / clean,
                     "identical": all(r["identical"] for r in mine),
                     **{name: (sum if name in RARE else statistics.median)(r[name] for r in mine)
                        for name in COUNTERS}})
    payload = {"environment": environment(), "load_average_before": load_before, "load_average_after": os.getloadavg(),
               "job": "hil train --epochs 2 (digits, mf-dd, 64-256-256 ideal crossbar emulated)",
               "rows": rows, "runs": runs}
    table = [f"Default digits job, 2 epochs, through `hil emulate --pty --corrupt R --drop R` (R per frame, each "
             f"direction) in its own process; {args.repeats} runs per rate (fault seeds 1-{args.repeats}), medians; "
             f"machine load average {load_before[0]:.1f} at the start (2 cores).", "",
             "| faults | train s (range) | x fault-free (worst) | resends | loss probes | CRC errors "
             "| timeouts, all runs | reconnects, all runs | final parameters identical |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        low, high = r["train_seconds_range"]
        table.append(f"| {100 * r['rate']:g} % + {100 * r['rate']:g} % | {r['median_train_seconds']:.2f} "
                     f"({low:.1f}-{high:.1f}) | "
                     f"{r['ratio_to_fault_free']:.2f} ({r['worst_ratio_to_fault_free']:.2f}) | {r['resends']:g} | "
                     f"{r['probes']:g} | {r['crc_errors']:g} | {r['timeouts']:g} | {r['reconnects']:g} | "
                     f"{'yes' if r['identical'] else 'NO'} |")
    write_results(args.out, "link_recovery", payload, "\n".join(table) + "\n")


if __name__ == "__main__":
    main()
