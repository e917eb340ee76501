"""rq2, the poster's second question: weight-space MF+DD against the number of directions P."""

from pathlib import Path
from typing import Any

from hil.experiments.report import finish, mean_curve, pm, pyplot, split_note
from hil.experiments.runner import Runner, over_seeds, settle
from hil.experiments.settings import Settings, data_dir_for, hidden_widths, training


def rq2(settings: Settings) -> Path:
    """MF+DD in weight space (the poster's question) for P in {1, 2, 4, 8}, mean and projection:
    accuracy, validation loss, time per epoch."""
    dataset = "digits" if settings.smoke else (settings.datasets or ["fashion-mnist"])[0]
    train = {**training(settings, 20, 3e-3), "hidden": hidden_widths(settings, [32], [1000, 1000]),
             "rule": "mf-dd", "estimator": "weight", "dataset": dataset, "data_dir": data_dir_for(settings, dataset)}
    with Runner(settings.jobs, settings.reuse, settings.address) as runner:
        groups = [{**over_seeds(runner, settings, {**train, "directions": p, "combine": combine}, f"P={p} {combine}"),
                   "directions": p, "combine": combine}
                  for p in (1, 2, 4, 8) for combine in ("mean", "projection")]
        groups = [settle(g) for g in groups]
    rows = [f"| {g['directions']} | {g['combine']} | {pm(g['test_accuracy'])} | "
            f"{g['test_accuracy_final_layer']['mean']:.4f} | {mean_curve(g, 'val_loss')[-1]:.4f} | "
            f"{g['seconds_per_epoch']['mean']:.2f} | {g['queries_per_step']:.0f} |" for g in groups]
    table = (f"{dataset}, MLP {train['hidden']}, {settings.seeds} seeds, {train['epochs']} epochs, ideal simulated "
             f"crossbar, weight-space estimate; {split_note(groups)}.\n\n"
             "| P | combine | test acc. cumulative | final layer | validation loss | "
             "train s / epoch | queries / step |\n|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    return finish(settings, "rq2", groups, table, {"train": train},
                   lambda path: _plot_rq2(path, groups))


def _plot_rq2(path: Path, groups: list[dict[str, Any]]) -> None:
    plt = pyplot()
    fig, (loss_ax, acc_ax, time_ax) = plt.subplots(1, 3, figsize=(14, 4))
    colors: dict[int, Any] = {}
    for g in groups:
        style = "-" if g["combine"] == "mean" else "--"
        curve = mean_curve(g, "val_loss")
        line, = loss_ax.plot(range(1, len(curve) + 1), curve, style, color=colors.get(g["directions"]),
                             label=f"P={g['directions']} {g['combine']}")
        colors[g["directions"]] = line.get_color()
    for combine, style in (("mean", "o-"), ("projection", "s--")):
        chosen = [g for g in groups if g["combine"] == combine]
        ps = [g["directions"] for g in chosen]
        acc_ax.errorbar(ps, [g["test_accuracy"]["mean"] for g in chosen],
                        yerr=[g["test_accuracy"]["std"] for g in chosen], fmt=style, capsize=3, label=combine)
        time_ax.plot(ps, [g["seconds_per_epoch"]["mean"] for g in chosen], style, label=combine)
    loss_ax.set(xlabel="epoch", ylabel="validation loss (final layer)", title="validation loss")
    acc_ax.set(xlabel="P", ylabel="test accuracy (cumulative)", title="accuracy against P")
    time_ax.set(xlabel="P", ylabel="train seconds per epoch", title="time against P")
    for ax in (acc_ax, time_ax):  # P on a log-2 axis, ticked at the P run
        ax.set_xscale("log", base=2)
        ax.set_xticks(ps, [str(p) for p in ps])
        ax.minorticks_off()
    for ax in (loss_ax, acc_ax, time_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
