"""The ``hil`` command line."""

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devices.errors import DeviceError
from hil.config import ConfigError, TrainConfig, build_config, load_config
from hil.data import DatasetError
from hil.runs import RunFolder


def _widths(text: str) -> list[int]:
    try:
        return [int(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"widths must be integers separated by commas, got {text!r}") from None


TRAIN_FLAGS: list[tuple[str, Callable[[str], Any], str]] = [
    ("device", str, "device URL, e.g. sim://crossbar or sim://crossbar?layers=784,1000,1000"),
    ("hidden", _widths, "hidden widths of a sim:// device whose URL names no layers, e.g. 1000,1000"),
    ("dataset", str, "digits (bundled), mnist or fashion-mnist"),
    ("data-dir", Path, "folder holding the dataset's IDX files"),
    ("rule", str, "mf-dd (zeroth-order, the product), mf-ad or bp (simulator-only baselines)"),
    ("epochs", int, "epochs to train (with --resume: the new total)"),
    ("batch-size", int, "samples per step"),
    ("lr", float, "learning rate"),
    ("optimizer", str, "adam or sgd (momentum)"),
    ("lr-schedule", str, "constant, or cosine annealing to 0 over the epochs"),
    ("directions", int, "P, perturbation directions per layer and step"),
    ("distribution", str, "rademacher, gaussian or sphere"),
    ("combine", str, "mean, or projection onto the span of the directions"),
    ("eps", float, "perturbation step in parameter units"),
    ("m-update", str, "exact (closed-form local gradient) or dd for the host projection M"),
    ("seed", int, "seed for initialisation, data order and directions"),
    ("run-dir", Path, "run folder to create"),
    ("torch-device", str, "cpu or cuda for host tensors"),
]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hil",
        description="Hardware-in-the-loop training: Mono-Forward with zeroth-order directional "
        "derivatives measured on an analog device (or the bundled simulator).",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v info, -vv debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser(
        "train",
        help="train a network on a device",
        description="Train on a device. With no arguments: mf-dd on the bundled digits on the "
        "simulated crossbar. Flags override the config file; every field is listed in README.md.",
    )
    train.add_argument("config", nargs="?", type=Path, help="YAML config file")
    for name, kind, text in TRAIN_FLAGS:
        default = TrainConfig.model_fields[name.replace("-", "_")].default
        train.add_argument(f"--{name}", type=kind, help=f"{text} (default: {default})")
    train.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a run from its last checkpoint")
    train.add_argument("--json", action="store_true", help="print the summary as one JSON line last")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out = {}
    for name, _, _ in TRAIN_FLAGS:
        key = name.replace("-", "_")
        value = getattr(args, key)
        if value is not None:
            out[key] = value
    return out


def _train(args: argparse.Namespace) -> int:
    from hil.trainer import Trainer

    overrides = _overrides(args)
    if args.resume is not None:
        if args.config is not None:
            raise ConfigError("give either a config file or --resume RUN_DIR, not both")
        run = RunFolder(args.resume)
        if run.load_checkpoint() is None:
            raise ConfigError(f"{str(args.resume)!r} has no checkpoint to resume from")
        config = run.config(overrides)
    else:
        config = load_config(args.config, overrides) if args.config else build_config(overrides)
        run = RunFolder.create(config)
    trainer = Trainer(config, run, progress=not args.no_progress)
    print(trainer.rule.summary(), file=sys.stderr)
    summary = trainer.fit()
    acc = summary["test_accuracy"]
    print(f"{summary['status']}: test accuracy {acc if acc is None else f'{acc:.4f}'} "
          f"after {summary['epochs']} epochs, {summary['device_queries']} device queries, "
          f"run in {summary['run_dir']}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary))
    return 0 if summary["status"] == "finished" else 130


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "train":
            return _train(args)
    except (ConfigError, DatasetError, DeviceError, FileExistsError) as err:
        print(f"hil: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
