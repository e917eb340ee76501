"""Fashion-MNIST MLP in one run: speed and query efficiency of mf-dd's estimators against autograd.

Trains bp, mf-ad, and mf-dd with the activity-space estimate and the weight-space one at P = 4
and P = 1, one seed each, on the ideal simulated crossbar. Reports test accuracy, the ratio of
each mf-dd epoch's wall time to an mf-ad epoch's (measured in this run), and test accuracy
against cumulative device queries: the queries each method needs to reach ``--reach``.

    python bench/fashion_mlp.py                  # the full run (about an hour on 2 cores)
    python bench/fashion_mlp.py --quick          # a smoke run on digits

Rates default to the ones rq1 chose on validation for this net (bench/results/rq1_mlp.md).
"""

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, plot_curves, pyplot, run_config, write_results  # noqa: E402

ANCHORS = {"bp": 0.879, "mf-ad": 0.860, "weight P=4": 0.837}  # the poster's Fashion-MNIST MLP numbers
METHODS: dict[str, dict[str, Any]] = {
    "bp": {"rule": "bp"},
    "mf-ad": {"rule": "mf-ad"},
    "activity": {"rule": "mf-dd", "estimator": "activity"},
    "weight P=4": {"rule": "mf-dd", "estimator": "weight", "directions": 4},
    "weight P=1": {"rule": "mf-dd", "estimator": "weight", "directions": 1},
}


def queries_to_reach(run: dict[str, Any], accuracy: float) -> int | None:
    """Device queries of training (evaluation excluded) up to the first epoch at ``accuracy`` or above."""
    per_step = run["summary"]["queries_per_step"]
    steps_per_epoch = run["summary"]["train_steps"] / len(run["history"])
    key = "test_accuracy_final_layer" if run["summary"]["test_accuracy_cumulative"] is None \
        else "test_accuracy_cumulative"
    for row in run["history"]:
        if row[key] >= accuracy:
            return round(per_step * steps_per_epoch * row["epoch"])
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=None, help="Fashion-MNIST IDX folder")
    parser.add_argument("--hidden", default="1000,1000", help="hidden widths (default 1000,1000)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", action="append", default=[], metavar="METHOD=RATE",
                        help="a method's Adam rate, e.g. activity=0.003 (default: bp and mf-ad 3e-3, activity 1e-2, "
                             "weight 1e-2)")
    parser.add_argument("--reach", type=float, default=0.85, help="accuracy whose query cost is reported")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="two epochs each on digits (smoke test)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--name", default=None, help="results file name (default fashion_mlp)")
    args = parser.parse_args()

    rates = {"bp": 3e-3, "mf-ad": 3e-3, "activity": 1e-2, "weight P=4": 1e-2, "weight P=1": 1e-2}
    for item in args.lr:
        method, _, rate = item.partition("=")
        if method not in rates:
            parser.error(f"--lr {item!r}: the methods are {', '.join(rates)}")
        rates[method] = float(rate)
    hidden = [int(w) for w in args.hidden.split(",")]
    common = {"dataset": "digits" if args.quick else "fashion-mnist", "data_dir": args.data_dir,
              "hidden": hidden, "batch_size": args.batch_size, "seed": args.seed, "lr_schedule": "cosine",
              "epochs": 2 if args.quick else args.epochs, "threads": args.threads, "device": "sim://crossbar"}
    runs = [run_config({**common, **values, "lr": rates[label]}, label) for label, values in METHODS.items()]
    by_label = {run["label"]: run for run in runs}
    epoch_ratio = {label: run["train_seconds_per_epoch"] / by_label["mf-ad"]["train_seconds_per_epoch"]
                   for label, run in by_label.items()}
    reach = {label: queries_to_reach(run, args.reach) for label, run in by_label.items()}
    name = args.name or ("fashion_mlp_quick" if args.quick else "fashion_mlp")
    payload = {"environment": environment(), "hidden": hidden, "rates": rates, "anchors": ANCHORS,
               "epoch_time_over_mf_ad": epoch_ratio, "queries_to_reach": {"accuracy": args.reach, **reach},
               "runs": runs}

    rows = ["| method | rate | test acc. cumulative (final layer) | poster | train s / epoch | epoch vs mf-ad | "
            f"queries / step | queries to {args.reach:g} |", "|---|---|---|---|---|---|---|---|"]
    for run in runs:
        s, label = run["summary"], run["label"]
        cum = "n/a" if s["test_accuracy_cumulative"] is None else f"{s['test_accuracy_cumulative']:.4f}"
        needed = "not reached" if reach[label] is None else f"{reach[label]:,}"
        rows.append(f"| {label} | {rates[label]:g} | {cum} ({s['test_accuracy_final_layer']:.4f}) | "
                    f"{ANCHORS.get(label, '')} | {run['train_seconds_per_epoch']:.1f} | {epoch_ratio[label]:.2f}x | "
                    f"{s['queries_per_step']:.0f} | {needed} |")
    table = (f"Device `{runs[0]['summary']['device']}`, batch {args.batch_size}, {common['epochs']} epochs, Adam with "
             f"cosine decay, seed {args.seed}, 0.1 of the training set held out for validation; rates as rq1 chose "
             "them on validation. Queries count training steps only (a step's base forward and its perturbation "
             "queries), up to the first epoch whose test accuracy reaches the mark.\n\n" + "\n".join(rows)
             + f"\n\nactivity epoch / mf-ad epoch wall time: **{epoch_ratio['activity']:.2f}x** (target <= 1.5x).\n")
    write_results(args.out, name, payload, table)
    title = "digits (quick)" if args.quick else f"Fashion-MNIST MLP {args.hidden}"
    plot_curves(args.out / f"{name}.png", runs, title)
    plot_queries(args.out / f"{name}_queries.png", runs, args.reach, title)
    print(table)


def plot_queries(path: Path, runs: list[dict[str, Any]], reach: float, title: str) -> None:
    """Test accuracy against cumulative training queries, one line per Mono-Forward method (log x)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in runs:
        if run["summary"]["rule"] != "mf-dd":
            continue
        steps = run["summary"]["train_steps"] / len(run["history"])
        queries = [run["summary"]["queries_per_step"] * steps * row["epoch"] for row in run["history"]]
        ax.plot(queries, [row["test_accuracy_cumulative"] for row in run["history"]], "o-", ms=3,
                label=f"{run['label']} ({run['summary']['queries_per_step']:.0f} queries / step)")
    ax.axhline(reach, color="gray", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set(xlabel="device queries (training)", ylabel="test accuracy (cumulative)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
