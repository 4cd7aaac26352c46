"""``fastnn gradcheck [LAYER | module:factory ...]``: gradient-check layers from the command line.

Runs the property checks of ``tests/layers/test_properties.py`` (``fastnn.testing.cases``): for each
named layer (default: all layers and losses), ``--examples`` hypothesis-generated configurations
in training and in inference mode, each through ``fnn.gradcheck`` in float64. A failure is shrunk
to the smallest failing configuration, whose report is printed.

``module:factory`` checks your own layer: ``module`` is an importable module name (the current
directory is searched first) or a ``.py`` file, and ``factory()`` returns either a pair
``(layer, x)`` (one check per mode; ``x`` a list of arrays for several inputs) or a hypothesis
strategy drawing such pairs (``--examples`` of them per mode). Exit status: 0 when everything passes, 1 when any check fails, 2 on a usage
error (an unknown name, a spec that does not resolve, a factory returning something else).
"""
import argparse
import importlib
import importlib.util
import os
import pathlib
import sys
import time
import traceback

__all__ = ["main", "run_checks"]

# a user layer's tensors are checked on up to this many entries each (fnn.gradcheck's default)
USER_MAX_ENTRIES = 200


def _parser():
    from . import LAYERS, LOSSES

    parser = argparse.ArgumentParser(
        prog="fastnn gradcheck",
        description="Gradient-check built-in layers and losses, or your own layer (module:factory), "
                    "in float64 over generated configurations.",
        epilog=f"layers: {' '.join(LAYERS)}; losses: {' '.join(LOSSES)}. module:factory: factory() "
               f"returns (layer, x) or a hypothesis strategy of (layer, x) pairs; module is a module "
               f"name (searched from the current directory) or a .py file.")
    parser.add_argument("names", nargs="*", metavar="LAYER",
                        help="layers or losses to check, or module:factory (default: all built-in)")
    parser.add_argument("--examples", type=int, default=10, help="configurations per layer and mode (default 10)")
    parser.add_argument("--mode", choices=("both", "training", "inference"), default="both",
                        help="forward mode(s) to check for layers (default both)")
    parser.add_argument("--max-entries", type=int, default=None,
                        help="entries checked per tensor (default: fastnn.testing.CASE_MAX_ENTRIES for "
                             f"built-in layers, {USER_MAX_ENTRIES} for yours)")
    parser.add_argument("--list", action="store_true", help="list the checkable names and exit")
    parser.add_argument("-q", "--quiet", action="store_true", help="print failures and the summary only")
    return parser


class SpecError(Exception):
    """A ``module:factory`` that does not resolve to a checkable layer (a usage error, exit 2)."""


class UserCase:
    """One check of a user's layer: ``layer`` on input ``x`` in mode ``training``; the same
    interface as ``fastnn.testing.Case`` (``check``, a readable ``repr``)."""

    def __init__(self, layer, x, training):
        self.layer, self.x, self.training = layer, x, training

    def check(self, max_entries=USER_MAX_ENTRIES):
        from .._gradcheck import gradcheck

        return gradcheck(self.layer, self.x, training=self.training, max_entries=max_entries)

    def __repr__(self):
        from .._gradcheck import _describe

        xs = self.x if isinstance(self.x, list) else [self.x]
        shown = ", ".join(f"{tuple(x.shape)} {x.dtype}" for x in xs)
        return f"{_describe(self.layer)}, input{'s' if len(xs) > 1 else ''} {shown}, training={self.training}"


class UserTarget:
    """A resolved ``module:factory``: ``pair`` (layer, x) or ``strategy`` of such pairs."""

    def __init__(self, spec, pair=None, strategy=None):
        self.spec, self.pair, self.strategy = spec, pair, strategy

    def __str__(self):
        return self.spec


def _import_module(module_name, spec):
    """The module of a ``module:factory`` spec: a ``.py`` file or an importable module name."""
    if module_name.endswith(".py") or "/" in module_name or os.sep in module_name:
        path = pathlib.Path(module_name).expanduser()
        if not path.is_file():
            raise SpecError(f"{spec}: no such file {module_name}")
        directory = str(path.resolve().parent)      # the file imports its neighbours, as a script does
        if directory not in sys.path:
            sys.path.insert(0, directory)
        name = f"_fastnn_gradcheck_{path.stem}"
        loader_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise SpecError(f"{spec}: running {module_name} failed:\n{_short_traceback(exc)}") from None
        return module
    if os.getcwd() not in sys.path and "" not in sys.path:  # as `python -m`: the current directory first
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise SpecError(f"{spec}: cannot import module {module_name!r}: no module named {exc.name!r} "
                            f"in the current directory or on sys.path (or give a file: path/to/file.py:factory)"
                            ) from None
        raise SpecError(f"{spec}: importing {module_name} failed:\n{_short_traceback(exc)}") from None
    except Exception as exc:
        raise SpecError(f"{spec}: importing {module_name} failed:\n{_short_traceback(exc)}") from None


def _short_traceback(exc, frames=4):
    """The last ``frames`` frames of ``exc``'s traceback and its message, indented."""
    listed = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__][-frames:]
    text = "".join(traceback.format_list(listed)) + "".join(traceback.format_exception_only(exc))
    return "  " + text.rstrip().replace("\n", "\n  ")


def _check_pair(value, spec, what):
    """``value`` as a validated (layer, x) pair, x a float or integer array or a list of them;
    else a SpecError."""
    import numpy as np

    expected = "a pair (layer, x) or a hypothesis strategy of such pairs"
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        shown = type(value).__name__ if not isinstance(value, (tuple, list)) else f"a {type(value).__name__} of {len(value)}"
        raise SpecError(f"{spec}: {what} {shown}; expected {expected}")
    layer, x = value
    if isinstance(layer, type):
        raise SpecError(f"{spec}: {what} the class {layer.__name__}, not an instance; expected {expected}")
    missing = [m for m in ("forward", "backward") if not callable(getattr(layer, m, None))]
    if missing:
        raise SpecError(f"{spec}: {what} ({type(layer).__name__}, x), and {type(layer).__name__} has no "
                        f"{' or '.join(m + '()' for m in missing)}: a layer needs forward(x, training) and "
                        f"backward(dy)")
    xs = x if isinstance(x, list) else [x]       # a list: one array per input (graph Model, Add)
    arrays = []
    for v in xs:
        try:
            a = np.asarray(v)
        except Exception:
            a = None
        if a is None or a.dtype.kind not in "fiu" or a.size == 0:
            shown = type(v).__name__ if a is None else f"an array of dtype {a.dtype} and shape {a.shape}"
            raise SpecError(f"{spec}: {what} (layer, {shown}); x must be a non-empty float "
                            f"(or integer index) array, or a list of them for a layer with several inputs")
        arrays.append(a)
    x = arrays if isinstance(x, list) else arrays[0]
    return layer, x


def _resolve_user(spec):
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise SpecError(f"{spec}: expected module:factory (e.g. my_layers:make_scale or my_layers.py:make_scale)")
    obj = _import_module(module_name, spec)
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n, v in vars(obj).items() if callable(v) and not n.startswith("_")
                            and getattr(v, "__module__", None) == getattr(obj, "__name__", None)) \
                if hasattr(obj, "__dict__") else []
            raise SpecError(f"{spec}: {module_name} has no attribute {part!r}"
                            + (f"; its callables: {', '.join(public)}" if public else ""))
        obj = getattr(obj, part)
    if not callable(obj):
        raise SpecError(f"{spec}: {attr} is a {type(obj).__name__}, not a callable factory")
    try:
        value = obj()
    except Exception as exc:
        raise SpecError(f"{spec}: calling {attr}() failed:\n{_short_traceback(exc)}") from None
    from hypothesis.strategies import SearchStrategy

    if isinstance(value, SearchStrategy):
        return UserTarget(spec, strategy=value)
    return UserTarget(spec, pair=_check_pair(value, spec, f"{attr}() returned"))


def _resolve(names):
    """(targets, unknown): built-in names in canonical spelling and resolved UserTargets, and
    the unknown built-in names. A ``module:factory`` that does not resolve raises SpecError."""
    from . import LAYERS, LOSSES

    known = {n.lower(): n for n in LAYERS + LOSSES}
    if not names:
        return list(LAYERS + LOSSES), []
    resolved, unknown = [], []
    for name in names:
        if ":" in name:
            resolved.append(_resolve_user(name))
            continue
        canonical = known.get(name.lower())
        (resolved if canonical else unknown).append(canonical or name)
    return resolved, unknown


def _check_one(target, training, examples, max_entries):
    """Run the property for one (target, mode). Returns dict(status, count, case, detail)."""
    from hypothesis import HealthCheck, Verbosity, given, settings
    from hypothesis import strategies as st

    from . import CASE_MAX_ENTRIES, cases

    outcome = {"count": 0, "case": None, "detail": None, "first_failure": None, "drawn": True}
    if isinstance(target, UserTarget):
        max_entries = max_entries or USER_MAX_ENTRIES
        if target.pair is not None:
            strategy, examples = st.just(UserCase(*target.pair, training)), 1
            outcome["drawn"] = False
        else:
            def as_case(value):
                return UserCase(*_check_pair(value, target.spec, "its strategy drew"), training)
            strategy = target.strategy.map(as_case)
    else:
        max_entries = max_entries or CASE_MAX_ENTRIES
        strategy = cases(target, training=training)

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet, print_blob=False)
    @given(case=strategy)
    def prop(case):
        if outcome["first_failure"] is None:
            outcome["count"] += 1       # configurations run before the first failure (not shrinking)
        try:
            result = case.check(max_entries=max_entries)
        except Exception as exc:
            frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<")]
            outcome["case"] = case
            outcome["first_failure"] = outcome["first_failure"] or outcome["count"]
            outcome["detail"] = ("".join(traceback.format_list(frames[-4:]))
                                 + "".join(traceback.format_exception_only(exc))).rstrip()
            raise
        if not result.ok:
            outcome["case"], outcome["detail"] = case, result.report()
            outcome["first_failure"] = outcome["first_failure"] or outcome["count"]
            raise AssertionError(result.report())

    try:
        prop()
        outcome["status"] = "ok"
    except SpecError:                   # a strategy drawing something that is not a (layer, x) pair
        raise
    except AssertionError:
        outcome["status"] = "FAILED"
    except Exception as exc:  # a layer that raises (or is missing) is reported, not fatal
        outcome["status"] = "ERROR"
        if outcome["detail"] is None:
            outcome["detail"] = f"{type(exc).__name__}: {exc}"
    return outcome


def run_checks(names, examples=10, mode="both", max_entries=None, out=None, quiet=False):
    """Check ``names`` (built-in names and resolved ``module:factory`` targets); print a table and the failures to ``out`` (default stdout); return the
    number of failed (name, mode) pairs."""
    from . import LOSSES

    out = sys.stdout if out is None else out
    modes = {"both": (True, False), "training": (True,), "inference": (False,)}[mode]
    print(f"fastnn gradcheck: {examples} configurations per layer and mode, float64, "
          f"central differences (eps=1e-6, atol=1e-5, rtol=1e-3)", file=out)
    failures, total = [], 0
    width = max([20] + [len(str(name)) for name in names])
    for name in names:
        started = time.perf_counter()
        cells = []
        for training in ((None,) if name in LOSSES else modes):
            outcome = _check_one(name, training, examples, max_entries)
            total += 1
            label = "loss" if training is None else ("training" if training else "inference")
            if outcome["status"] == "ok":
                cells.append(f"{label} {outcome['count']:>3} ok")
            else:
                cells.append(f"{label} {outcome['status']} at #{outcome['first_failure']}")
            if outcome["status"] != "ok":
                failures.append((name, label, outcome))
        line = f"  {str(name):<{width}} " + "   ".join(f"{c:<20}" for c in cells) + f" {time.perf_counter() - started:6.2f}s"
        if not quiet or any(f[0] == name for f in failures):
            print(line, file=out, flush=True)
    for name, label, outcome in failures:
        which = "smallest failing configuration" if outcome["drawn"] else "the configuration"
        print(f"\n{outcome['status']}: {name} ({label}); {which}:", file=out)
        print(f"  {outcome['case']!r}" if outcome["case"] is not None else "  (no configuration recorded)", file=out)
        print("  " + (outcome["detail"] or "").replace("\n", "\n  "), file=out)
    print(f"\n{total - len(failures)} of {total} checks passed", file=out)
    return len(failures)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:        # --help or a usage error: return argparse's status
        return int(exc.code or 0)
    if args.list:
        from . import LAYERS, LOSSES
        print("layers: " + " ".join(LAYERS) + "\nlosses: " + " ".join(LOSSES))
        return 0
    if args.examples < 1:
        print("fastnn gradcheck: --examples must be >= 1", file=sys.stderr)
        return 2
    try:
        names, unknown = _resolve(args.names)
        if unknown:
            print(f"fastnn gradcheck: unknown layer or loss {', '.join(unknown)} (see --list)", file=sys.stderr)
            return 2
        failed = run_checks(names, examples=args.examples, mode=args.mode, max_entries=args.max_entries,
                            quiet=args.quiet)
    except SpecError as exc:
        print(f"fastnn gradcheck: {exc}", file=sys.stderr)
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
