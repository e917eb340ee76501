"""Test accuracy against cumulative device queries, from the runs of recorded rq1 results.

Reads results JSON files written by ``hil bench rq1`` (current or legacy), takes every Mono-Forward
group of one dataset and net at its chosen rate, and reports per group: device queries per
training step, the training queries (evaluation excluded) each seed needed to reach ``--reach``
cumulative test accuracy at the end of an epoch, and the final accuracy; plus a plot of accuracy
against training queries. It trains nothing: it reads how recorded runs trained.

    python bench/query_efficiency.py bench/results/rq1_mlp.json bench/results/legacy/rq1_mlp.json
"""

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, pyplot, write_results  # noqa: E402


def _label(group: dict[str, Any], legacy: bool) -> str:
    config = group["runs"][0]["config"]
    options = {**config, **config.get("rule_options", {})}  # flat in results written before rule options
    if config["rule"] != "mf-dd":
        name = config["rule"]
    elif options.get("estimator", "weight") == "weight":
        name = f"mf-dd weight P={options.get('directions', 4)}"
    else:
        name = "mf-dd activity"
    return name + (" (legacy)" if legacy else "")


def _curve(run: dict[str, Any]) -> list[tuple[int, float]]:
    """(training queries, cumulative test accuracy) at the end of each epoch."""
    summary = run["summary"]
    epochs = len(run["history"])
    steps = summary.get("train_steps") or epochs * math.ceil(60000 / run["config"]["batch_size"])
    per_epoch = summary["queries_per_step"] * steps / epochs
    return [(round(per_epoch * row["epoch"]), row["test_accuracy_cumulative"]) for row in run["history"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, nargs="+", help="rq1 results JSON files (a path under legacy/ is marked)")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--net", default="MLP")
    parser.add_argument("--reach", type=float, default=0.85)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--name", default="query_efficiency")
    args = parser.parse_args()
    rows, series = [], []
    for path in args.results:
        legacy = "legacy" in path.parts
        for group in json.loads(path.read_text())["groups"]:
            config = group["runs"][0]["config"]
            chosen = group.get("best_lr", True)
            if config["dataset"] != args.dataset or group.get("net", args.net) != args.net or not chosen \
                    or config["rule"] not in ("mf-ad", "mf-dd"):
                continue
            curves = [_curve(run) for run in group["runs"]]
            reached = [next((q for q, acc in curve if acc >= args.reach), None) for curve in curves]
            label = _label(group, legacy)
            finals = [curve[-1][1] for curve in curves]
            rows.append({"method": label, "lr": config["lr"], "seeds": len(curves), "source": str(path),
                         "queries_per_step": group["runs"][0]["summary"]["queries_per_step"],
                         "queries_to_reach": reached, "final_accuracy": finals})
            series.append((label, curves))
    lines = [f"| {r['method']} | {r['lr']:g} | {r['seeds']} | {r['queries_per_step']:g} | "
             + (f"{statistics.mean(r['queries_to_reach']):,.0f}" if None not in r["queries_to_reach"] else
                f"not reached by {sum(q is None for q in r['queries_to_reach'])} seed(s)")
             + f" | {statistics.mean(r['final_accuracy']):.4f} |" for r in rows]
    table = (f"{args.dataset} {args.net}: device queries of training (evaluation excluded) until the cumulative "
             f"test accuracy at the end of an epoch first reached {args.reach}, mean over seeds; mf-ad's queries are "
             "its autograd forwards on the simulator, for scale. Legacy rows trained on the whole training set at a "
             "rate chosen on test (bench/results/legacy).\n\n"
             f"| method | Adam rate | seeds | queries per step | queries to reach {args.reach} | final accuracy |\n"
             "|---|---|---|---|---|---|\n" + "\n".join(lines) + "\n")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, curves in series:
        mean = [statistics.mean(c[i][1] for c in curves) for i in range(min(map(len, curves)))]
        ax.plot([q for q, _ in curves[0][:len(mean)]], mean, marker=".", label=label)
    ax.axhline(args.reach, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("device queries of training")
    ax.set_ylabel("test accuracy, cumulative (mean over seeds)")
    ax.set_title(f"{args.dataset} {args.net}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    args.out.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out / f"{args.name}.png", dpi=110)
    plt.close(fig)
    write_results(args.out, args.name, {"environment": environment(), "reach": args.reach, "rows": rows}, table)
    print(table)


if __name__ == "__main__":
    main()
