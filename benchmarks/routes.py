"""``fastnn bench --routes``: every eligible convolution route of the suite's conv layers, timed.

For each Conv2D and ConvTranspose2D of the models (at their suite batch sizes) and each pass
(forward, dx, dw; no dx for a model's first layer), every route ``fastnn._core.conv_plan``
lists as eligible is forced in turn (``tuning(conv_forward=...)``) and timed: the routes of a
pass run interleaved call by call, rotating the order each round, and their medians are
compared. The table shows the planner's choice and the measured winner; where they differ by
more than the noise (``--routes-margin``, default 10%), the rule in conv_plan.py is due a
re-measurement on this CPU (benchmarks/decisions.md has the earlier ones).

The dx pass is timed alone (dW not requested), so ``subpixel/beside_dw``, which shares its pool
of tasks with dW, is not among its candidates.

A geometry met twice in a model (resnet's repeated blocks) is timed once. ``--cpu`` times
with ``time.process_time`` (the process's CPU time: at 1 thread the least disturbed reading on
a shared machine; at more threads it counts the waiting threads' spinning too); ``--json PATH``
writes the rows with every call's time, for comparing runs.

Run on its own: ``python -m benchmarks.routes [--models vgg-bn ...] [--repeats N] [--threads N]
[--cpu] [--json PATH]``.
"""
import argparse
import json
import statistics
import sys
import time

import numpy as np

import fastnn as fnn
from fastnn import _core
from fastnn._core import conv_plan, isa
from fastnn._core.tuning import tuning

from .convs import CONV_MODELS, _describe, conv_layers

_KNOB = {("conv", "forward"): "conv_forward", ("conv", "dx"): "conv_dx", ("conv", "dw"): "conv_dw",
         ("convT", "forward"): "convt_forward", ("convT", "dx"): "convt_dx",
         ("convT", "dw"): "convt_dw"}


def _pass_call(layer, x_shape, y_shape, pass_, rng):
    """A zero-argument call running one pass of ``layer`` (dW and db accumulate: harmless)."""
    transposed = type(layer).__name__ == "ConvTranspose2D"
    w = layer.weight.data
    b = None if layer.bias is None else layer.bias.data
    x = rng.standard_normal(x_shape, dtype=np.float32)
    dy = rng.standard_normal(y_shape, dtype=np.float32)
    s, p = layer.stride, layer.padding
    if pass_ == "forward":
        out = np.empty(y_shape, np.float32)
        fwd = _core.conv_transpose2d_forward if transposed else _core.conv2d_forward
        return lambda: fwd(x, w, b, out, s, p)
    bwd = _core.conv_transpose2d_backward if transposed else _core.conv2d_backward
    if pass_ == "dx":
        dx = np.empty_like(x)
        return lambda: bwd(x, w, dy, dx, None, None, s, p)
    dw, db = np.zeros_like(w), None if b is None else np.zeros_like(b)
    return lambda: bwd(x, w, dy, None, dw, db, s, p)


def _plan_and_eligible(layer, x_shape, y_shape, pass_):
    transposed = type(layer).__name__ == "ConvTranspose2D"
    w_shape = layer.weight.data.shape
    s, p = layer.stride, layer.padding
    if transposed:
        op = (y_shape[2] - ((x_shape[2] - 1) * s[0] - 2 * p[0] + w_shape[2]),
              y_shape[3] - ((x_shape[3] - 1) * s[1] - 2 * p[1] + w_shape[3]))
        plan = conv_plan.plan_conv_transpose2d(x_shape, w_shape, s, p, op)
        routes = conv_plan.eligible("conv_transpose2d", pass_, x_shape, w_shape, s, p, op)
    else:
        plan = conv_plan.plan_conv2d(x_shape, w_shape, s, p, need_dw=pass_ != "dx")
        routes = conv_plan.eligible("conv2d", pass_, x_shape, w_shape, s, p, need_dw=pass_ != "dx")
    return getattr(plan, pass_), routes


def time_routes(layer, x_shape, y_shape, pass_, repeats, rng, timer=time.perf_counter,
                samples=None):
    """(planner's route, {route: median seconds}) of one pass of ``layer`` (``samples``: a dict
    that receives every call's time, {route: [seconds]})."""
    kind = "convT" if type(layer).__name__ == "ConvTranspose2D" else "conv"
    knob = _KNOB[kind, pass_]
    chosen, routes = _plan_and_eligible(layer, x_shape, y_shape, pass_)
    call = _pass_call(layer, x_shape, y_shape, pass_, rng)
    times = {r: [] for r in routes}
    for r in routes:  # warm up: workspaces, caches, the OpenMP team
        with tuning(**{knob: r}):
            call()
    for i in range(repeats):
        order = routes[i % len(routes):] + routes[:i % len(routes)]
        for r in order:
            with tuning(**{knob: r}):
                t0 = timer()
                call()
                times[r].append(timer() - t0)
    if samples is not None:
        samples.update(times)
    return chosen, {r: statistics.median(t) for r, t in times.items()}


def run(models=CONV_MODELS, repeats=7, margin=0.10, out=sys.stdout, cpu=False):
    """Times every eligible route of every conv layer of ``models`` (``cpu``: process CPU time,
    else wall time); prints the table, returns its rows as dicts (model, layer, x_shape, pass,
    planner, winner, ms: {route: median ms}, calls: {route: [ms]}, retune)."""
    rng = np.random.default_rng(0)
    rows = []
    timer = time.process_time if cpu else time.perf_counter
    print(f"conv routes at {fnn.get_num_threads()} threads, {isa.LEVEL} level, medians "
          f"of {repeats} interleaved calls, ms ({'CPU' if cpu else 'wall'} time)", file=out)
    header = f"{'model':8} {'layer':28} {'pass':7} {'planner':29} {'winner':29} routes"
    print(header, file=out)
    print("-" * len(header), file=out)
    for model in models:
        seen = set()
        for layer, x_shape, y_shape, first in conv_layers(model):
            key = (_describe(layer, x_shape), tuple(x_shape), tuple(y_shape), first)
            if key in seen:
                continue
            seen.add(key)
            for pass_ in ("forward", "dx", "dw"):
                if pass_ == "dx" and first:
                    continue
                calls = {}
                chosen, ms = time_routes(layer, x_shape, y_shape, pass_, repeats, rng, timer,
                                         calls)
                ms = {r: t * 1e3 for r, t in ms.items()}
                winner = min(ms, key=ms.get)
                retune = ms[chosen] > ms[winner] * (1 + margin)
                rows.append({"model": model, "layer": _describe(layer, x_shape),
                             "x_shape": list(x_shape), "pass": pass_, "planner": chosen,
                             "winner": winner, "ms": ms,
                             "calls": {r: [t * 1e3 for t in ts] for r, ts in calls.items()},
                             "retune": retune})
                cells = " | ".join(f"{r} {t:.2f}" for r, t in sorted(ms.items(), key=lambda kv: kv[1]))
                print(f"{model:8} {_describe(layer, x_shape):28} {pass_:7} {chosen:29} "
                      f"{winner + (' <- re-tune' if retune else ''):29} {cells}", file=out, flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.routes", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(CONV_MODELS), metavar="NAME")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--routes-margin", type=float, default=0.10)
    p.add_argument("--cpu", action="store_true", help="time by process CPU time (1 thread)")
    p.add_argument("--json", metavar="PATH", help="write the rows (every call's time) here")
    args = p.parse_args(argv)
    if args.threads is not None:
        fnn.set_num_threads(args.threads)
    rows = run(args.models, args.repeats, args.routes_margin, cpu=args.cpu)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": fnn.get_num_threads(), "level": isa.LEVEL, "cpu": args.cpu,
                       "rows": rows}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
