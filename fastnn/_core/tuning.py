"""The kernels' tuning constants and route switches, in one place, for tests and benchmarks.

Every knob has a name, a documented meaning and a default (the tuned value); ``tuning(**knobs)``
sets some for the duration of a block and restores them on exit, and rejects a name it does not
know::

    from fastnn._core.tuning import tuning
    with tuning(conv_col_chunk_bytes=1 << 20, conv_dynamic_schedule=False):
        layer.forward(x)
    with tuning(conv_forward="im2col_forward/f32"):   # force a route (fastnn._core.conv_plan)
        layer.forward(x)

``knobs()`` lists them with their current values and meanings. Knobs change how a result is
computed, never the contract; most give the same bits either way (the tests check which).

Where the knobs live. A knob read by compiled code without the GIL is a C global of its module;
the module declares it in a dict ``TUNING = {name: meaning}`` and one function
``_tune(name, value)`` that sets it and returns the old value (``_conv.pyx``, ``_blas.pyx``,
``_recurrent.pyx``).
A knob read from Python (the route choices of ``conv_plan``) lives here, registered with
``register(name, default, meaning, check)`` when its module is imported.

Registering a module's knobs: a compiled module defines ``TUNING`` and ``_tune`` as ``_conv.pyx``
does (its knobs stay C globals) and its name goes into ``_MODULES`` below; a Python module calls
``register`` at import and its name goes into ``_PYTHON_MODULES``. Names are global: prefix them
with the module's subject (``conv_``, ``gemm_``, ``rnn_``).

Not thread-safe: one tuning block at a time, for tests and benchmarks.
"""
import contextlib
import importlib

# The compiled modules whose TUNING/_tune this module serves (fastnn._core.<name>), and the Python
# modules that register knobs here when imported
_MODULES = ("_blas", "_conv", "_recurrent")
_PYTHON_MODULES = ("conv_plan",)

_python_knobs = {}     # name -> [value, default, meaning, check]
_compiled = None       # name -> module, filled on first use
generation = 0         # bumped on every change: conv_plan's cache key


def register(name, default, meaning, check=None):
    """A knob read from Python: ``check(value)`` returns the value to store or raises
    ValueError/TypeError."""
    if name in _python_knobs:
        raise ValueError(f"tuning: knob {name!r} is already registered")
    _python_knobs[name] = [default, default, meaning, check]


def _compiled_knobs():
    """{name: module} of the compiled knobs (importing the modules that own knobs, first use)."""
    global _compiled
    if _compiled is None:
        for modname in _PYTHON_MODULES:
            importlib.import_module(f"{__package__}.{modname}")
        found = {}
        for modname in _MODULES:
            module = importlib.import_module(f"{__package__}.{modname}")
            for name in module.TUNING:
                found[name] = module
        _compiled = found
    return _compiled


def knobs():
    """{name: (current value, meaning)} of every knob."""
    compiled = _compiled_knobs()
    out = {name: (k[0], k[2]) for name, k in _python_knobs.items()}
    for name, module in compiled.items():
        old = module._tune(name, None)
        out[name] = (old, module.TUNING[name])
    return dict(sorted(out.items()))


def get(name):
    """The current value of knob ``name``."""
    _compiled_knobs()
    if name in _python_knobs:
        return _python_knobs[name][0]
    module = _compiled_knobs().get(name)
    if module is None:
        _unknown([name])
    return module._tune(name, None)


def _unknown(names):
    known = sorted(set(_python_knobs) | set(_compiled_knobs()))
    raise ValueError(f"tuning: unknown knob(s) {sorted(names)}; known: {', '.join(known)}")


def _set(name, value):
    """Sets knob ``name``; returns the old value."""
    global generation
    generation += 1
    knob = _python_knobs.get(name)
    if knob is not None:
        old = knob[0]
        knob[0] = value if knob[3] is None else knob[3](value)
        return old
    if value is None:
        raise ValueError(f"tuning: knob {name!r} needs a value (None reads it)")
    return _compiled_knobs()[name]._tune(name, value)


@contextlib.contextmanager
def tuning(**settings):
    """Sets the given knobs inside the block and restores their values on exit (also on an
    exception). Unknown names raise ValueError before anything changes."""
    _compiled_knobs()
    unknown = [n for n in settings if n not in _python_knobs and n not in _compiled_knobs()]
    if unknown:
        _unknown(unknown)
    olds = []
    try:
        for name, value in settings.items():
            olds.append((name, _set(name, value)))
        yield
    finally:
        for name, old in reversed(olds):
            _set(name, old)
