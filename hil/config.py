"""The training configuration: one pydantic model, loaded from YAML and CLI flags."""

from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from devices.directions import Distribution
from hil.data import ARRAYS, NAMES, NPZ
from hil.goodness import Goodness

Rule = Literal["mf-dd", "mf-ad", "bp", "dfa", "mdfa"]


MAX_WIDTH = 65536
MAX_DIRECTIONS = 1024
RESUMABLE = ("epochs", "threads", "torch_device", "run_dir", "data_dir", "device")
"""Fields a resumed run may change; every other one is the run's (a checkpoint is refused under another)."""


class ConfigError(ValueError):
    """A config file or flag is invalid; the message names the field and what to do."""


class TrainConfig(BaseModel):
    """Everything a training run needs; stored resolved in every run folder."""

    model_config = ConfigDict(extra="forbid")

    device: str = Field("sim://crossbar", description="device URL: sim://, serial://, visa://")
    hidden: list[int] | None = Field(
        None, description="widths of a sim:// device whose URL names no layers (empty with conv: conv only); "
                          "default: 256,256 on a crossbar, 64 on a photonic mesh"
    )
    conv: str = Field(
        "", description="conv layers of such a device, before the hidden ones: e.g. 16c3p2,32c3p2 "
                        "(channels c kernel p pool); empty: an MLP"
    )
    features: int = Field(
        10, gt=0, le=4096, description="a conv layer's features per channel for M (a fixed random projection)"
    )
    dataset: str = Field(
        "digits", description="digits, mnist, fashion-mnist, cifar10, cifar100, or npz:PATH (arrays saved with "
                              "numpy.savez: x_train, y_train, x_test, y_test); arrays:<digest> records arrays given "
                              "to hil.train"
    )
    data_dir: Path | None = Field(None, description="folder with the dataset's files")
    classes: list[int] | None = Field(
        None, description="train and test on these labels only, relabelled 0, 1, ... (e.g. 0,6: a binary task)"
    )
    downsample: int = Field(
        1, ge=1, le=32, description="average-pool the images by this factor (2: 28x28 to 14x14), for small devices"
    )
    validation: float = Field(
        0.1, ge=0, lt=1, allow_inf_nan=False,
        description="fraction of the training set held out, stratified and seeded, to choose on (best epoch, "
                    "rates); 0: none, the test set is only reported either way"
    )
    rule: Rule = "mf-dd"
    epochs: int = Field(40, gt=0, le=100_000)
    batch_size: int = Field(64, gt=0, le=MAX_WIDTH)
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(1e-2, gt=0, le=10, allow_inf_nan=False)
    momentum: float = Field(0.9, ge=0, lt=1, allow_inf_nan=False, description="SGD momentum")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="cosine anneals the rate to 0 over `epochs`"
    )
    estimator: Literal["auto", "activity", "weight"] = Field(
        "auto", description="mf-dd's gradient estimate: activity (one bias pair per layer, for affine layers with "
                            "a bias), weight (P random directions in weight space, the poster's, any layer), or "
                            "auto: activity where a layer allows it, weight elsewhere"
    )
    directions: int | list[int] = Field(
        4, description="P: directions per step and layer, or one P per layer (a budget), e.g. 8,4,2"
    )
    budget: Literal["fixed", "loss"] = Field(
        "fixed", description="directions per layer: fixed as given, or loss: the same total shared out every "
                             "step in proportion to each layer's running local loss (at least 1 each)"
    )
    distribution: Distribution = "rademacher"
    combine: Literal["mean", "projection"] = "mean"
    eps: float | Literal["auto"] = Field(
        "auto", description="perturbation step in parameter units, or auto: calibrated at start-up"
    )
    goodness: Goodness = Field(
        "softmax", description="each layer's local loss: softmax (cross-entropy of a trained projection M, "
                               "Mono-Forward) or prototype (hinge on cosine to fixed simplex prototypes, FFzero)"
    )
    margin: float = Field(0.3, gt=0, le=2, allow_inf_nan=False,
                          description="hinge margin of the prototype goodness (a difference of cosines: at most 2)")
    m_update: Literal["exact", "dd"] = Field(
        "exact", description="host projection M: closed-form local gradient or DD estimate"
    )
    seed: int = Field(0, ge=0, lt=2**32)
    run_dir: Path | None = Field(None, description="run folder; default runs/<time>-<rule>-<dataset>")
    torch_device: str = Field("cpu", description="where host tensors live: cpu or cuda")
    threads: int | None = Field(None, ge=1, le=1024,
                                description="CPU threads for torch; default: torch's choice (all cores)")

    @field_validator("classes", mode="before")
    @classmethod
    def _split_classes(cls, v: object) -> object:
        if isinstance(v, str):
            try:
                return [int(c) for c in v.split(",")]
            except ValueError:
                raise ValueError(f"classes must be labels separated by commas, got {v!r}") from None
        return v

    @field_validator("dataset")
    @classmethod
    def _dataset_known(cls, v: str) -> str:
        if v in NAMES or v.startswith((NPZ, ARRAYS)) and v.partition(":")[2]:
            return v
        raise ValueError(f"choose {', '.join(NAMES)}, or npz:PATH for arrays saved with numpy.savez")

    @field_validator("directions", mode="before")
    @classmethod
    def _split_directions(cls, v: object) -> object:
        if isinstance(v, str):
            try:
                values = [int(p) for p in v.split(",")]
            except ValueError:
                raise ValueError(f"directions must be a number or numbers separated by commas, got {v!r}") from None
            return values[0] if len(values) == 1 else values
        return v

    @field_validator("directions")
    @classmethod
    def _directions_in_range(cls, v: int | list[int]) -> int | list[int]:
        counts = v if isinstance(v, list) else [v]
        if not counts or not all(1 <= p <= MAX_DIRECTIONS for p in counts):
            raise ValueError(f"every directions count must be at least 1 and at most {MAX_DIRECTIONS}")
        return v

    @field_validator("torch_device")
    @classmethod
    def _torch_device_usable(cls, v: str) -> str:
        try:
            kind = torch.device(v).type
        except RuntimeError:
            kind = None
        if kind not in ("cpu", "cuda"):
            raise ValueError("use cpu, or cuda (cuda:0, cuda:1, ...) on a machine with a CUDA GPU")
        if kind == "cuda" and not torch.cuda.is_available():
            raise ValueError("this machine has no CUDA GPU that torch can use; use cpu")
        return v

    @model_validator(mode="after")
    def _some_layers(self) -> "TrainConfig":
        if self.hidden == [] and not self.conv.strip():
            raise ValueError("'hidden' is empty and there are no conv layers; give at least one width, "
                             "or conv layers for a conv-only network")
        return self

    @model_validator(mode="after")
    def _goodness_fits_rule(self) -> "TrainConfig":
        if self.goodness == "prototype" and self.rule in ("dfa", "mdfa"):
            raise ValueError(f"rule {self.rule!r} trains a softmax readout; use goodness softmax, or the "
                             "prototype goodness with mf-dd, mf-ad or bp")
        return self

    def directions_per_layer(self, layers: int) -> list[int]:
        """P for each of ``layers`` layers; a list must name one P per layer."""
        if isinstance(self.directions, int):
            return [self.directions] * layers
        if len(self.directions) != layers:
            raise ConfigError(f"config field 'directions': {len(self.directions)} values for a device with "
                              f"{layers} layers; give one P per layer or a single P")
        return list(self.directions)

    @field_validator("eps")
    @classmethod
    def _eps_in_range(cls, v: float | str) -> float | str:
        if isinstance(v, float) and not 0 < v <= 1:
            raise ValueError("eps must be a finite step above 0 and at most 1 (parameter units), or auto")
        return v

    @field_validator("hidden")
    @classmethod
    def _widths_in_range(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and not all(1 <= w <= MAX_WIDTH for w in v):
            raise ValueError(f"widths must be at least 1 and at most {MAX_WIDTH}")
        return v

    def run_fields(self) -> dict[str, Any]:
        """The fields that make a run what it is: all but :data:`RESUMABLE`, as JSON types."""
        return self.model_dump(mode="json", exclude=set(RESUMABLE))


def describe_error(err: ValidationError) -> str:
    """One line naming the first bad field, what was wrong and the value given."""
    first = err.errors()[0]
    field = ".".join(str(p) for i, p in enumerate(first["loc"]) if i == 0 or isinstance(p, int)) or "config"
    given = first.get("input")
    hint = f" (got {given!r})" if not isinstance(given, dict) else ""
    return f"config field {field!r}: {first['msg'].removeprefix('Value error, ')}{hint}"


def build_config(values: dict[str, Any]) -> TrainConfig:
    """Validate ``values`` into a config, raising :class:`ConfigError` with a one-line reason."""
    try:
        return TrainConfig(**values)
    except ValidationError as err:
        raise ConfigError(describe_error(err)) from None


def load_config(path: Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML config file and apply ``overrides`` (CLI flags) on top."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {str(path)!r} is a folder; give a YAML file (to continue a run in a "
                          "folder: --resume FOLDER)") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text (byte {err.object[err.start]:#04x} at "
                          f"offset {err.start}); save it as UTF-8") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of fields")
    return build_config({**raw, **(overrides or {})})


def dump_config(config: TrainConfig, path: Path) -> None:
    """Write the resolved config as YAML."""
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
