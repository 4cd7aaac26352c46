"""fastnn: a fast CPU neural-network engine.

    import fastnn as fnn
    from fastnn import layers as L
    model = fnn.Sequential(L.Dense(784, 256), L.ReLU(), L.Dense(256, 10))

Submodules are imported on first use, so ``import fastnn`` stays cheap (numba is only loaded
when a numba kernel first runs).
"""
import importlib

from ._core.threads import get_num_threads, set_num_threads
from ._random import seed

__version__ = "0.1.0"

_SUBMODULES = ("layers", "losses", "optim", "init", "metrics", "datasets", "models", "testing",
               "distributed", "onnx", "inference")
# public name -> (module, attribute)
_LAZY = {
    "Sequential": ("model", "Sequential"),
    "load": ("model", "load"),
    "Model": ("graph", "Model"),
    "Input": ("graph", "Input"),
    "gradcheck": ("_gradcheck", "gradcheck"),
    "assert_gradcheck": ("_gradcheck", "assert_gradcheck"),
    "GradcheckResult": ("_gradcheck", "GradcheckResult"),
    "config": ("_config", "config"),
    "show_config": ("_config", "show_config"),
}

__all__ = ["set_num_threads", "get_num_threads", "seed", *_SUBMODULES, *_LAZY]


def __getattr__(name):
    if name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    elif name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
    else:
        raise AttributeError(f"module 'fastnn' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return __all__
