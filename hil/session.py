"""What a run is built from: its data, the open device, the network, the rule and the optimizer."""

import logging
import warnings
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import torch

from devices.info import DeviceInfo
from devices.interface import Device
from devices.registry import open_device, url_options
from hil.config import TrainConfig
from hil.data import Dataset, DatasetError, load_dataset
from hil.model import MonoForward
from hil.resources import IMPRACTICAL_EPOCH_SECONDS, check_memory, duration, host_bytes, parameter_count
from hil.rules import Rule, make_rule

log = logging.getLogger(__name__)

SIM_HIDDEN = {"crossbar": [256, 256], "photonic": [64]}
"""Hidden widths of a ``sim://`` device whose URL and config name none: a mesh of N modes has N (N - 1)
phases, queried chunk by chunk, so the photonic kind gets one small layer."""
MESH_CHUNKS = 8
"""Phase chunks of such a photonic device (README's photonic runs use 8), or the most up to 8 that divide."""


def resolve_device_url(url: str, features: int, hidden: list[int] | None = None, conv: str = "") -> str:
    """Give a ``sim://`` URL that names no ``layers`` the dataset's input width, ``conv`` and ``hidden``
    (default :data:`SIM_HIDDEN` of its kind); a photonic one also gets :func:`mesh_chunks` unless it names some."""
    options = url_options(url)
    parts = urlsplit(url)
    if parts.scheme != "sim" or "layers" in options:
        return url
    kind = parts.netloc or "crossbar"
    widths = [features, *(SIM_HIDDEN.get(kind, SIM_HIDDEN["crossbar"]) if hidden is None else hidden)]
    extra = {"layers": ",".join(map(str, widths))}
    if conv and "conv" not in options:
        extra["conv"] = conv
    if kind == "photonic" and "chunks" not in options:
        extra["chunks"] = str(mesh_chunks(widths))
    return f"{url}{'&' if parts.query else '?'}" + "&".join(f"{k}={v}" for k, v in extra.items())


def mesh_chunks(widths: list[int]) -> int:
    """The most chunks up to :data:`MESH_CHUNKS` that divide the N (N - 1) phases of every mesh of ``widths``."""
    modes = [max(a, b) for a, b in zip(widths[:-1], widths[1:])]
    return max(c for c in range(1, MESH_CHUNKS + 1) if all(n * (n - 1) % c == 0 for n in modes))


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
class Session:
    """One run's pieces, built by :meth:`open`; holds the device open until :meth:`close` (or a ``with`` block's end).

    Nothing here knows of run folders or checkpoints: :class:`~hil.trainer.Trainer` restores and runs them.
    """

    config: TrainConfig
    data: Dataset
    """The dataset the config names, selected and split for validation."""
    device_url: str
    """The config's device URL, resolved by :func:`resolve_device_url`."""
    device: Device
    info: DeviceInfo
    model: MonoForward
    rule: Rule
    optimizer: torch.optim.Optimizer

    @classmethod
    def open(cls, config: TrainConfig, data: Dataset | None = None) -> "Session":
        """Load the data, open the device and build the network, rule and optimizer; a failure closes the device.

        ``data`` is the dataset ``config.dataset`` names when only Python has it (:func:`hil.data.from_arrays`).
        Memory a network or a step would need beyond the host's is refused before it is allocated.
        """
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        if data is not None and data.name != config.dataset:
            raise DatasetError(f"the dataset given is {data.name!r} but the config names {config.dataset!r}; "
                               "give the dataset the run was started on")
        data = load_dataset(config.dataset, config.data_dir) if data is None else data
        data = data.select(config.classes, config.downsample).with_validation(config.validation, config.seed)
        url = resolve_device_url(config.device, data.features, config.hidden, config.conv)
        with ExitStack() as on_failure:
            device = on_failure.enter_context(open_device(url))
            check_fits(device, data, url)
            info = device.info()
            check_memory(host_bytes(info), f"a network of {parameter_count(info):,} parameters ({url})",
                         "use narrower layers (--hidden, or the device URL's layers)")
            model = MonoForward.initialise(info, data.classes, config.seed, config.torch_device, config.features,
                                           config.goodness, config.margin)
            rule = make_rule(device, model, config)
            options = ", ".join(f"{k} {v}" for k, v in rule.options.model_dump(mode="json").items())
            check_memory(host_bytes(info) + rule.step_bytes(),
                         f"a step of {rule.name}" + (f" ({options})" if options else ""), rule.memory_advice())
            session = cls(config, data, url, device, info, model, rule, _optimizer(model, config))
            on_failure.pop_all()
        return session

    def close(self) -> None:
        """Close the device. Idempotent."""
        self.device.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def steps_per_epoch(self) -> int:
        """Optimizer steps in an epoch: batches of the training set, the last one possibly short."""
        return -(-len(self.data.x_train) // self.config.batch_size)

    def first_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The training set's first batch, on the config's torch device."""
        batch = slice(0, self.config.batch_size)
        return (self.data.x_train[batch].to(self.config.torch_device),
                self.data.y_train[batch].to(self.config.torch_device))

    def calibrate(self) -> dict[str, Any] | None:
        """The rule's calibration queries on the first batch (a fresh run's, before its first step)."""
        return self.rule.calibrate(*self.first_batch())

    def estimate_epoch(self) -> float | None:
        """Seconds an epoch will take, from the rule's timed sample of a step, named at once when impractical.

        Only on a device that can be rewound (a simulator, left as it was); a bench device would be
        moved by the sample, so its estimate comes from the run's first step (None until then).
        """
        state = self.device.state_dict()
        if state is None:
            return None
        step = self.rule.step_seconds(*self.first_batch())
        self.device.load_state_dict(state)
        return self.epoch_seconds(step, "timed at start")

    def epoch_seconds(self, step: float, how: str) -> float:
        """An epoch's seconds at ``step`` seconds a step; an impractical one is named, with what to change."""
        seconds = step * self.steps_per_epoch()
        if seconds > IMPRACTICAL_EPOCH_SECONDS:
            log.warning("%s would take about %s per epoch (%s per step x %d steps, %s); to train in minutes: fewer "
                        "phase chunks (chunks=8 in a sim://photonic URL), narrower layers (--hidden 64, --downsample "
                        "4 for 28x28 images), fewer --directions or a larger --batch-size",
                        self.device_url, duration(seconds), duration(step), self.steps_per_epoch(), how)
        return seconds

    def scheduler(self, epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
        """The rate schedule over ``config.epochs``, at ``epoch``.

        It starts from the configured rate and is stepped through the epochs already trained, so a
        run resumed to a new total continues the schedule over that total (a cosine rebuilt over the
        new number of epochs, at the epoch where the run stands), with the rates an uninterrupted run
        to that total has from there on.
        """
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr
        if self.config.lr_schedule == "cosine":
            scheduler: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizer, T_max=self.config.epochs)
        else:
            scheduler = torch.optim.lr_scheduler.ConstantLR(self.optimizer, factor=1.0, total_iters=0)
        with warnings.catch_warnings():  # replaying the epochs trained: no optimizer step in between
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            for _ in range(epoch):
                scheduler.step()
        return scheduler


def _optimizer(model: MonoForward, config: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimizer over the network's tensors."""
    tensors = model.tensors()
    if config.optimizer == "adam":
        return torch.optim.Adam(tensors, lr=config.lr)
    return torch.optim.SGD(tensors, lr=config.lr, momentum=config.momentum)
