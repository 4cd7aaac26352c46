"""``fastnn gradcheck [LAYER ...]``: gradient-check built-in layers and losses from the command line.

Runs the property checks of ``tests/test_properties.py`` (``fastnn.testing.cases``): for each
named layer (default: all layers and losses), ``--examples`` hypothesis-generated configurations
in training and in inference mode, each through ``fnn.gradcheck`` in float64. A failure is shrunk
to the smallest failing configuration, whose report is printed. Exit status: 0 when everything
passes, 1 when any check fails, 2 on a usage error or when hypothesis is not installed.
"""
import argparse
import sys
import time
import traceback

__all__ = ["main", "run_checks"]


def _parser():
    from . import LAYERS, LOSSES

    parser = argparse.ArgumentParser(
        prog="fastnn gradcheck",
        description="Gradient-check built-in layers and losses in float64 over generated configurations.",
        epilog=f"layers: {' '.join(LAYERS)}; losses: {' '.join(LOSSES)}")
    parser.add_argument("names", nargs="*", metavar="LAYER", help="layers or losses to check (default: all)")
    parser.add_argument("--examples", type=int, default=10, help="configurations per layer and mode (default 10)")
    parser.add_argument("--mode", choices=("both", "training", "inference"), default="both",
                        help="forward mode(s) to check for layers (default both)")
    parser.add_argument("--max-entries", type=int, default=None,
                        help="entries checked per tensor (default: fastnn.testing.CASE_MAX_ENTRIES)")
    parser.add_argument("--list", action="store_true", help="list the checkable names and exit")
    parser.add_argument("-q", "--quiet", action="store_true", help="print failures and the summary only")
    return parser


def _resolve(names):
    from . import LAYERS, LOSSES

    known = {n.lower(): n for n in LAYERS + LOSSES}
    if not names:
        return list(LAYERS + LOSSES), []
    resolved, unknown = [], []
    for name in names:
        canonical = known.get(name.lower())
        (resolved if canonical else unknown).append(canonical or name)
    return resolved, unknown


def _check_one(name, training, examples, max_entries):
    """Run the property for one (name, mode). Returns dict(status, count, case, detail)."""
    from hypothesis import HealthCheck, Verbosity, given, settings

    from . import CASE_MAX_ENTRIES, cases

    outcome = {"count": 0, "case": None, "detail": None, "first_failure": None}

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet, print_blob=False)
    @given(case=cases(name, training=training))
    def prop(case):
        if outcome["first_failure"] is None:
            outcome["count"] += 1       # configurations run before the first failure (not shrinking)
        try:
            result = case.check(max_entries=max_entries or CASE_MAX_ENTRIES)
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
    except AssertionError:
        outcome["status"] = "FAILED"
    except Exception as exc:  # a layer that raises (or is missing) is reported, not fatal
        outcome["status"] = "ERROR"
        if outcome["detail"] is None:
            outcome["detail"] = f"{type(exc).__name__}: {exc}"
    return outcome


def run_checks(names, examples=10, mode="both", max_entries=None, out=None, quiet=False):
    """Check ``names``; print a table and the failures to ``out`` (default stdout); return the
    number of failed (name, mode) pairs."""
    from . import LOSSES

    out = sys.stdout if out is None else out
    modes = {"both": (True, False), "training": (True,), "inference": (False,)}[mode]
    print(f"fastnn gradcheck: {examples} configurations per layer and mode, float64, "
          f"central differences (eps=1e-6, atol=1e-5, rtol=1e-3)", file=out)
    failures, total = [], 0
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
        line = f"  {name:<20} " + "   ".join(f"{c:<20}" for c in cells) + f" {time.perf_counter() - started:6.2f}s"
        if not quiet or any(f[0] == name for f in failures):
            print(line, file=out, flush=True)
    for name, label, outcome in failures:
        print(f"\n{outcome['status']}: {name} ({label}); smallest failing configuration:", file=out)
        print(f"  {outcome['case']!r}" if outcome["case"] is not None else "  (no configuration recorded)", file=out)
        print("  " + (outcome["detail"] or "").replace("\n", "\n  "), file=out)
    print(f"\n{total - len(failures)} of {total} checks passed", file=out)
    return len(failures)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        print("fastnn gradcheck needs hypothesis: pip install 'fastnn[test]' (or pip install hypothesis)",
              file=sys.stderr)
        return 2
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
    names, unknown = _resolve(args.names)
    if unknown:
        print(f"fastnn gradcheck: unknown layer or loss {', '.join(unknown)} (see --list)", file=sys.stderr)
        return 2
    failed = run_checks(names, examples=args.examples, mode=args.mode, max_entries=args.max_entries,
                        quiet=args.quiet)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
