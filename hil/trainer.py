"""The training loop: data in batches through a rule, optimizer steps, evaluation, checkpoints."""

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import torch
from tqdm import tqdm

from devices.interface import Device
from devices.registry import open_device, url_options
from hil.config import TrainConfig
from hil.data import Dataset, DatasetError, load_dataset
from hil.model import MonoForward
from hil.recorder import RunRecorder
from hil.rules import Rule, make_rule
from hil.runs import RunFolder

log = logging.getLogger(__name__)

EVAL_BATCH = 1000


def resolve_device_url(url: str, features: int, hidden: list[int], conv: str = "") -> str:
    """Give a ``sim://`` URL that names no ``layers`` the dataset's input width, ``conv`` and ``hidden``."""
    if urlsplit(url).scheme != "sim" or "layers" in url_options(url):
        return url
    layers = ",".join(str(w) for w in [features, *hidden])
    extra = f"&conv={conv}" if conv and "conv" not in url_options(url) else ""
    return f"{url}{'&' if urlsplit(url).query else '?'}layers={layers}{extra}"


def check_fits(device: Device, data: Dataset, url: str) -> None:
    """Refuse a dataset whose input width differs from the device's first layer."""
    inputs = device.info().layers[0].inputs
    if inputs != data.features:
        raise DatasetError(
            f"dataset {data.name!r} has {data.features} features per sample but the first layer "
            f"of {url!r} takes {inputs} inputs; use a device whose first layer takes "
            f"{data.features} (for the simulator: sim://crossbar?layers={data.features},256,256)"
        )


@dataclass
class StopFlag:
    """Asked to stop at the next step boundary (Ctrl-C, or a controller)."""

    event: threading.Event = field(default_factory=threading.Event)
    reason: str = ""

    def request(self, reason: str) -> None:
        self.reason = reason
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


class Trainer:
    """Runs one config to completion (or to a stop request), resuming from a checkpoint."""

    def __init__(self, config: TrainConfig, run: RunFolder, progress: bool = True) -> None:
        self.config = config
        self.run = run
        self.progress = progress
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        self.data = load_dataset(config.dataset, config.data_dir, config.classes, config.downsample).with_validation(
            config.validation, config.seed)
        self.device_url = resolve_device_url(config.device, self.data.features, config.hidden, config.conv)
        self.device = open_device(self.device_url)
        check_fits(self.device, self.data, self.device_url)
        self.info = self.device.info()
        self.model = MonoForward.initialise(self.info, self.data.classes, config.seed, config.torch_device,
                                           config.features, config.goodness, config.margin)
        self.rule: Rule = make_rule(self.device, self.model, config)
        self.optimizer = self._optimizer()
        self.scheduler = self._scheduler()
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
        """Called with each epoch's metrics row once it is logged."""
        self.calibration: dict[str, Any] | None = None
        self.recorder = RunRecorder(run, config.model_dump(mode="json"), self.device_url, self.info.identity,
                                    config.seed)
        checkpoint = run.load_checkpoint()
        if checkpoint is not None:
            self._restore(checkpoint)
            self.recorder.event("resumed", {**self._where(), **self.rule.report()})
        else:
            self.calibration = self.rule.calibrate(self.data.x_train[:config.batch_size].to(config.torch_device),
                                                   self.data.y_train[:config.batch_size].to(config.torch_device))
            self.recorder.event("started", {"rule": self.rule.summary(), **self.rule.report(),
                                            "calibration": self.calibration})
        self.model.clip_(self.info, self.rule.margin())
        self.rule.constrain_()

    def _optimizer(self) -> torch.optim.Optimizer:
        tensors = self.model.tensors()
        if self.config.optimizer == "adam":
            return torch.optim.Adam(tensors, lr=self.config.lr)
        return torch.optim.SGD(tensors, lr=self.config.lr, momentum=self.config.momentum)

    def _scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        if self.config.lr_schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=self.config.epochs)
        return torch.optim.lr_scheduler.ConstantLR(self.optimizer, factor=1.0, total_iters=0)

    def steps_per_epoch(self) -> int:
        return -(-len(self.data.x_train) // self.config.batch_size)

    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs; returns the run summary (also written to the folder)."""
        log.info("%s on %s (%s)", self.rule.summary(), self.device_url, self.info.identity)
        previous = signal.getsignal(signal.SIGINT)
        in_main = threading.current_thread() is threading.main_thread()
        if in_main:
            signal.signal(signal.SIGINT, self._on_sigint)
        try:
            while self.epoch < self.config.epochs and not self.stop.requested:
                self._train_epoch()
        except BaseException as err:
            self.recorder.finish("failed", f"{type(err).__name__}: {err}", {"error": f"{type(err).__name__}: {err}"})
            raise
        finally:
            if in_main:
                signal.signal(signal.SIGINT, previous)
        status = "stopped" if self.stop.requested else "finished"
        summary = self.summary(status)
        self.run.write_summary(summary)
        self.recorder.counters(self.device)
        self.recorder.finish(status, self.stop.reason or None, {"test_accuracy": summary["test_accuracy"],
                                                               "epochs": summary["epochs"], "reason": self.stop.reason})
        return summary

    def _where(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch}

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self.stop.request("interrupted")
        log.warning("stopping after this step (Ctrl-C again does not hurry it)")

    def _train_epoch(self) -> None:
        cfg = self.config
        order = torch.randperm(len(self.data.x_train), generator=torch.Generator().manual_seed(
            cfg.seed * 100003 + self.epoch))
        n_steps = self.steps_per_epoch()
        bar = tqdm(total=n_steps, initial=self.step_in_epoch, desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                   disable=not self.progress, leave=False, dynamic_ncols=True)
        while self.step_in_epoch < n_steps:
            if self.stop.requested:
                bar.close()
                self._save()
                self.recorder.event("checkpoint", {**self._where(), "path": str(self.run.path)})
                return
            idx = order[self.step_in_epoch * cfg.batch_size:(self.step_in_epoch + 1) * cfg.batch_size]
            x = self.data.x_train[idx].to(cfg.torch_device)
            y = self.data.y_train[idx].to(cfg.torch_device)
            started, queries = time.perf_counter(), self.device.counters.queries
            self.optimizer.zero_grad(set_to_none=True)
            out = self.rule.step(x, y, self.epoch * n_steps + self.step_in_epoch)
            self.optimizer.step()
            self.model.clip_(self.info, self.rule.margin())
            self.rule.constrain_()
            self.train_seconds += time.perf_counter() - started
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
                    "test_loss": ev.loss, "device_queries": self.device_queries(), "train_seconds": self.train_seconds})
        self.history.append(row)
        self.run.log_metrics(row)
        self.recorder.epoch(self.train_steps, self.epoch + 1, {k: v for k, v in row.items() if k not in (
            "epoch", "device_queries")})
        if self.progress:
            seen = "" if "val_loss" not in row else \
                f"  val final {row['val_accuracy_final_layer']:.4f} cumulative {row['val_accuracy_cumulative']:.4f}"
            tqdm.write(f"epoch {row['epoch']:3d}  loss {row['train_loss']:.4f}{seen}  "
                       f"test final {ev.final_layer:.4f} cumulative {ev.cumulative:.4f}")
        if self.on_epoch is not None:
            self.on_epoch(self, row)
        self.epoch += 1
        self.step_in_epoch = 0
        self.epoch_losses = []
        self.scheduler.step()
        self._save()
        self.recorder.event("checkpoint", {"epoch": self.epoch, "path": str(self.run.path)})

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
        self.run.save_checkpoint({
            "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "epoch_losses": self.epoch_losses,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "history": self.history, "train_seconds": self.train_seconds,
            "train_queries": self.train_queries, "train_steps": self.train_steps,
            "device_queries": self.device_queries(), "rule": self.rule.state_dict(),
            "calibration": self.calibration, "device": self.device.state_dict(),
        })

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
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
        """The metrics row's headline accuracy: cumulative for layer-local rules, else the final layer's."""
        return "test_accuracy_cumulative" if self.rule.layer_local else "test_accuracy_final_layer"

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
            "estimator": self.config.estimator,
            "directions": self.config.directions,
            "combine": self.config.combine,
            "estimators": None, "eps": None, "queries_per_layer_step": None, "directions_by_layer": None,
            **self.rule.report(),
            "calibration": self.calibration,
            "seed": self.config.seed,
            "validation": self.config.validation,
            "validation_accuracy": last.get(self.headline_key.replace("test_", "val_")),
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
