"""hil: hardware-in-the-loop training with Mono-Forward and zeroth-order directional derivatives.

In Python (a notebook)::

    import hil

    data = hil.data.from_arrays(x_train, y_train, x_test, y_test)
    summary = hil.train(dataset=data, epochs=5)

Names are imported on first use, so ``import hil`` (and the ``hil`` command) stays quick.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from devices.registry import open_device
    from hil import data
    from hil.api import train
    from hil.cluster.sweep import sweep
    from hil.config import ConfigError, TrainConfig, build_config, load_config
    from hil.data import DatasetError

_EXPORTS = {
    "open_device": "devices.registry", "train": "hil.api", "TrainConfig": "hil.config",
    "build_config": "hil.config", "load_config": "hil.config", "ConfigError": "hil.config",
    "DatasetError": "hil.data", "sweep": "hil.cluster.sweep",
}
__all__ = ["ConfigError", "DatasetError", "TrainConfig", "build_config", "data", "load_config", "open_device",
           "sweep", "train"]


def __getattr__(name: str) -> Any:
    if name == "data":
        return import_module("hil.data")
    if name == "sweep":  # needs the extra hil[cluster]: without it, say how to install it
        import_module("hil.cluster.engine").require_ray()
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hil' has no attribute {name!r}")
