"""The ``hil`` command line."""

import argparse
import json
import logging
import os
import signal
import socket
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, closing, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from devices.errors import DeviceError
from hil.allocator import keep_freed_memory
from hil.config import ConfigError, TrainConfig
from hil.data import DatasetError
from hil.liveness import DEFAULT_TIMEOUT, MIN_TIMEOUT
from hil.rules import rule_class, rule_names

if TYPE_CHECKING:
    from hil.access import Bound
    from hil.trainer import Trainer


def _widths(text: str) -> list[int]:
    try:
        return [int(w) for w in text.split(",")] if text.strip() else []
    except ValueError:
        raise argparse.ArgumentTypeError(f"widths must be integers separated by commas, got {text!r}") from None


def _rates(text: str) -> list[float]:
    try:
        rates = [float(r) for r in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"learning rates must be numbers separated by commas, got {text!r}") from None
    if not all(r > 0 for r in rates):
        raise argparse.ArgumentTypeError(f"learning rates must be positive, got {text!r}")
    return rates


def _token(text: str) -> str:
    from hil.access import check_token_text

    try:
        return check_token_text(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _timeout(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of seconds, got {text!r}") from None
    if not seconds >= MIN_TIMEOUT or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"at least {MIN_TIMEOUT:g} seconds (trainers beat every few seconds), "
                                         f"got {text!r}")
    return seconds


TRAIN_FLAGS: list[tuple[str, Callable[[str], Any], str]] = [
    # the generic fields; the flags of each rule's options come from its Options model (rule_option_flags)
    ("device", str, "device URL, e.g. sim://crossbar or sim://crossbar?layers=784,1000,1000"),
    ("hidden", _widths, "hidden widths of a sim:// device whose URL names no layers, e.g. 1000,1000 "
                        "(crossbar: 256,256; photonic: 64); '' with --conv: conv layers only"),
    ("conv", str, "conv layers of such a device before the hidden ones, e.g. 16c3p2,32c3p2 "
     "(channels c kernel p pool)"),
    ("features", int, "features per conv channel that M sees (a fixed random projection of its map)"),
    ("dataset", str, "digits (bundled), mnist, fashion-mnist, cifar10, cifar100, or npz:PATH (numpy.savez of "
     "x_train, y_train, x_test, y_test)"),
    ("data-dir", Path, "folder holding the dataset's files (IDX, or CIFAR's python batches)"),
    ("classes", str, "train on these labels only, relabelled 0, 1, ...: 0,6 is a binary task"),
    ("downsample", int, "average-pool images by this factor, e.g. 2: 28x28 to 14x14 (for small meshes)"),
    ("validation", float, "fraction of the training set held out to choose on (best epoch, rates); 0: none"),
    ("rule", str, "mf-dd (zeroth-order, the product); dfa, mdfa (feedback alignment, host-side); "
     "mf-ad or bp (simulator-only baselines); or an installed plug-in's (hil.rules entry points)"),
    ("epochs", int, "epochs to train (with --resume: the new total)"),
    ("batch-size", int, "samples per step"),
    ("lr", float, "learning rate"),
    ("optimizer", str, "adam or sgd (with --momentum)"),
    ("momentum", float, "SGD momentum"),
    ("lr-schedule", str, "constant, or cosine annealing to 0 over the epochs"),
    ("goodness", str, "softmax (Mono-Forward: cross-entropy of a trained projection) or prototype "
     "(FFzero: hinge on cosine to fixed class prototypes)"),
    ("margin", float, "hinge margin of --goodness prototype"),
    ("seed", int, "seed for initialisation, data order and directions"),
    ("run-dir", Path, "run folder to create"),
    ("torch-device", str, "cpu or cuda for host tensors"),
    ("threads", int, "CPU threads for torch (1 avoids oversubscribing a shared machine)"),
]


def rule_option_flags() -> dict[str, tuple[str, FieldInfo]]:
    """Each installed rule's options by name, with the (first) rule that takes it: one flag each."""
    flags: dict[str, tuple[str, FieldInfo]] = {}
    for rule in rule_names():
        for name, field in rule_class(rule).Options.model_fields.items():
            flags.setdefault(name, (rule, field))
    return flags


def _choices(field: FieldInfo) -> str | None:
    """``{a,b}`` for a field that takes one of a few words, else None (argparse names it)."""
    if get_origin(field.annotation) is Literal:
        return "{" + ",".join(map(str, get_args(field.annotation))) + "}"
    return None


FAULT_FLAGS: list[tuple[str, Callable[[str], Any], str]] = [
    ("corrupt", float, "chance that a frame gets one bit flipped, each direction (default: 0)"),
    ("drop", float, "chance that a frame is lost, each direction (default: 0)"),
    ("latency", float, "milliseconds before every reply (default: 0)"),
    ("baud", int, "throttle replies to this baud rate (default: 0, as fast as the port)"),
    ("disconnect-after", int, "emulate one unplug after this many requests (default: 0, never)"),
    ("fault-seed", int, "seed of the fault dice (default: 0)"),
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
    for name, (rule, field) in rule_option_flags().items():  # values as typed: the rule's Options parses them
        default = field.get_default(call_default_factory=True)
        train.add_argument(f"--{name.replace('_', '-')}", metavar=_choices(field),
                           help=f"{field.description} (rule {rule}; default: {default})")
    train.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a run from its last checkpoint")
    train.add_argument("--json", action="store_true", help="print the summary as one JSON line last")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.add_argument("--serve", action="store_true",
                       help="also run the status service and dashboard in this process (see hil serve)")
    train.add_argument("--port", type=int, default=8765, help="port of --serve (default: 8765)")
    train.add_argument("--token", type=_token, help="token of --serve (default: generated and printed)")

    serve = sub.add_parser(
        "serve",
        help="run the status service and dashboard for a runs folder",
        description="Serve the runs of a folder: a dashboard at /, a JSON API under /api (OpenAPI at /docs), "
        "Server-Sent Events per run, Prometheus metrics at /metrics, and stop/pause/resume controls that "
        "running trainers act on at their next step. Binds to 127.0.0.1 and answers only requests that name it "
        "(the Host header). Open without the token: the dashboard page (/) and its files (/static); everything "
        "else needs it, the API documentation included, unless --public-reads opens the reads. A run whose "
        "trainer is gone (no heartbeat for --heartbeat-timeout seconds, or its process ended on this host) is "
        "marked failed.",
    )
    serve.add_argument("--runs", type=Path, default=Path("runs"), help="runs folder (default: runs)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="port (default: 8765)")
    serve.add_argument("--token", type=_token, help="token for the endpoints (default: generated and printed)")
    serve.add_argument("--public-reads", action="store_true", help="let anyone who can reach it read (not control)")
    serve.add_argument("--heartbeat-timeout", type=_timeout, default=DEFAULT_TIMEOUT,
                       metavar="SECONDS", help="mark a live run failed after this long without its trainer's "
                       f"heartbeat (default: {DEFAULT_TIMEOUT:g})")

    emulate = sub.add_parser(
        "emulate",
        help="serve the bench protocol from a simulated device on a pty or TCP port",
        description="Run the firmware emulator: a simulated device that speaks firmware_protocol.md on a "
        "pseudo-terminal (prints its path; train with --device serial://PATH) or a TCP port "
        "(--device socket://127.0.0.1:PORT); with --scpi, the SCPI dialect for visa:// URLs. Fault options "
        "make the binary link lose, corrupt and delay frames.",
    )
    where = emulate.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", action="store_true", help="serve on a new pseudo-terminal")
    where.add_argument("--tcp", type=int, metavar="PORT", help="serve on 127.0.0.1:PORT (0: any free port)")
    emulate.add_argument("--scpi", action="store_true",
                         help="speak the SCPI dialect (for visa:// URLs) instead of the binary protocol")
    emulate.add_argument("--kind", default="crossbar", help="simulator: crossbar or photonic (default: crossbar)")
    emulate.add_argument("--preset", default="ideal", help="physics preset, see README (default: ideal)")
    emulate.add_argument("--layers", type=_widths, help="widths, input first (default: 64,256,256)")
    emulate.add_argument("--conv", default="", help="crossbar conv layers before the dense ones, e.g. 8c3p2 "
                         "(then --layers is the input width and the dense widths, e.g. 64,10)")
    emulate.add_argument("--seed", type=int, default=0, help="noise seed of the simulated device (default: 0)")
    emulate.add_argument("--threads", type=int, default=1,
                         help="torch threads of the simulation; the host driving it needs the other cores (default: 1)")
    emulate.add_argument("--link", type=Path, help="path of the stable symlink to the pty (default: in /tmp)")
    emulate.add_argument("--no-bias-perturbation", action="store_true",
                         help="serve a firmware without bias perturbations (capability bit 3), to try the host's "
                              "fallback: it writes bias arrays instead")
    for name, kind, text in FAULT_FLAGS:
        emulate.add_argument(f"--{name}", type=kind, default=0, help=text)

    sweep = sub.add_parser(
        "sweep",
        help="train the trials of a sweep file on Ray Tune, locally or on a cluster",
        description="Run a sweep: a base config, a search space over its fields, a validation metric to choose "
        "on, optional early stopping (ASHA) and a trial budget (see examples/sweep.yaml and README's \"Many runs, "
        "many machines\"). Each trial is a hil train run; the sweep folder holds every trial as a run (watch them "
        "live: hil serve --runs DIR/runs), results.md/.json/.png, and best.yaml, the chosen trial's config for hil "
        "train. Needs the extra hil[cluster] (Ray).",
    )
    what = sweep.add_mutually_exclusive_group(required=True)
    what.add_argument("file", nargs="?", type=Path, help="sweep file (YAML)")
    what.add_argument("--resume", type=Path, metavar="DIR", help="continue an interrupted sweep: finished trials "
                      "stay, the others continue from their last checkpoint")
    sweep.add_argument("--out", type=Path, help="sweep folder to create (default: sweeps/<time>-<file name>)")
    sweep.add_argument("--address", help="Ray cluster to run on, e.g. 10.0.0.5:6379 or auto (the one ray start "
                       "made on this machine); default: a local Ray on this machine's cores")
    sweep.add_argument("--jobs", type=int, help="trials at once (default: as many as the cores or devices allow)")

    node = sub.add_parser(
        "node",
        help="start or join a Ray cluster as a node that offers its bench devices to sweeps",
        description="Start a Ray node (ray start) that offers each bench device attached here as one unit of the "
        "resource hil_device_<kind> (crossbar or photonic, read from the device), and a registry that leases each "
        "URL to one trial at a time. A sweep with `device: crossbar` sends its trials to such nodes. Stop the node "
        "with `ray stop`. Needs the extra hil[cluster] (Ray).",
    )
    where_node = node.add_mutually_exclusive_group(required=True)
    where_node.add_argument("--head", action="store_true", help="start a new cluster with this machine as its head")
    where_node.add_argument("--address", help="join the cluster whose head is at this address (host:port)")
    node.add_argument("--device", action="append", default=[], metavar="URL",
                      help="a bench device of this machine, e.g. serial://2E8A:000A/SN1 or visa://... (repeat)")
    node.add_argument("--port", type=int, default=6379, help="--head: the cluster's port (default: 6379)")
    node.add_argument("--cpus", type=int, help="cores this node offers to trials (default: all)")

    export = sub.add_parser("export", help="write a run's metrics from the run store as CSV",
                            description="Write every metric row of a run (id, step, epoch, name, value, time) "
                            "from the runs folder's store as CSV.")
    export.add_argument("run", help="run id (the run folder's name)")
    export.add_argument("--runs", type=Path, default=Path("runs"), help="runs folder (default: runs)")
    export.add_argument("--csv", type=Path, required=True, help="file to write")

    sub.add_parser("devices", help="list serial ports (with USB VID:PID and serial number) and VISA resources")

    firmware = sub.add_parser(
        "firmware",
        help="build the reference C firmware and run it on an emulated Cortex-M3",
        description="The reference firmware in firmware/ (see firmware/README.md). `build` compiles the image "
        "for QEMU's mps2-an385 board (needs gcc-arm-none-eabi and libnewlib-arm-none-eabi); `run-qemu` boots it "
        "with the board's UART on a pseudo-terminal and prints the path (train with --device serial://PATH).",
    )
    action = firmware.add_subparsers(dest="action", required=True)
    build = action.add_parser("build", help="compile the QEMU image (make -C firmware qemu)")
    run_qemu = action.add_parser("run-qemu", help="boot the image in qemu-system-arm, UART on a pty")
    for parser_ in (build, run_qemu):
        parser_.add_argument("--net", help="a network of firmware/nets instead of core/network.h's, "
                             "e.g. conv_digits (a conv layer, then a dense one)")
    run_qemu.add_argument("--image", type=Path, help="firmware ELF (default: the one `hil firmware build` makes "
                          "for --net)")
    run_qemu.add_argument("--link", type=Path, help="also make this stable symlink to the pty")
    run_qemu.add_argument("--build", action="store_true", help="build the image first")

    bench = sub.add_parser(
        "bench",
        help="reproduce the seed papers' experiments (rq1, rq2, mdfa) over several seeds",
        description="rq1: the poster's accuracy table, BP, MF+AD and MF+DD in weight space (P=4, the poster's) and "
        "in activity space, for an MLP and a CNN on digits and every image dataset installed (or those named), "
        "Adam at 3e-3 (weight-space MF+DD at 1e-2) or each method at its best of --lrs on validation. "
        "rq2: weight-space MF+DD for P in 1, 2, 4, 8, mean and projection, "
        "on Fashion-MNIST: accuracy, validation-loss curves, time per epoch. mdfa: BP, DFA and monotone DFA on "
        "binary tasks (pairs of classes) and on all classes. Each writes NAME.json, NAME.md (mean +- std over "
        "seeds) and NAME.png to --out. Choices (rates) are made on a validation split of the training set; the "
        "test set is only reported. The full versions take hours on a laptop; --smoke takes minutes.",
    )
    bench.add_argument("experiment", choices=["rq1", "rq2", "mdfa"])
    bench.add_argument("--out", type=Path, default=Path("results"), help="results folder (default: results)")
    bench.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per configuration (default: 3)")
    bench.add_argument("--epochs", type=int, help="epochs per run (default: 20; 10 for mdfa; 5 with --smoke)")
    bench.add_argument("--datasets", help="comma-separated datasets (default: digits and every one installed; "
                       "rq2 and mdfa take the first, default fashion-mnist)")
    bench.add_argument("--data-dir", type=Path, help="folder of the image dataset named")
    bench.add_argument("--nets", help="rq1: comma-separated networks, MLP and/or CNN (default: both)")
    bench.add_argument("--hidden", type=_widths, help="rq2 and mdfa: the MLP's hidden widths, e.g. 256,256 "
                       "(default: 1000,1000 for rq2, 256,256 for mdfa)")
    bench.add_argument("--name", help="file stem of the results (default: the experiment, plus _smoke with --smoke)")
    bench.add_argument("--smoke", action="store_true", help="a short version on digits with small networks")
    bench.add_argument("--threads", type=int, help="CPU threads for torch, per run (default: all the cores, "
                       "shared out among --jobs)")
    bench.add_argument("--lrs", type=_rates, help="rq1 and mdfa: learning rates to train every method at, e.g. "
                       "0.003,0.01; the table reports each at its best mean validation accuracy (default: one "
                       "rate per method)")
    bench.add_argument("--sweep-seeds", type=int, help="rq1: choose each method's rate among --lrs on the first "
                       "N seeds only, then train the other seeds at the chosen rate (default: every seed, every rate)")
    bench.add_argument("--methods", help="rq1: comma-separated columns, of bp, mf-ad, weight and activity "
                       "(default: all four)")
    bench.add_argument("--jobs", type=int, default=1, help="runs trained at once; more than 1 trains them as "
                       "tasks on a local Ray with N x --threads CPUs, which needs the extra hil[cluster] (default: 1, "
                       "in this process, without Ray)")
    bench.add_argument("--address", metavar="ADDR", help="train the runs on the Ray cluster at ADDR, e.g. "
                       "HOST:6379, or auto for the one `ray start` made on this machine (needs hil[cluster])")
    bench.add_argument("--reuse", type=Path, action="append", default=[], metavar="JSON",
                       help="an earlier results file: its runs whose config equals one asked for are taken "
                       "instead of trained again, e.g. to add seeds (may be repeated)")
    return parser


def _bench(args: argparse.Namespace) -> int:
    from hil.experiments import EXPERIMENTS, METHODS, NETS, Settings

    if args.seeds < 1 or args.jobs < 1 or (args.epochs is not None and args.epochs < 1) or (
            args.sweep_seeds is not None and args.sweep_seeds < 1):
        raise ConfigError("--seeds, --jobs, --epochs and --sweep-seeds must be at least 1")
    if args.lrs and args.experiment == "rq2":
        raise ConfigError("--lrs applies to rq1 and mdfa; rq2 compares P at one rate")
    methods = _names(args.methods) or list(METHODS)
    if args.methods and args.experiment != "rq1" or sorted(set(methods) - set(METHODS)):
        raise ConfigError(f"--methods: rq1 only, and of {', '.join(METHODS)}; got {args.methods!r}")
    threads = args.threads
    if threads is None and (args.jobs > 1 or args.address):
        threads = max(1, (os.cpu_count() or 1) // args.jobs)
    datasets = _names(args.datasets)
    nets = _names(args.nets) or list(NETS)
    unknown = sorted(set(nets) - set(NETS))
    if unknown:
        raise ConfigError(f"--nets: unknown {', '.join(unknown)}; choose from {', '.join(NETS)}")
    settings = Settings(out=args.out, seeds=args.seeds, epochs=args.epochs, datasets=datasets,
                        data_dir=args.data_dir, smoke=args.smoke, threads=threads, nets=nets,
                        hidden=args.hidden, name=args.name, jobs=args.jobs, address=args.address,
                        reuse=args.reuse, lrs=args.lrs, methods=methods, sweep_seeds=args.sweep_seeds)
    path = EXPERIMENTS[args.experiment](settings)
    print(f"wrote {path} (and .json, .png)", file=sys.stderr)
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from hil.cluster.engine import require_ray

    require_ray()
    from hil.cluster.sweep import resume, sweep

    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {args.jobs}")
    if args.resume is not None:
        if args.out is not None:
            raise ConfigError("--resume continues the sweep in its own folder; leave out --out")
        path = resume(args.resume, args.address, args.jobs)
    else:
        out = args.out or Path("sweeps") / f"{time.strftime('%Y%m%d-%H%M%S')}-{args.file.stem}"
        path = sweep(args.file, out, args.address, args.jobs)
    print(f"wrote {path} (and results.json, results.png, best.yaml; the trials' runs in {path.parent / 'runs'})",
          file=sys.stderr)
    return 0


def _node(args: argparse.Namespace) -> int:
    from hil.cluster.node import start_node

    if not args.device:
        raise ConfigError("give the bench devices of this machine: --device URL (repeat for several)")
    kinds = start_node(args.device, head=args.head, address=args.address, port=args.port, cpus=args.cpus)
    for url, kind in kinds.items():
        print(f"offering {url} as one {kind}", file=sys.stderr)
    print("stop this node with: ray stop", file=sys.stderr)
    return 0


def _names(text: str | None) -> list[str]:
    """Comma-separated names, blanks dropped."""
    return [n.strip() for n in text.split(",") if n.strip()] if text else []


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given: generic fields at the top level, the rule's options in ``rule_options``."""
    out: dict[str, Any] = {}
    for name, _, _ in TRAIN_FLAGS:
        key = name.replace("-", "_")
        value = getattr(args, key)
        if value is not None:
            out[key] = value
    options = {name: getattr(args, name) for name in rule_option_flags() if getattr(args, name) is not None}
    if options:
        out["rule_options"] = options
    return out


def _train(args: argparse.Namespace) -> int:
    if not args.serve:
        return _train_run(args, None)
    from hil.serving import listen

    listener = listen("127.0.0.1", args.port)  # first: a busy port ends the command before any run folder exists
    with closing(listener[0]):
        return _train_run(args, listener)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM before training began."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signal = signal.Signals(signum)


def _interrupt(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def _start(args: argparse.Namespace) -> "Trainer":
    """The run's config and folder, and a trainer ready to fit; a fresh run's folder goes if this fails."""
    from hil.api import start

    return start(_overrides(args), args.config, args.resume, progress=not args.no_progress)


def _train_run(args: argparse.Namespace, listener: "tuple[socket.socket, Bound] | None") -> int:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    try:
        trainer = _start(args)
    except Interrupted as err:
        kept = "no run was started" if args.resume is None else f"{str(args.resume)!r} is as its checkpoint left it"
        print(f"hil: stopped by {err.signal.name} during start-up; {kept} (exit status {128 + err.signal})",
              file=sys.stderr)
        return 128 + err.signal
    with trainer:
        if listener is not None:
            from hil.serving import serve_in_thread

            service: AbstractContextManager = serve_in_thread(trainer.run.path.parent, listener, args.token)
        else:
            service = nullcontext()
        print(trainer.rule.summary(), file=sys.stderr)
        with service:
            summary = trainer.fit()
    acc = summary["test_accuracy"]
    print(f"{summary['status']}: test accuracy {acc if acc is None else f'{acc:.4f}'} "
          f"after {summary['epochs']} epochs, {summary['device_queries']} device queries, "
          f"run in {summary['run_dir']}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary))
    if summary["status"] == "finished":
        return 0
    signum = trainer.stop.signum
    status = 128 + (signum or signal.SIGINT)
    cause = f"by {signal.Signals(signum).name}" if signum else f"({trainer.stop.reason})"
    print(f"stopped {cause} at epoch {trainer.epoch + 1} step {trainer.step_in_epoch} with a checkpoint; "
          f"continue with: hil train --resume {summary['run_dir']} (exit status {status})", file=sys.stderr)
    return status


def _emulate(args: argparse.Namespace) -> int:
    import torch

    from simulators.emulator import Faults, Firmware
    from simulators.registry import open_sim
    from simulators.serve import PtyServer, serve_tcp

    if args.threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads)

    query = f"preset={args.preset}&seed={args.seed}"
    if args.layers:
        query += "&layers=" + ",".join(map(str, args.layers))
    if args.conv:
        query += f"&conv={args.conv}"
    device = open_sim(f"sim://{args.kind}?{query}")
    try:
        faults = Faults(corrupt=args.corrupt, drop=args.drop, latency_ms=args.latency, baud=args.baud,
                        disconnect_after=args.disconnect_after, seed=args.fault_seed)
    except ValidationError as err:
        first = err.errors()[0]
        raise ConfigError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}") from None
    firmware = Firmware(device, bias_perturbation=not args.no_bias_perturbation)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(f"emulating {device.info().identity}", file=sys.stderr)
    try:
        dialect = "scpi" if args.scpi else "binary"
        if args.tcp is not None:
            def ready(port: int) -> None:
                url = f"visa://TCPIP0::127.0.0.1::{port}::SOCKET" if args.scpi else f"socket://127.0.0.1:{port}"
                print(url, flush=True)
                print(f"train with: hil train --device {url}   (Ctrl-C stops)", file=sys.stderr)

            serve_tcp(firmware, args.tcp, faults, dialect=dialect, ready=ready)
        else:
            server = PtyServer(firmware, faults, args.link, dialect=dialect)
            url = f"visa://ASRL{server.port}::INSTR" if args.scpi else f"serial://{server.port}"
            print(server.port, flush=True)
            print(f"train with: hil train --device {url}   (Ctrl-C stops)", file=sys.stderr)
            server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def _serve(args: argparse.Namespace) -> int:
    from hil.serving import listen, serve_forever

    if not args.runs.is_dir():
        raise ConfigError(f"--runs {str(args.runs)!r} is not a folder; give the folder that holds your run folders")
    serve_forever(args.runs, listen(args.host, args.port), args.token, args.public_reads, args.heartbeat_timeout)
    return 0


def _export(args: argparse.Namespace) -> int:
    from hil.store import STORE_NAME, RunStore, UnknownRun

    if not (args.runs / STORE_NAME).exists():
        raise ConfigError(f"{str(args.runs)!r} has no run store ({STORE_NAME}); give the folder that holds your runs")
    store = RunStore.for_runs(args.runs)
    try:
        rows = store.export_csv(args.run, args.csv)
    except UnknownRun:
        known = ", ".join(r["id"] for r in store.runs()) or "none"
        raise ConfigError(f"no run {args.run!r} in {str(args.runs)!r} (runs: {known})") from None
    print(f"wrote {rows} metric rows of {args.run} to {args.csv}", file=sys.stderr)
    return 0


def _devices() -> int:
    import serial.tools.list_ports

    ports = serial.tools.list_ports.comports()
    print("serial ports:" if ports else "serial ports: none found")
    for port in ports:
        usb = f"{port.vid:04X}:{port.pid:04X}" if port.vid is not None else "-"
        print(f"  serial://{port.device}  usb {usb}  serial number {port.serial_number or '-'}  {port.description}")
    try:
        import pyvisa
    except ImportError:
        print("VISA resources: pyvisa is not installed")
        return 0
    try:
        with warnings.catch_warnings():  # pyvisa-py suggests optional packages for wider discovery
            warnings.simplefilter("ignore")
            resources = pyvisa.ResourceManager("@py").list_resources()
    except Exception as err:  # noqa: BLE001 - any backend failure is reported, not fatal
        print(f"VISA resources: cannot list ({err})")
        return 0
    print("VISA resources:" if resources else "VISA resources: none found")
    for name in resources:
        print(f"  visa://{name}")
    return 0


def _firmware(args: argparse.Namespace) -> int:
    from simulators.qemu import QemuFirmware, build_firmware, image_path

    if args.action == "build" or args.build:
        image = build_firmware(args.net)
        print(f"built {image}", file=sys.stderr)
        if args.action == "build":
            return 0
    qemu = QemuFirmware(args.image or image_path(args.net), args.link)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        qemu.start()
        print(qemu.port, flush=True)
        print(f"train with: hil train --device serial://{qemu.port}   (Ctrl-C stops)", file=sys.stderr)
        return qemu.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        qemu.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command in ("train", "emulate", "bench", "sweep"):
        keep_freed_memory()
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "emulate":
            return _emulate(args)
        if args.command == "devices":
            return _devices()
        if args.command == "serve":
            return _serve(args)
        if args.command == "export":
            return _export(args)
        if args.command == "firmware":
            return _firmware(args)
        if args.command == "bench":
            return _bench(args)
        if args.command == "sweep":
            return _sweep(args)
        if args.command == "node":
            return _node(args)
    except (ConfigError, DatasetError, DeviceError, FileExistsError) as err:
        print(f"hil: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hil: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
