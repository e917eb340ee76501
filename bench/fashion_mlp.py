"""Fashion-MNIST MLP: bp, mf-ad and mf-dd (P=4) trained in one run on the simulated crossbar.

Reports test accuracy (final layer and cumulative), epochs, wall time, device queries, and the
ratio of an mf-dd epoch's wall time to an mf-ad epoch's, measured in the same run.

    python bench/fashion_mlp.py                  # the full run (tens of minutes on 2 cores)
    python bench/fashion_mlp.py --quick          # a smoke run on digits
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, plot_curves, run_config, write_results  # noqa: E402

ANCHORS = {"bp": 0.879, "mf-ad": 0.860, "mf-dd": 0.837}  # the poster's Fashion-MNIST MLP numbers
TARGETS = {"mf-ad": 0.89, "mf-dd": 0.86}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=None, help="Fashion-MNIST IDX folder")
    parser.add_argument("--hidden", default="1000,1000", help="hidden widths (default 1000,1000)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs-bp", type=int, default=20)
    parser.add_argument("--epochs-ad", type=int, default=20)
    parser.add_argument("--epochs-dd", type=int, default=40)
    parser.add_argument("--lr-bp", type=float, default=3e-3)
    parser.add_argument("--lr-ad", type=float, default=3e-3)
    parser.add_argument("--lr-dd", type=float, default=3e-3)
    parser.add_argument("--lr-schedule", default="cosine")
    parser.add_argument("--directions", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="two epochs each on digits (smoke test)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--name", default=None, help="results file name (default fashion_mlp)")
    args = parser.parse_args()

    hidden = [int(w) for w in args.hidden.split(",")]
    common = {"dataset": "digits" if args.quick else "fashion-mnist", "data_dir": args.data_dir,
              "hidden": hidden, "batch_size": args.batch_size, "seed": args.seed,
              "lr_schedule": args.lr_schedule,
              "device": "sim://crossbar"}
    plan = [("bp", args.epochs_bp, args.lr_bp, {}), ("mf-ad", args.epochs_ad, args.lr_ad, {}),
            ("mf-dd", args.epochs_dd, args.lr_dd, {"directions": args.directions})]
    runs = []
    for rule, epochs, lr, extra in plan:
        label = f"{rule} (P={args.directions})" if rule == "mf-dd" else rule
        runs.append(run_config({**common, "rule": rule, "epochs": 2 if args.quick else epochs,
                              "lr": lr, **extra}, label))
    by_rule = {run["summary"]["rule"]: run for run in runs}
    ratio = by_rule["mf-dd"]["train_seconds_per_epoch"] / by_rule["mf-ad"]["train_seconds_per_epoch"]
    name = args.name or ("fashion_mlp_quick" if args.quick else "fashion_mlp")
    payload = {"environment": environment(), "hidden": hidden, "anchors": ANCHORS, "targets": TARGETS,
               "mf_dd_over_mf_ad_epoch_time": ratio,
               "runs": runs}

    rows = ["| rule | epochs | test acc. cumulative (final layer) | best (epoch) | poster | "
            "train s / epoch | device queries | queries / step |",
            "|---|---|---|---|---|---|---|---|"]
    for run in runs:
        s = run["summary"]
        cum = "n/a" if s["test_accuracy_cumulative"] is None else f"{s['test_accuracy_cumulative']:.4f}"
        best = f"{run['best_test_accuracy']:.4f} ({run['best_epoch']})"
        rows.append(f"| {run['label']} | {s['epochs']} | {cum} ({s['test_accuracy_final_layer']:.4f}) | {best} | "
                    f"{ANCHORS[s['rule']]} | {run['train_seconds_per_epoch']:.1f} | {s['device_queries']:,} | "
                    f"{s['queries_per_step']:.0f} |")
    table = (f"Device `{runs[0]['summary']['device']}`, batch {args.batch_size}, "
             f"Adam with {args.lr_schedule} learning rate, seed {args.seed}.\n\n"
             + "\n".join(rows)
             + f"\n\nmf-dd epoch / mf-ad epoch wall time: **{ratio:.2f}x** (target <= 4x; "
             f"arithmetic floor (2P+1)/3 = {(2 * args.directions + 1) / 3:.1f}).\n")
    write_results(args.out, name, payload, table)
    title = "digits (quick)" if args.quick else f"Fashion-MNIST MLP {args.hidden}"
    plot_curves(args.out / f"{name}.png", runs, title)
    print(table)


if __name__ == "__main__":
    main()
