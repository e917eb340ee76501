"""The seed papers' experiments as commands: ``hil bench rq1``, ``hil bench rq2``, ``hil bench mdfa``.

Each trains a grid of configs over several seeds on the simulated crossbar and writes
``NAME.json`` (every run's config, summary and history), ``NAME.md`` (mean +- std over the seeds,
published numbers beside) and ``NAME.png`` to a results folder. ``smoke`` is a short version on
digits that CI runs; the benchmark scripts in ``bench/`` share the pieces here. Runs may train
several at once as Ray tasks, on a local Ray (``jobs``) or a cluster (``address``), and runs already
in earlier results files with the very same config are taken from there instead of trained again
(``reuse``), so a long grid can grow by seeds.

One module per concern: :mod:`.settings` (the command line's knobs), :mod:`.runner` (training
runs, here or on Ray, reuse, statistics, choosing rates on validation), :mod:`.report` (results
files, tables, plots), and one module per experiment.
"""

from collections.abc import Callable
from pathlib import Path

from hil.experiments.mdfa import mdfa
from hil.experiments.report import environment, plot_curves, pyplot, write_results
from hil.experiments.rq1 import METHODS, NETS, rq1
from hil.experiments.rq2 import rq2
from hil.experiments.runner import Runner, choose_rates, config_key, finished_runs, over_seeds, run_config, settle
from hil.experiments.settings import Settings

EXPERIMENTS: dict[str, Callable[[Settings], Path]] = {"rq1": rq1, "rq2": rq2, "mdfa": mdfa}

__all__ = ["EXPERIMENTS", "METHODS", "NETS", "Runner", "Settings", "choose_rates", "config_key", "environment",
           "finished_runs", "over_seeds", "plot_curves", "pyplot", "run_config", "settle", "write_results"]
