"""mdfa: BP, DFA and monotone DFA on binary tasks (pairs of classes) and on all classes."""

from pathlib import Path
from typing import Any

from hil.experiments.report import finish, pm, pyplot, split_note
from hil.experiments.runner import Runner, choose_rates, over_seeds, settle
from hil.experiments.settings import Settings, data_dir_for, hidden_widths, training

FASHION_PAIRS = [(0, 6), (2, 4), (5, 7), (1, 3)]  # T-shirt/shirt, pullover/coat, sandal/sneaker, trouser/dress
DIGIT_PAIRS = [(3, 8), (1, 7)]


MDFA_RULES = ("bp", "dfa", "mdfa")


def mdfa(settings: Settings) -> Path:
    """BP, DFA and monotone DFA on binary tasks (pairs of classes) and on all classes, tanh MLP.

    With several ``lrs`` every rule trains at each, and the table reports each rule at its best
    (by mean validation accuracy over the seeds), so no rule is judged at a rate that suits another.
    """
    dataset = "digits" if settings.smoke else (settings.datasets or ["fashion-mnist"])[0]
    pairs = DIGIT_PAIRS if dataset == "digits" else FASHION_PAIRS
    tasks: list[list[int] | None] = [list(p) for p in pairs] + [None]
    train = {**training(settings, 10, 1e-2), "hidden": hidden_widths(settings, [32, 32], [256, 256]),
             "device": "sim://crossbar?activation=tanh", "dataset": dataset,
             "data_dir": data_dir_for(settings, dataset)}
    lrs = settings.lrs or [train["lr"]]
    names = [f"classes {c[0]} vs {c[1]}" if c else "all classes" for c in tasks]
    with Runner(settings.jobs, settings.reuse, settings.address) as runner:
        groups = [{**over_seeds(runner, settings, {**train, "rule": rule, "classes": classes, "lr": lr},
                                f"{name} {rule}" + (f" lr {lr:g}" if len(lrs) > 1 else "")),
                   "task": name, "rule": rule, "lr": lr}
                  for classes, name in zip(tasks, names) for rule in MDFA_RULES for lr in lrs]
        groups = [settle(g) for g in groups]
    choose_rates(groups, ("task", "rule"))
    best = {(g["task"], g["rule"]): g for g in groups if g["best_lr"]}
    rows = []
    for name in names:
        cells = [best[name, rule] for rule in MDFA_RULES]
        gap = cells[2]["test_accuracy"]["mean"] - cells[1]["test_accuracy"]["mean"]
        rows.append(f"| {name} | " + " | ".join(
            pm(g["test_accuracy"]) + (f" (lr {g['lr']:g})" if len(lrs) > 1 else "") for g in cells)
            + f" | {gap:+.4f} |")
    rates = (f"; each rule at its best Adam learning rate of {', '.join(f'{lr:g}' for lr in lrs)} (by mean "
             "validation accuracy over the seeds)" if len(lrs) > 1 else f"; Adam learning rate {lrs[0]:g}")
    table = (f"{dataset}, tanh MLP {train['hidden']}, {settings.seeds} seeds, {train['epochs']} epochs, "
             f"ideal simulated crossbar, {split_note(groups)}; test accuracy of the final layer{rates}.\n\n"
             "| task | BP | DFA | mDFA | mDFA - DFA |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    return finish(settings, "mdfa", groups, table, {"train": train, "lrs": lrs},
                   lambda path: _plot_mdfa(path, groups, names, lrs))


def _plot_mdfa(path: Path, groups: list[dict[str, Any]], tasks: list[str], lrs: list[float]) -> None:
    """Each rule at its best rate per task (bars); with several rates, accuracy against the rate per task."""
    plt = pyplot()
    sweep = len(lrs) > 1
    fig = plt.figure(figsize=(max(1.8 * len(tasks) + 3, 3 * len(tasks)), 7.5 if sweep else 4))
    grid = fig.add_gridspec(2 if sweep else 1, len(tasks))
    ax = fig.add_subplot(grid[0, :])
    for offset, rule in enumerate(MDFA_RULES):
        chosen = [next(g for g in groups if g["task"] == t and g["rule"] == rule and g["best_lr"]) for t in tasks]
        ax.bar([i + (offset - 1) * 0.27 for i in range(len(tasks))], [g["test_accuracy"]["mean"] for g in chosen],
               0.27, yerr=[g["test_accuracy"]["std"] for g in chosen], capsize=3, label=rule)
    ax.set_xticks(range(len(tasks)), tasks, fontsize=8)
    ax.set_ylabel("test accuracy" + (" (best rate)" if sweep else ""))
    low = min(g["test_accuracy"]["mean"] for g in groups if g["best_lr"])
    ax.set_ylim(max(0.0, low - 0.05), 1)  # the gaps between rules are small beside the accuracies
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    for column, task in enumerate(tasks if sweep else []):
        sub = fig.add_subplot(grid[1, column])
        for rule in MDFA_RULES:
            tried = [g for g in groups if g["task"] == task and g["rule"] == rule]
            sub.errorbar([g["lr"] for g in tried], [g["test_accuracy"]["mean"] for g in tried],
                         yerr=[g["test_accuracy"]["std"] for g in tried], fmt="o-", capsize=2, label=rule)
        sub.set_xscale("log")
        sub.set_xticks(lrs, [f"{lr:g}" for lr in lrs], fontsize=7)
        sub.minorticks_off()
        sub.set_title(task, fontsize=9)
        sub.set_xlabel("learning rate", fontsize=8)
        sub.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
