"""mf-dd's two estimates on noisy crossbars: activity space (a bias pair) against weight space (P = 4).

For each dataset, each crossbar preset (ideal, rram, pcm) and each estimate, mf-dd trains at every
rate of ``--lrs`` over ``--seeds`` seeds; each estimate is reported at its rate with the best mean
validation accuracy on that device. The table gives test accuracy, the gap between the estimates,
each estimate's loss against its own accuracy on the ideal device, the eps each calibrated and the
queries a step costs.

    python bench/estimators.py                                  # digits, 15 epochs, and Fashion-MNIST, 5 epochs
    python bench/estimators.py --datasets digits --seeds 1 --epochs 2 --name estimators_quick
"""

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, pyplot, write_results  # noqa: E402

from hil.experiments import Runner, Settings, choose_rates, over_seeds, settle  # noqa: E402

PRESETS = ("ideal", "rram", "pcm")
ESTIMATORS = {"weight": {"estimator": "weight", "directions": 4}, "activity": {"estimator": "activity"}}
EPOCHS = {"digits": 15, "fashion-mnist": 5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="digits,fashion-mnist")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: 15 on digits, 5 on fashion-mnist)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--lrs", default="0.003,0.01", help="Adam rates each estimate trains at")
    parser.add_argument("--hidden", default="256,256")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--name", default="estimators")
    args = parser.parse_args()

    lrs = [float(r) for r in args.lrs.split(",")]
    hidden = [int(w) for w in args.hidden.split(",")]
    settings = Settings(seeds=args.seeds, threads=args.threads)
    groups = []
    with Runner(args.jobs) as runner:
        for dataset in args.datasets.split(","):
            for preset in PRESETS:
                for estimator, extra in ESTIMATORS.items():
                    for lr in lrs:
                        values = {"rule": "mf-dd", **extra, "dataset": dataset, "hidden": hidden, "lr": lr,
                                  "device": f"sim://crossbar?preset={preset}", "lr_schedule": "cosine",
                                  "epochs": args.epochs or EPOCHS[dataset],
                                  "batch_size": 64 if dataset == "digits" else 128}
                        label = f"{dataset} {preset} {estimator} lr {lr:g}"
                        groups.append({**over_seeds(runner, settings, values, label), "dataset": dataset,
                                       "preset": preset, "estimator": estimator, "lr": lr})
        groups = [settle(g) for g in groups]
    choose_rates(groups, ("dataset", "preset", "estimator"))
    best = {(g["dataset"], g["preset"], g["estimator"]): g for g in groups if g["best_lr"]}
    rows = []
    for dataset in dict.fromkeys(g["dataset"] for g in groups):
        for preset in PRESETS:
            weight, activity = best[dataset, preset, "weight"], best[dataset, preset, "activity"]
            cells = [f"{_pm(g)} ({g['lr']:g})" for g in (weight, activity)]
            gap = _mean(activity) - _mean(weight)
            drop = {e: _mean(best[dataset, preset, e]) - _mean(best[dataset, "ideal", e]) for e in ESTIMATORS}
            eps = " / ".join(f"{_eps(g):.3g}" for g in (activity, weight))
            rows.append(f"| {dataset} | {preset} | {cells[0]} | {cells[1]} | {gap:+.4f} | {drop['activity']:+.4f} | "
                        f"{drop['weight']:+.4f} | {eps} | {activity['queries_per_step']:.0f} / "
                        f"{weight['queries_per_step']:.0f} |")
    table = (f"mf-dd on the simulated crossbar presets, MLP {hidden}, {args.seeds} seeds, epochs "
             f"{', '.join(f'{d} {args.epochs or EPOCHS[d]}' for d in args.datasets.split(','))}, Adam with cosine "
             f"decay; each estimate at its best rate of {', '.join(f'{lr:g}' for lr in lrs)} by mean validation "
             "accuracy on that device (0.1 of the training set held out); mean +- std of cumulative test accuracy.\n\n"
             "| dataset | device | weight P=4 (rate) | activity (rate) | activity - weight | activity vs its ideal | "
             "weight vs its ideal | eps activity / weight | queries / step activity / weight |\n"
             "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    payload = {"environment": {**environment(), "cpu_threads": args.threads, "jobs": args.jobs},
               "seeds": list(range(args.seeds)), "lrs": lrs, "hidden": hidden, "groups": groups}
    write_results(args.out, args.name, payload, table)
    plot(args.out / f"{args.name}.png", best)
    print(table)


def _mean(group: dict[str, Any]) -> float:
    return group["test_accuracy"]["mean"]


def _pm(group: dict[str, Any]) -> str:
    return f"{group['test_accuracy']['mean']:.4f} +- {group['test_accuracy']['std']:.4f}"


def _eps(group: dict[str, Any]) -> float:
    """The step the runs calibrated (the same on every layer of a crossbar), mean over seeds."""
    return statistics.fmean(max(r["summary"]["eps"]) for r in group["runs"])


def plot(path: Path, best: dict[tuple[str, str, str], dict[str, Any]]) -> None:
    """Test accuracy per device and estimate, one panel per dataset."""
    plt = pyplot()
    datasets = list(dict.fromkeys(d for d, _, _ in best))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.8), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for offset, estimator in enumerate(ESTIMATORS):
            chosen = [best[dataset, preset, estimator] for preset in PRESETS]
            ax.bar([i + (offset - 0.5) * 0.38 for i in range(len(PRESETS))], [_mean(g) for g in chosen], 0.38,
                   yerr=[g["test_accuracy"]["std"] for g in chosen], capsize=3, label=estimator)
        low = min(_mean(g) for (d, _, _), g in best.items() if d == dataset)
        ax.set_ylim(max(0.0, low - 0.05), min(1.0, max(_mean(g) for (d, _, _), g in best.items() if d == dataset)
                                                + 0.02))
        ax.set_xticks(range(len(PRESETS)), PRESETS)
        ax.set_title(dataset)
        ax.set_ylabel("test accuracy (cumulative)")
        ax.grid(alpha=0.3, axis="y")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
