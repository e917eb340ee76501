"""The training loop: data in batches through a rule, optimizer steps, evaluation, checkpoints.

What the loop runs on (data, device, network, rule, optimizer) is built by :class:`hil.session.Session`.
"""

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import torch
from tqdm import tqdm

from devices.info import DeviceInfo
from devices.interface import Device
from hil.config import RESUMABLE, TrainConfig, move_flat_rule_options
from hil.data import Dataset
from hil.model import MonoForward
from hil.recorder import RunRecorder
from hil.rules import Rule
from hil.rules.base import StepOutput
from hil.runs import CHECKPOINT, CheckpointError, RunFolder
from hil.session import Session
from hil.store import RunStore

log = logging.getLogger(__name__)

EVAL_BATCH = 1000
STOP_SIGNALS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}


@dataclass
class StopFlag:
    """Asked to stop at the next step boundary (Ctrl-C, SIGTERM, or a controller)."""

    event: threading.Event = field(default_factory=threading.Event)
    reason: str = ""
    signum: int | None = None
    """The signal that asked, if one did."""

    def request(self, reason: str, signum: int | None = None) -> None:
        self.reason = reason
        self.signum = signum
        self.event.set()

    @property
    def requested(self) -> bool:
        return self.event.is_set()


@dataclass
class Evaluation:
    final_layer: float
    cumulative: float
    loss: float
    """The final layer's local loss on the set (cross-entropy, or the prototype hinge)."""


def headline_keys(layer_local: bool) -> tuple[str, str]:
    """A metrics row's headline accuracy on the test and the validation set: the cumulative one for a
    layer-local rule, else the final layer's."""
    which = "cumulative" if layer_local else "final_layer"
    return f"test_accuracy_{which}", f"val_accuracy_{which}"


class Trainer:
    """Runs one config to completion (or to a stop request), resuming from a checkpoint."""

    def __init__(self, config: TrainConfig, run: RunFolder, progress: bool = True, data: Dataset | None = None) -> None:
        """Start-up: the run's :class:`~hil.session.Session`, then the checkpoint or a calibration. Nothing is
        written until :meth:`fit`, so a run refused or interrupted here leaves its folder as it was.

        ``data`` is the dataset ``config.dataset`` names when only Python has it (:func:`hil.data.from_arrays`).
        The trainer holds the device open until :meth:`close` (or the end of a ``with`` block); a start-up
        that fails closes it.
        """
        self.config = config
        self.run = run
        self.progress = progress
        self.session = Session.open(config, data)
        with ExitStack() as on_failure:
            on_failure.enter_context(self.session)
            self._start_up()
            on_failure.pop_all()

    def _start_up(self) -> None:
        """The run's state: restored from the checkpoint, or fresh with the rule's calibration."""
        self.stop = StopFlag()
        self.epoch = 0
        self.step_in_epoch = 0
        self.train_seconds = 0.0
        self.train_queries = 0
        self.train_steps = 0
        self.earlier_queries = 0
        self.history: list[dict[str, Any]] = []
        self.epoch_losses: list[float] = []
        self.on_step: Callable[[Trainer], None] | None = None
        self.on_epoch: Callable[[Trainer, dict[str, Any]], None] | None = None
        """Called with each epoch's metrics row once it is committed with its checkpoint."""
        self.calibration: dict[str, Any] | None = None
        self.recorder: RunRecorder
        """The run's reports to the store; opened by :meth:`begin`."""
        self.store: RunStore | None = None
        """Where the run reports: default the store of the runs folder; a sweep's trial reports to the driver's."""
        checkpoint = self.run.load_checkpoint()
        if checkpoint is not None:
            self._check_checkpoint(checkpoint)
        self.epoch_estimate = self.session.estimate_epoch()
        """Seconds an epoch is expected to take: from a timed sample of a step at start-up, or the first step."""
        if checkpoint is not None:
            self._restore_checked(checkpoint)
        else:
            self.calibration = self.session.calibrate()
        self.resumed = checkpoint is not None
        self._saved_steps = self.train_steps if self.resumed else None
        self.scheduler = self.session.scheduler(self.epoch)
        self.model.clip_(self.info, self.rule.margin())
        self.rule.constrain_()

    @property
    def data(self) -> Dataset:
        """The run's dataset, selected and split for validation."""
        return self.session.data

    @property
    def device_url(self) -> str:
        """The device's URL, as resolved for the dataset."""
        return self.session.device_url

    @property
    def device(self) -> Device:
        """The open device."""
        return self.session.device

    @property
    def info(self) -> DeviceInfo:
        """The device's layers, bounds and identity."""
        return self.session.info

    @property
    def model(self) -> MonoForward:
        """The network whose parameters the device evaluates."""
        return self.session.model

    @property
    def rule(self) -> Rule:
        """The learning rule."""
        return self.session.rule

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The optimizer over the network's tensors."""
        return self.session.optimizer

    def close(self) -> None:
        """Close the device. Idempotent."""
        self.session.close()

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def step(self, x: torch.Tensor, y: torch.Tensor, step: int) -> StepOutput:
        """One training step on batch ``(x, y)``: the rule's gradients, the optimizer, the device's bounds."""
        self.optimizer.zero_grad(set_to_none=True)
        out = self.rule.step(x, y, step)
        self.optimizer.step()
        self.model.clip_(self.info, self.rule.margin())
        self.rule.constrain_()
        return out

    def steps_per_epoch(self) -> int:
        """Optimizer steps in an epoch."""
        return self.session.steps_per_epoch()

    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs; returns the run summary (also written to the folder).

        From here on Ctrl-C and SIGTERM stop the run at the next step boundary with a final checkpoint.
        """
        with self._stop_on_signals():
            self.begin()
            try:
                while self.epoch < self.config.epochs and not self.stop.requested:
                    self.train_epoch()
            except BaseException as err:
                self.fail(err)
                raise
            return self.end()

    def begin(self) -> None:
        """Open the run's store records where the checkpoint left them (nothing on a fresh start).

        :meth:`fit` does; a driver that runs :meth:`train_epoch` itself calls this first, and :meth:`end` last.
        """
        log.info("%s on %s (%s)", self.rule.summary(), self.device_url, self.info.identity)
        self.recorder = RunRecorder(self.run, self.config.model_dump(mode="json"), self.device_url,
                                    self.info.identity, self.config.seed, self.store)
        self.recorder.rewind(self.train_steps)
        self.run.keep_metrics(self.history)
        if self.resumed:
            self.recorder.event("resumed", {**self._where(), **self.rule.report()})
        else:
            self.recorder.event("started", {"rule": self.rule.summary(), **self.rule.report(),
                                            "calibration": self.calibration})

    def fail(self, err: BaseException) -> None:
        """Record the run as failed by ``err``."""
        self.recorder.finish("failed", f"{type(err).__name__}: {err}", {"error": f"{type(err).__name__}: {err}"})

    def end(self) -> dict[str, Any]:
        """Close the run: a checkpoint if it stops early, its summary, its final status; returns the summary."""
        if self.stop.requested and self._saved_steps != self.train_steps:
            self._checkpoint()
        status = "stopped" if self.stop.requested else "finished"
        summary = self.summary(status)
        self.run.write_summary(summary)
        self.recorder.counters(self.device)
        self.recorder.finish(status, self.stop.reason or None, {"test_accuracy": summary["test_accuracy"],
                                                               "epochs": summary["epochs"], "reason": self.stop.reason})
        return summary

    @contextmanager
    def _stop_on_signals(self) -> Iterator[None]:
        """Ctrl-C and SIGTERM request a stop at the next step boundary (in the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_signal)
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    def _where(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop.request(STOP_SIGNALS[signal.Signals(signum)], signum)
        log.warning("%s: stopping after this step with a checkpoint (a second signal does not hurry it)",
                    signal.Signals(signum).name)

    def train_epoch(self) -> None:
        """Train the rest of the current epoch; at its end, evaluate and commit it with a checkpoint."""
        cfg = self.config
        order = torch.randperm(len(self.data.x_train), generator=torch.Generator().manual_seed(
            cfg.seed * 100003 + self.epoch))
        n_steps = self.steps_per_epoch()
        bar = tqdm(total=n_steps, initial=self.step_in_epoch, desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                   disable=not self.progress, leave=False, dynamic_ncols=True)
        while self.step_in_epoch < n_steps:
            if self.stop.requested:
                bar.close()
                return
            idx = order[self.step_in_epoch * cfg.batch_size:(self.step_in_epoch + 1) * cfg.batch_size]
            x = self.data.x_train[idx].to(cfg.torch_device)
            y = self.data.y_train[idx].to(cfg.torch_device)
            started, queries = time.perf_counter(), self.device.counters.queries
            out = self.step(x, y, self.epoch * n_steps + self.step_in_epoch)
            self.train_seconds += time.perf_counter() - started
            if self.epoch_estimate is None:
                self.epoch_estimate = self.session.epoch_seconds(time.perf_counter() - started, "the first step")
            self.train_queries += self.device.counters.queries - queries
            self.train_steps += 1
            self.step_in_epoch += 1
            self.epoch_losses.append(out.loss)
            bar.update()
            qps = self.train_queries / max(self.train_seconds, 1e-9)
            bar.set_postfix(loss=f"{out.loss:.3f}", qps=f"{qps:.0f}")
            self.recorder.step(self.train_steps, self.epoch, out.loss, qps, self.device)
            if self.on_step is not None:
                self.on_step(self)
            if self.recorder.control(self._where(), lambda: self.stop.requested) == "stop":
                self.stop.request("stopped from the service")
        bar.close()
        row: dict[str, Any] = {"epoch": self.epoch + 1,
                               "train_loss": sum(self.epoch_losses) / max(len(self.epoch_losses), 1)}
        if len(self.data.x_val):
            val = self.evaluate(self.data.x_val, self.data.y_val)
            row.update({"val_accuracy_final_layer": val.final_layer, "val_accuracy_cumulative": val.cumulative,
                        "val_loss": val.loss})
        ev = self.evaluate()
        row.update({"test_accuracy_final_layer": ev.final_layer, "test_accuracy_cumulative": ev.cumulative,
                    "test_loss": ev.loss, "device_queries": self.device_queries(), "train_seconds": self.train_seconds,
                    "lr": self.optimizer.param_groups[0]["lr"]})
        self._commit_epoch(row)
        if self.progress:
            seen = "" if "val_loss" not in row else \
                f"  val final {row['val_accuracy_final_layer']:.4f} cumulative {row['val_accuracy_cumulative']:.4f}"
            tqdm.write(f"epoch {row['epoch']:3d}  loss {row['train_loss']:.4f}{seen}  "
                       f"test final {ev.final_layer:.4f} cumulative {ev.cumulative:.4f}")
        if self.on_epoch is not None:
            self.on_epoch(self, row)

    def _commit_epoch(self, row: dict[str, Any]) -> None:
        """The epoch's row to metrics.jsonl and the store, then the checkpoint that covers them.

        A crash before the checkpoint is replaced leaves rows past the previous one, which a resume
        drops (:meth:`begin`); after it, everything is committed.
        """
        self.history.append(row)
        self.epoch += 1
        self.step_in_epoch = 0
        self.epoch_losses = []
        self.scheduler.step()
        self.run.log_metrics(row)
        self.recorder.epoch(self.train_steps, row["epoch"], {k: v for k, v in row.items() if k not in (
            "epoch", "device_queries")})
        self._checkpoint()

    def _checkpoint(self) -> None:
        self._save()
        self._saved_steps = self.train_steps
        self.recorder.event("checkpoint", {**self._where(), "path": str(self.run.path)})

    def evaluate(self, x_all: torch.Tensor | None = None, y_all: torch.Tensor | None = None) -> Evaluation:
        """Accuracy of the final layer's and the cumulative goodness, and the final layer's loss (default: test set)."""
        if x_all is None or y_all is None:
            x_all, y_all = self.data.x_test, self.data.y_test
        correct_final = correct_cum = 0
        loss_sum = 0.0
        params = self.model.device_params()
        with torch.no_grad():
            for start in range(0, len(x_all), EVAL_BATCH):
                x = x_all[start:start + EVAL_BATCH].to(self.config.torch_device)
                y = y_all[start:start + EVAL_BATCH].to(self.config.torch_device)
                acts = self.device.forward(params, x)
                final, cumulative = self.model.predict(acts)
                loss_sum += float(self.model.layer_loss(len(acts) - 1, acts[-1], y)) * len(y)
                correct_final += int((final == y).sum())
                correct_cum += int((cumulative == y).sum())
        n = len(x_all)
        return Evaluation(correct_final / n, correct_cum / n, loss_sum / n)

    def _save(self) -> None:
        """The run's state as plain data (the rate schedule is rebuilt from the config and the epoch)."""
        self.run.save_checkpoint({
            "run_fields": self.config.run_fields(), "device_identity": self.info.identity,
            "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "epoch_losses": self.epoch_losses,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "history": self.history, "train_seconds": self.train_seconds,
            "train_queries": self.train_queries, "train_steps": self.train_steps,
            "device_queries": self.device_queries(), "rule": self.rule.state_dict(),
            "calibration": self.calibration, "device": self.device.state_dict(),
        })

    def _check_checkpoint(self, state: dict[str, Any]) -> None:
        """Refuse a checkpoint written under another config, on another device or for another network."""
        path, fix = self.run.path / CHECKPOINT, "it belongs to another run: resume that run, or start a new one"
        written = move_flat_rule_options(state.get("run_fields", {}))  # as checkpoints before rule_options
        for name, value in self.config.run_fields().items():
            if written.get(name) != value:
                raise CheckpointError(f"{str(path)!r} was written with config field {name!r} = {written.get(name)!r}, "
                                      f"not {value!r} (a resume may change only {', '.join(RESUMABLE)}); {fix}")
        if state.get("device_identity") != self.info.identity:
            raise CheckpointError(f"{str(path)!r} was written on {state.get('device_identity')!r}, not on "
                                  f"{self.info.identity!r}; {fix}")
        shapes = [tuple(getattr(t, "shape", ())) for t in state.get("model", {}).get("tensors", [])]
        if shapes != [tuple(t.shape) for t in self.model.tensors()]:
            raise CheckpointError(f"{str(path)!r} holds a network of shapes {shapes}, not this device's; {fix}")

    def _restore_checked(self, state: dict[str, Any]) -> None:
        try:
            self._restore(state)
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"{str(self.run.path / CHECKPOINT)!r} does not hold a complete run state "
                                  f"({type(err).__name__}: {err}); it belongs to no run: start a new one") from None

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = state["epoch"]
        self.step_in_epoch = state["step_in_epoch"]
        self.epoch_losses = state["epoch_losses"]
        self.history = state["history"]
        self.train_seconds = state["train_seconds"]
        self.train_queries = state["train_queries"]
        self.train_steps = state["train_steps"]
        if state["device"] is not None:
            self.device.load_state_dict(state["device"])
        self.earlier_queries = state["device_queries"] - self.device.counters.queries
        self.rule.load_state_dict(state["rule"])
        self.calibration = state["calibration"]
        log.info("resumed %s at epoch %d step %d", self.run.path, self.epoch + 1, self.step_in_epoch)

    def device_queries(self) -> int:
        """Queries this run has made, across resumes."""
        return self.earlier_queries + self.device.counters.queries

    @property
    def headline_key(self) -> str:
        """The metrics row's headline test accuracy (:func:`headline_keys`)."""
        return headline_keys(self.rule.layer_local)[0]

    @property
    def validation_key(self) -> str:
        """The metrics row's headline validation accuracy (:func:`headline_keys`)."""
        return headline_keys(self.rule.layer_local)[1]

    def summary(self, status: str) -> dict[str, Any]:
        """The run's headline numbers (the ``--json`` line)."""
        last = self.history[-1] if self.history else {}
        final = last.get("test_accuracy_final_layer")
        cumulative = last.get("test_accuracy_cumulative") if self.rule.layer_local else None
        return {
            "status": status,
            "rule": self.config.rule,
            "dataset": self.config.dataset,
            "device": self.device_url,
            "device_identity": self.info.identity,
            "epochs": self.epoch,
            **self.rule.report(),
            "calibration": self.calibration,
            "seed": self.config.seed,
            "validation": self.config.validation,
            "validation_accuracy": last.get(self.validation_key),
            "test_accuracy": last.get(self.headline_key),
            "test_accuracy_final_layer": final,
            "test_accuracy_cumulative": cumulative,
            "device_queries": self.device_queries(),
            "device_counters": self.device.counters.as_dict(),
            "queries_per_step": self.train_queries / max(self.train_steps, 1),
            "train_steps": self.train_steps,
            "train_seconds": round(self.train_seconds, 3),
            "run_dir": str(self.run.path),
        }
