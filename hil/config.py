"""The training configuration: one pydantic model, loaded from YAML and CLI flags.

The generic fields sit at the top level; the learning rule's own options sit in ``rule_options``,
validated by the rule's ``Options`` model (:mod:`hil.rules`).
"""

import logging
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from hil.data import ARRAYS, NAMES, NPZ
from hil.goodness import Goodness
from hil.rules import RuleOptions, UnknownRule, rule_class, rule_names

log = logging.getLogger(__name__)



MAX_WIDTH = 65536
DEFAULT_RULE = "mf-dd"
FLAT_RULE_OPTIONS = ("estimator", "directions", "budget", "distribution", "combine", "eps", "m_update")
"""mf-dd's options, which configs (and run folders, and results files) held at the top level before
rules had their own section; they still load, moved into ``rule_options``."""
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
    rule: str = Field(DEFAULT_RULE, description="learning rule, by its name in the hil.rules entry points")
    rule_options: SerializeAsAny[RuleOptions] = Field(
        default_factory=dict, validate_default=True,  # the rule's defaults: {} validated into its Options
        description="the rule's own options (its Options model), e.g. directions: 4 for mf-dd"
    )
    epochs: int = Field(40, gt=0, le=100_000)
    batch_size: int = Field(64, gt=0, le=MAX_WIDTH)
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(1e-2, gt=0, le=10, allow_inf_nan=False)
    momentum: float = Field(0.9, ge=0, lt=1, allow_inf_nan=False, description="SGD momentum")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="cosine anneals the rate to 0 over `epochs`"
    )
    goodness: Goodness = Field(
        "softmax", description="each layer's local loss: softmax (cross-entropy of a trained projection M, "
                               "Mono-Forward) or prototype (hinge on cosine to fixed simplex prototypes, FFzero)"
    )
    margin: float = Field(0.3, gt=0, le=2, allow_inf_nan=False,
                          description="hinge margin of the prototype goodness (a difference of cosines: at most 2)")
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

    @model_validator(mode="before")
    @classmethod
    def _flat_rule_options(cls, data: Any) -> Any:
        return move_flat_rule_options(data) if isinstance(data, dict) else data

    @field_validator("rule")
    @classmethod
    def _rule_installed(cls, v: str) -> str:
        rule_class(v)  # an UnknownRule (a ValueError) lists the installed ones
        return v

    @field_validator("rule_options", mode="before")
    @classmethod
    def _options_of_the_rule(cls, v: Any, info: ValidationInfo) -> Any:
        if "rule" not in info.data:
            return v  # the rule is refused; that is the error to report
        name = info.data["rule"]
        options = rule_class(name).Options
        if isinstance(v, options):
            return v
        try:
            return options.model_validate(v)
        except ValidationError as err:
            first = err.errors()[0]
            option = ".".join(str(p) for p in first["loc"])
            if first["type"] == "extra_forbidden":
                raise ValueError(f"rule {name!r} has no option {option!r} (its options: "
                                 f"{', '.join(options.model_fields) or 'none'})") from None
            raise ValueError(f"option {option!r} of rule {name!r}: {_reason(first)}") from None

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
        if self.goodness == "prototype" and not rule_class(self.rule).prototype_goodness:
            able = [name for name in rule_names() if rule_class(name).prototype_goodness]
            raise ValueError(f"rule {self.rule!r} trains a softmax readout; use goodness softmax, or the "
                             f"prototype goodness with {', '.join(able)}")
        return self

    @field_validator("hidden")
    @classmethod
    def _widths_in_range(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and not all(1 <= w <= MAX_WIDTH for w in v):
            raise ValueError(f"widths must be at least 1 and at most {MAX_WIDTH}")
        return v

    def run_fields(self) -> dict[str, Any]:
        """The fields that make a run what it is: all but :data:`RESUMABLE`, as JSON types."""
        return self.model_dump(mode="json", exclude=set(RESUMABLE))


def move_flat_rule_options(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the old top-level options (:data:`FLAT_RULE_OPTIONS`) moved into ``rule_options``.

    Those the rule takes join its section (where the section names one too, the section's wins); those it
    does not take are dropped, as they never applied to it. Values of an unknown rule stay as they are.
    """
    flat = {k: values[k] for k in FLAT_RULE_OPTIONS if k in values}
    section = values.get("rule_options", {})
    if not flat or not isinstance(section, dict):
        return values
    try:
        takes = rule_class(values.get("rule", DEFAULT_RULE)).Options.model_fields
    except (UnknownRule, TypeError):
        return values
    rest = {k: v for k, v in values.items() if k not in FLAT_RULE_OPTIONS}
    return {**rest, "rule_options": {**{k: v for k, v in flat.items() if k in takes}, **section}}


def describe_error(err: ValidationError) -> str:
    """One line naming the first bad field, what was wrong and the value given."""
    first = err.errors()[0]
    field = ".".join(str(p) for i, p in enumerate(first["loc"]) if i == 0 or isinstance(p, int)) or "config"
    return f"config field {field!r}: {_reason(first)}"


def _reason(error: ErrorDetails) -> str:
    """A validation error's message and the value given (unless a whole mapping)."""
    given = error.get("input")
    hint = f" (got {given!r})" if not isinstance(given, dict) else ""
    return f"{error['msg'].removeprefix('Value error, ')}{hint}"


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
    if flat := [k for k in FLAT_RULE_OPTIONS if k in raw]:
        section = yaml.safe_dump({"rule_options": {k: raw[k] for k in flat}}, sort_keys=False)
        log.warning("config file %r gives %s at the top level, the old form; write them in the rule's section:\n%s",
                    str(path), ", ".join(flat), section)
    overrides = overrides or {}
    values = {**raw, **overrides}
    if isinstance(raw.get("rule_options"), dict) and "rule_options" in overrides:
        values["rule_options"] = {**raw["rule_options"], **overrides["rule_options"]}
    return build_config(values)


def dump_config(config: TrainConfig, path: Path) -> None:
    """Write the resolved config as YAML."""
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
