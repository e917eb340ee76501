"""Epoch time of mf-dd on the noisy rram crossbar with each noise source, against the ideal crossbar.

For each dataset and estimator, trains on the ideal crossbar, on ``rram`` with exact noise (every
draw fresh from its generator, the default), on ``rram`` with ``noise=bank`` (slices of a seeded
buffer) and on ``rram`` without noise draws (read, output and programming noise off: the floor any
noise source can reach, the rest of the physics kept), in turn, ``--repeats`` times with the order
rotated. Each run reports its training time per epoch (evaluation excluded) twice: wall seconds, and
the CPU seconds of this process over the training steps, which other jobs on the machine disturb far
less. Ratios are taken to the ideal run of the same repeat; the table gives their median and range.

    python bench/noise_bank.py                                  # digits and Fashion-MNIST 784-256-256
    python bench/noise_bank.py --datasets digits --repeats 2    # a smoke run
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, write_results  # noqa: E402

from hil.allocator import keep_freed_memory  # noqa: E402
from hil.config import build_config  # noqa: E402
from hil.runs import RunFolder  # noqa: E402
from hil.trainer import Trainer  # noqa: E402

DEVICES = {
    "ideal": "preset=ideal",
    "rram exact": "preset=rram",
    "rram bank": "preset=rram&noise=bank",
    "rram, no noise draws": "preset=rram&read_noise=0&output_noise=0&prog_noise=none",
}
EPOCHS = {"digits": 5}
"""Epochs per timed run (default 1): a digits epoch is 21 steps, too short to time alone."""


class StepCPU:
    """CPU seconds of the training steps: each step from the previous one's end (or the epoch's start)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.mark = time.process_time()

    def step(self, trainer: Trainer) -> None:
        now = time.process_time()
        self.seconds += now - self.mark
        self.mark = now

    def epoch(self, trainer: Trainer, row: dict[str, Any]) -> None:
        self.mark = time.process_time()  # evaluation is not training


def timed_run(values: dict[str, Any]) -> dict[str, Any]:
    """Train ``values`` in a scratch run folder: wall and CPU seconds per epoch, test accuracy."""
    with tempfile.TemporaryDirectory() as scratch:
        config = build_config({**values, "run_dir": Path(scratch) / "run"})
        cpu = StepCPU()
        with Trainer(config, RunFolder.create(config), progress=False) as trainer:
            trainer.on_step, trainer.on_epoch = cpu.step, cpu.epoch
            summary = trainer.fit()
    return {"wall_seconds": trainer.train_seconds / config.epochs, "cpu_seconds": cpu.seconds / config.epochs,
            "test_accuracy": summary["test_accuracy"], "queries_per_step": summary["queries_per_step"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="digits,fashion-mnist")
    parser.add_argument("--estimators", default="weight,activity")
    parser.add_argument("--hidden", default="256,256")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: as a job beside others)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--name", default="noise_bank")
    args = parser.parse_args()
    keep_freed_memory()  # as `hil train` does

    hidden = [int(w) for w in args.hidden.split(",")]
    cases = []
    for dataset in args.datasets.split(","):
        for estimator in args.estimators.split(","):
            runs: dict[str, list[dict[str, Any]]] = {label: [] for label in DEVICES}
            for repeat in range(args.repeats):
                labels = list(DEVICES)
                labels = labels[repeat % len(labels):] + labels[:repeat % len(labels)]
                for label in labels:
                    runs[label].append(timed_run({
                        "dataset": dataset, "hidden": hidden, "epochs": EPOCHS.get(dataset, 1),
                        "estimator": estimator, "device": f"sim://crossbar?{DEVICES[label]}&seed={args.seed}",
                        "seed": args.seed, "threads": args.threads}))
                    print(f"{dataset} {estimator} {label} (repeat {repeat + 1}): {runs[label][-1]}",
                          file=sys.stderr, flush=True)
            cases.append({"dataset": dataset, "estimator": estimator, "runs": runs, **summarize(runs)})
            print(row(cases[-1]), file=sys.stderr, flush=True)
    table = (f"mf-dd, MLP {args.hidden}, batch 64, seed {args.seed}, {args.threads} torch thread(s); training "
             f"seconds per epoch (digits: mean of {EPOCHS['digits']} epochs per run), CPU (wall); median of "
             f"{args.repeats} repeats, devices in rotated order; ratios to the ideal run of the same repeat, "
             "median (range).\n\n| dataset | estimator | ideal s / epoch | "
             + " | ".join(f"{label}, x ideal" for label in list(DEVICES)[1:])
             + " | test acc. (first repeat) |\n|---|---|---|" + "---|" * len(DEVICES) + "\n"
             + "\n".join(row(case) for case in cases) + "\n")
    write_results(args.out, args.name, {"environment": environment(), "devices": DEVICES, "cases": cases}, table)
    print(table)


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per device and clock: median seconds, and the median and range of the ratios to the same repeat's ideal."""
    out: dict[str, Any] = {}
    for clock in ("cpu_seconds", "wall_seconds"):
        ideal = [r[clock] for r in runs["ideal"]]
        ratios = {label: [r[clock] / i for r, i in zip(rs, ideal)] for label, rs in runs.items()}
        out[clock] = {label: {"median": statistics.median(r[clock] for r in rs),
                              "ratio": statistics.median(ratios[label]),
                              "ratio_range": [min(ratios[label]), max(ratios[label])]}
                      for label, rs in runs.items()}
    return out


def row(case: dict[str, Any]) -> str:
    cpu, wall = case["cpu_seconds"], case["wall_seconds"]
    ideal = f"{cpu['ideal']['median']:.2f} ({wall['ideal']['median']:.2f})"
    noisy = " | ".join(f"**{cpu[label]['ratio']:.2f}x** ({cpu[label]['ratio_range'][0]:.2f}-"
                       f"{cpu[label]['ratio_range'][1]:.2f}; wall {wall[label]['ratio']:.2f}x)"
                       for label in list(DEVICES)[1:])
    accuracy = " / ".join(f"{case['runs'][label][0]['test_accuracy']:.4f}" for label in DEVICES)
    return f"| {case['dataset']} | {case['estimator']} | {ideal} | {noisy} | {accuracy} |"


if __name__ == "__main__":
    main()
