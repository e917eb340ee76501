"""Training-step wall time of mf-dd's estimators against mf-ad, interleaved so that load hits all alike.

Builds one trainer per method on the same data (Fashion-MNIST MLP 784-1000-1000, batch 128, the
ideal simulated crossbar, Adam) and times whole training steps (the rule's step, Adam, the clip to
the device's bounds) in rounds: each round runs one step of every method on the same batch, so a
busy machine slows every method in the same rounds. Reports the median step time of each method
and its ratio to mf-ad's: an epoch is these steps times the batches (evaluation excluded).

    python bench/step_time.py                        # Fashion-MNIST, 200 rounds
    python bench/step_time.py --dataset digits --hidden 256,256 --rounds 50 --name step_time_quick
"""

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, write_results  # noqa: E402

from hil.config import build_config  # noqa: E402
from hil.runs import RunFolder  # noqa: E402
from hil.trainer import Trainer  # noqa: E402

METHODS: dict[str, dict[str, Any]] = {
    "mf-ad": {"rule": "mf-ad"},
    "activity": {"rule": "mf-dd", "estimator": "activity"},
    "weight P=1": {"rule": "mf-dd", "estimator": "weight", "directions": 1},
    "weight P=4": {"rule": "mf-dd", "estimator": "weight", "directions": 4},
}
WARM_UP = 3  # rounds left out of the medians (allocations, first-touch pages)


def _step(trainer: Trainer, x: torch.Tensor, y: torch.Tensor, step: int) -> float:
    """Seconds of one training step as the trainer takes it."""
    started = time.perf_counter()
    trainer.step(x, y, step)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--hidden", default="1000,1000", help="hidden widths (default 1000,1000)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=200, help="steps of every method (default 200)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--name", default="step_time")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hidden = [int(w) for w in args.hidden.split(",")]
    with tempfile.TemporaryDirectory() as scratch, ExitStack() as open_trainers:
        trainers = {}
        for label, values in METHODS.items():
            config = build_config({"dataset": args.dataset, "hidden": hidden, "batch_size": args.batch_size,
                                   "threads": args.threads, "run_dir": Path(scratch) / label.replace(" ", "-"),
                                   **values})
            trainers[label] = open_trainers.enter_context(Trainer(config, RunFolder.create(config), progress=False))
        data = next(iter(trainers.values())).data
        order = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(0))
        times: dict[str, list[float]] = {label: [] for label in METHODS}
        for step in range(args.rounds + WARM_UP):
            idx = order[(step * args.batch_size) % len(order):][:args.batch_size]
            x, y = data.x_train[idx], data.y_train[idx]
            for label, trainer in trainers.items():
                seconds = _step(trainer, x, y, step)
                if step >= WARM_UP:
                    times[label].append(seconds)
        queries = {label: t.rule.report().get("queries_per_layer_step") for label, t in trainers.items()}
    median = {label: statistics.median(v) for label, v in times.items()}
    rows = [f"| {label} | {1000 * median[label]:.1f} ms | {median[label] / median['mf-ad']:.2f}x | "
            f"{'n/a (autograd)' if queries[label] is None else ' + '.join(map(str, queries[label]))} |"
            for label in METHODS]
    table = (f"Training-step wall time on {args.dataset}, MLP {hidden}, batch {args.batch_size}, ideal simulated "
             f"crossbar, Adam, {args.threads} torch thread(s); median of {args.rounds} steps per method, one step "
             "of each per round on the same batch.\n\n"
             "| method | step | vs mf-ad | device queries per layer and step |\n|---|---|---|---|\n"
             + "\n".join(rows) + "\n")
    payload = {"environment": environment(), "dataset": args.dataset, "hidden": hidden,
               "batch_size": args.batch_size, "rounds": args.rounds, "median_seconds": median,
               "ratio_to_mf_ad": {label: median[label] / median["mf-ad"] for label in METHODS},
               "queries_per_layer_step": queries, "seconds": times}
    write_results(args.out, args.name, payload, table)
    print(table)


if __name__ == "__main__":
    main()
