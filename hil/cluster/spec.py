"""A sweep file: a base config, a search space over its fields, the metric to choose on, early stopping.

Example (``examples/sweep.yaml``)::

    base: {dataset: digits, hidden: [64], epochs: 6}
    space:
      lr: {loguniform: [0.001, 0.03]}
      rule_options.estimator: {grid: [activity, weight]}
      seed: {seeds: 2}
    samples: 2
    metric: val_accuracy
    asha: {grace_period: 2}

A field inside a section is named with a dot (``rule_options.estimator``). Trials choose on the
validation split; the test set is only reported, so a metric of the test set is refused.
"""

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hil.config import ConfigError, TrainConfig, build_config

METRICS = ("val_accuracy", "val_accuracy_final_layer", "val_accuracy_cumulative", "val_loss", "train_loss")
"""What a trial reports every epoch that a sweep may choose on (``val_accuracy``: the run's headline one)."""


class Values(BaseModel):
    """The values one field takes: exactly one of a grid (every value), a random choice, a range, or seeds."""

    model_config = ConfigDict(extra="forbid")

    grid: list[Any] | None = Field(None, min_length=1, description="every value, each in its own trials")
    choice: list[Any] | None = Field(None, min_length=1, description="one value drawn at random per sample")
    uniform: tuple[float, float] | None = Field(None, description="drawn uniformly from [low, high]")
    loguniform: tuple[float, float] | None = Field(None, description="drawn log-uniformly from [low, high] (> 0)")
    seeds: int | None = Field(None, ge=1, le=1000, description="seeds 0..N-1, each in its own trials (a grid)")

    @model_validator(mode="after")
    def _one_kind(self) -> "Values":
        given = [k for k, v in self if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of grid, choice, uniform, loguniform or seeds")
        low_high = self.uniform or self.loguniform
        if low_high is not None and not low_high[0] < low_high[1]:
            raise ValueError(f"a range is [low, high] with low < high, got {list(low_high)}")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError("a loguniform range must be above 0")
        return self

    def example(self) -> Any:
        """One value this field takes (for checking the config it makes)."""
        if self.seeds is not None:
            return 0
        return (self.grid or self.choice or self.uniform or self.loguniform or [None])[0]

    def domain(self) -> Any:
        """The Ray Tune search space of these values."""
        from ray import tune

        if self.grid is not None:
            return tune.grid_search(self.grid)
        if self.seeds is not None:
            return tune.grid_search(list(range(self.seeds)))
        if self.choice is not None:
            return tune.choice(self.choice)
        if self.uniform is not None:
            return tune.uniform(*self.uniform)
        assert self.loguniform is not None
        return tune.loguniform(*self.loguniform)


class Asha(BaseModel):
    """Early stopping by asynchronous successive halving: a trial behind its peers at a rung stops there."""

    model_config = ConfigDict(extra="forbid")

    grace_period: int = Field(1, ge=1, description="epochs every trial trains before it can be stopped")
    reduction_factor: float = Field(2.0, gt=1, description="the share of trials kept at each rung is 1/this")


class Sweep(BaseModel):
    """A sweep file's contents."""

    model_config = ConfigDict(extra="forbid")

    base: dict[str, Any] = Field(default_factory=dict, description="hil train's config fields every trial shares")
    space: dict[str, Values] = Field(min_length=1, description="field -> the values it takes")
    metric: Literal[METRICS] = Field("val_accuracy", description="what to choose trials on (never the test set)")
    mode: Literal["max", "min"] | None = Field(None, description="default: min for losses, max otherwise")
    samples: int = Field(1, ge=1, le=10_000, description="random draws of the space (grids are repeated per draw)")
    time_budget: float | None = Field(None, gt=0, description="seconds after which no new trial starts")
    asha: Asha | None = Field(None, description="early stopping; none: every trial trains all its epochs")
    retries: int = Field(0, ge=0, le=100, description="times a failed trial is started again")
    device: Literal["crossbar", "photonic"] | None = Field(
        None, description="each trial leases a bench device of this kind (from hil node); none: the config's device")
    cpus: int = Field(1, ge=1, le=1024, description="CPU cores (torch threads) per trial")

    @model_validator(mode="before")
    @classmethod
    def _refuse_test_metric(cls, data: Any) -> Any:
        if isinstance(data, dict) and str(data.get("metric", "")).startswith("test_"):
            raise ValueError(f"metric {data['metric']!r} is the test set, which is only reported; choose on "
                             f"the validation split: one of {', '.join(METRICS)}")
        return data

    @property
    def direction(self) -> str:
        return self.mode or ("min" if self.metric.endswith("loss") else "max")

    def check(self) -> TrainConfig:
        """The config a trial makes (with one value of each field), refused in one line if it is not valid."""
        config = build_config(trial_values(self.base, {name: values.example() for name, values in self.space.items()}))
        if self.metric.startswith("val_") and config.validation == 0:
            raise ConfigError(f"metric {self.metric!r} needs a validation split, and base sets validation: 0; "
                              "give it a fraction (e.g. 0.1)")
        return config


def trial_values(base: dict[str, Any], drawn: dict[str, Any]) -> dict[str, Any]:
    """A trial's config fields: ``base``, then the values ``drawn`` (dotted names go into their sections)."""
    values = dict(base)
    for name, value in drawn.items():
        section, _, field = name.partition(".")
        if field:
            values[section] = {**values.get(section, {}), field: value}
        else:
            values[name] = value
    return values


def load_sweep(path: Path) -> Sweep:
    """Read and check a sweep file, with one-line errors that name the field."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"sweep file {str(path)!r} does not exist") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"sweep file {str(path)!r} is not valid YAML: {' '.join(str(err).split())}") from None
    return parse_sweep(raw, f"sweep file {str(path)!r}")


def parse_sweep(raw: Any, where: str = "the sweep") -> Sweep:
    """Check a sweep's contents (a dict, as a file holds), with one-line errors that say ``where`` and the field."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must hold a mapping (base, space, metric, ...)")
    try:
        sweep = Sweep.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "sweep"
        raise ConfigError(f"{where}, {field}: {first['msg'].removeprefix('Value error, ')}") from None
    try:
        sweep.check()
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    return sweep
