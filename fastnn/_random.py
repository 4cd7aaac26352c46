"""The one random generator behind initialisation, dropout, shuffling and sampling.

``fastnn.seed(n)`` replaces it, which makes a whole run reproducible.
"""
import contextlib

import numpy as np

_state = {"rng": np.random.default_rng()}


def seed(n):
    """Make initialisation, dropout, shuffling and sampling reproducible from ``n`` on."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"seed: n must be an int, got {type(n).__name__}")
    _state["rng"] = np.random.default_rng(int(n))


def rng():
    """The current generator (a ``numpy.random.Generator``)."""
    return _state["rng"]


@contextlib.contextmanager
def using(generator):
    """``generator`` is fastnn's generator inside the block, the previous one again after it
    (``distributed.DataParallel`` gives each rank's dropout a stream of its own)."""
    previous = _state["rng"]
    _state["rng"] = generator
    try:
        yield generator
    finally:
        _state["rng"] = previous
