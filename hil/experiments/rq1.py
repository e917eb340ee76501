"""rq1, the poster's accuracy table: BP, MF+AD and MF+DD in weight and activity space, MLP and CNN."""

from pathlib import Path
from typing import Any

from hil.experiments.report import finish, mean_curve, pm, pyplot, split_note
from hil.experiments.runner import Runner, choose_rates, over_seeds, settle
from hil.experiments.settings import Settings, available_datasets, data_dir_for, training

# the poster's test accuracies (BP, MF+AD, MF+DD P=4; cumulative), reference.md section 1
POSTER = {
    ("mnist", "MLP"): (0.973, 0.950, 0.933), ("fashion-mnist", "MLP"): (0.879, 0.860, 0.837),
    ("cifar10", "MLP"): (0.486, 0.526, 0.376), ("cifar100", "MLP"): (0.208, 0.189, 0.109),
    ("mnist", "CNN"): (0.989, 0.965, 0.949), ("fashion-mnist", "CNN"): (0.911, 0.883, 0.842),
    ("cifar10", "CNN"): (0.731, 0.552, 0.418), ("cifar100", "CNN"): (0.430, 0.274, 0.176),
}
# rq1's columns: the baselines, the poster's weight-space estimator and the activity-space one
METHODS: dict[str, dict[str, Any]] = {
    "bp": {"rule": "bp"},
    "mf-ad": {"rule": "mf-ad"},
    "weight": {"rule": "mf-dd", "estimator": "weight", "directions": 4},
    "activity": {"rule": "mf-dd", "estimator": "activity"},
}
METHOD_TITLES = {"bp": "BP", "mf-ad": "MF+AD", "weight": "MF+DD weight (P=4)", "activity": "MF+DD activity"}
# rq1's Adam rates without --lrs: a weight-space estimate's noise shortens Adam's steps along the
# gradient, so it trains best at a higher rate (Fashion MLP 256-256, P=4: 0.844 at 3e-3, 0.859 at 1e-2)
# The activity estimate's 1e-2 is what validation chose on the Fashion MLP (bench/results/rq1_mlp.md).
RQ1_RATES = {"bp": 3e-3, "mf-ad": 3e-3, "weight": 1e-2, "activity": 1e-2}
NETS = {  # rq1's networks: full size, and the smoke version's
    "MLP": {"full": {"hidden": [1000, 1000]}, "smoke": {"hidden": [32]}},
    "CNN": {"full": {"conv": "32c3p2,64c3p2,128c3", "hidden": []}, "smoke": {"conv": "8c3p2,16c3", "hidden": []}},
}


def rq1(settings: Settings) -> Path:
    """The poster's accuracy table: BP, MF+AD and MF+DD (weight and activity space), MLP and CNN, per dataset.

    Each method trains at every rate of ``--lrs`` (default: its own rate, :data:`RQ1_RATES`) and
    is reported at the rate with the best mean validation accuracy over the seeds.
    """
    nets = {net: NETS[net]["smoke" if settings.smoke else "full"] for net in settings.nets or NETS}
    methods = settings.methods or list(METHODS)
    rates = {method: settings.lrs or [1e-2 if settings.smoke else RQ1_RATES[method]] for method in methods}
    sweep = range(min(settings.sweep_seeds or settings.seeds, settings.seeds))
    groups = []
    with Runner(settings.jobs, settings.reuse, settings.address) as runner:
        for dataset in available_datasets(settings):
            for net, shape in nets.items():
                for method in methods:
                    for lr in rates[method]:
                        values = {**training(settings, 20, lr), "lr": lr, **shape, **METHODS[method],
                                  "dataset": dataset, "data_dir": data_dir_for(settings, dataset)}
                        label = f"{dataset} {net} {method}" + (f" lr {lr:g}" if len(rates[method]) > 1 else "")
                        group = over_seeds(runner, settings, values, label, sweep)
                        groups.append({**group, "dataset": dataset, "net": net, "method": method, "values": values,
                                       "rule": METHODS[method]["rule"], "lr": values["lr"]})
        groups = [settle(g) for g in groups]
        choose_rates(groups, ("dataset", "net", "method"))
        best = [g for g in groups if g["best_lr"]]
        rest = range(len(sweep), settings.seeds)
        for g in best:  # the seeds the sweep left out, at the rate it chose
            g["runs"] += over_seeds(runner, settings, g.pop("values"), g["label"], rest)["runs"]
        best = [settle(g) for g in best]
    for g in groups:
        g.pop("values", None)
    rows = []
    for dataset, net in dict.fromkeys((g["dataset"], g["net"]) for g in best):
        cells = {g["method"]: g for g in best if (g["dataset"], g["net"]) == (dataset, net)}
        poster = POSTER.get((dataset, net))
        rows.append(f"| {dataset} | {net} | " + " | ".join(
            pm(g["test_accuracy"])
            + ("" if g["rule"] == "bp" else f" ({g['test_accuracy_final_layer']['mean']:.4f})")
            + (f", lr {g['lr']:g}" if len(rates[method]) > 1 else "")
            for method, g in cells.items()) + f" | {' / '.join(map(str, poster)) if poster else 'n/a'} |")
    epochs = best[0]["runs"][0]["summary"]["epochs"]
    chosen_on = "" if len(sweep) == settings.seeds else f" over seeds 0-{len(sweep) - 1}"
    how = (f"each at the Adam rate of {', '.join(f'{lr:g}' for lr in settings.lrs)} with the best mean validation "
           f"accuracy{chosen_on}" if settings.lrs and len(settings.lrs) > 1 else
           "Adam from " + ", ".join(f"{m} {rates[m][0]:g}" for m in methods) + " (not chosen in this run)")
    table = (f"{settings.seeds} seeds, {epochs} epochs, cosine decay, {how}; ideal simulated crossbar; "
             f"{split_note(best)}; mean +- std of test accuracy (cumulative for Mono-Forward; final layer mean in "
             "parentheses).\n\n"
             f"| dataset | net | {' | '.join(METHOD_TITLES[m] for m in methods)} | poster BP / AD / DD |\n"
             f"|---|---|{'---|' * len(methods)}---|\n" + "\n".join(rows) + "\n")
    return finish(settings, "rq1", groups, table, {"nets": nets, "rates": rates},
                   lambda path: _plot_rq1(path, best))


def _plot_rq1(path: Path, groups: list[dict[str, Any]]) -> None:
    plt = pyplot()
    panels = sorted({(g["dataset"], g["net"]) for g in groups})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.8), squeeze=False)
    for ax, (dataset, net) in zip(axes[0], panels):
        for g in (g for g in groups if (g["dataset"], g["net"]) == (dataset, net)):
            key = "test_accuracy_final_layer" if g["rule"] == "bp" else "test_accuracy_cumulative"
            curve = mean_curve(g, key)
            ax.plot(range(1, len(curve) + 1), curve, label=METHOD_TITLES[g["method"]])
        ax.set_title(f"{dataset} {net}")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"test accuracy (mean of {len(groups[0]['runs'])} seeds)")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
