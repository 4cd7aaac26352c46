"""Inference of the suite's models: fastnn's inference plan vs PyTorch and ONNX Runtime.

    python -m benchmarks.inference [--models mlp vgg-bn ...] [--batches 1 64] [--repeats 30]
    python -m benchmarks.inference --readme benchmarks/results/inference-RUN.json   # README's table

For each model of the suite (``fastnn.zoo``, as ``benchmarks.models.MODELS``) and the graph models
``fastnn train resnet|fcn`` trains (``GRAPH_MODELS``: train-resnet, train-fcn), and each batch size,
in one process, interleaved sample by sample (``models.measure_interleaved``: each sample follows an untimed call
of the same contender):

- **fastnn**: ``model.forward(x, training=False)``, the cached plan of fused steps
  (``fastnn.inference``: batch norm folded, epilogues fused, buffers reused); with
  ``--layer-by-layer`` also the layers (a graph model's nodes) run one by one (the path
  ``predict`` took before the plans);
- **torch**: the ``torch.nn`` twin (``models.torch_module``) with fastnn's weights, ``eval()``,
  under ``torch.inference_mode()``, ``torch.set_num_threads(fnn.get_num_threads())`` (the
  suite's models; the graph models of ``fastnn train`` have no torch twin);
- **onnxruntime**: the model exported by ``fnn.onnx.export`` (opset 17), a
  ``InferenceSession`` on the CPU provider with ``intra_op_num_threads`` = fastnn's threads and
  graph optimisations at their default (all), spin-waiting off (``allow_spinning=0``: its
  spinning threads would slow the next contender of the interleaving).

Every contender's output is checked against fastnn's (float32, 1e-4) before timing. Reported:
latency per call (ms) and throughput (samples/s = batch / latency), as medians and as the best
samples (on a shared machine the medians carry the other jobs' load); the JSON (with the load
average at the start and the end) goes to ``benchmarks/results/inference-YYYYmmdd-HHMMSS.json``
and the Markdown tables are printed. ``--readme RUN.json`` (also ``python -m benchmarks --readme
RUN.json``) prints the README's inference section from a saved run.
"""
import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

import fastnn as fnn
from fastnn import zoo

from .models import _stats, make_batch, measure_interleaved, torch_module, load_fastnn_weights

MODELS = tuple(zoo.BUILDERS)


def _graph_models():
    from fastnn.recipes import vision
    return {"train-resnet": (vision.resnet, (1, 8, 8)), "train-fcn": (vision.fcn, (1, 32, 32))}


# named apart from the suite's models (the suite has a resnet of its own, for 3x32x32 images)
GRAPH_MODELS = ("train-resnet", "train-fcn")


def _randomise_batchnorm(model, seed=0):
    """Running statistics away from (0, 1), as after training (the fold must do real work)."""
    gen = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__.startswith("BatchNorm"):
            layer.running_mean[...] = gen.normal(0, 0.1, layer.num_features)
            layer.running_var[...] = gen.uniform(0.5, 2.0, layer.num_features)
    fnn.inference.weights_changed()


def contenders(name, batch, layer_by_layer=False, use_torch=True, use_ort=True, tmpdir=None):
    """name -> callable running one inference of ``batch`` samples; and the reference output."""
    fnn.seed(0)
    graph = name in GRAPH_MODELS
    if graph:
        build, shape = _graph_models()[name]
        model = build()
        x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
    else:
        model, shape, loss = zoo.build(name)
    _randomise_batchnorm(model)
    if not graph:
        x, _ = make_batch(model, shape, loss, batch)
    expected = model.forward(x, training=False)
    out = {"fastnn": lambda: model.forward(x, training=False)}
    if layer_by_layer:
        one_by_one = model._forward_each
        out["fastnn layer-by-layer"] = lambda: one_by_one(x, False)
    errors = {}
    if use_torch and not graph:
        try:
            import torch
            torch.set_num_threads(fnn.get_num_threads())
            module = torch_module(model)
            load_fastnn_weights(module, model)
            module.eval()
            tx = torch.from_numpy(x)

            def torch_call():
                with torch.inference_mode():
                    return module(tx)
            got = torch_call().numpy()
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
            out["torch"] = torch_call
        except Exception as e:  # reported, not fatal: the other contenders still run
            errors["torch"] = f"{type(e).__name__}: {e}"[:300]
    if use_ort:
        try:
            import onnxruntime as ort
            path = os.path.join(tmpdir or tempfile.gettempdir(), f"bench-{name}.onnx")
            fnn.onnx.export(model, path, x[:1])
            options = ort.SessionOptions()
            options.intra_op_num_threads = fnn.get_num_threads()
            options.inter_op_num_threads = 1
            # no spin-waiting after a run: its threads would steal the cores of whichever
            # contender runs next in the interleaving
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            feed = {"input": x}

            def ort_call():
                return session.run(None, feed)[0]
            np.testing.assert_allclose(ort_call(), expected, rtol=1e-4, atol=1e-4)
            out["onnxruntime"] = ort_call
        except Exception as e:
            errors["onnxruntime"] = f"{type(e).__name__}: {e}"[:300]
    return out, errors


def bench(models, batches, repeats, warmup=5, **kwargs):
    results = []
    with tempfile.TemporaryDirectory() as tmpdir:
        for name in models:
            for batch in batches:
                calls, errors = contenders(name, batch, tmpdir=tmpdir, **kwargs)
                timed = measure_interleaved({k: (fn, repeats) for k, fn in calls.items()}, warmup)
                row = {"model": name, "batch": batch, "errors": errors, "contenders": {}}
                for who, (times, inner) in timed.items():
                    row["contenders"][who] = {**_stats(times, batch), "inner": inner}
                results.append(row)
                print(_row_text(row), flush=True)
    return results


def _row_text(row):
    parts = [f"{who} {c['median_s'] * 1e3:.3f} ms" for who, c in row["contenders"].items()]
    return f"{row['model']:>8} batch {row['batch']:>3}: " + ", ".join(parts)


def markdown(results, statistic="median_s"):
    """Latency at each batch (``statistic``: ``"median_s"`` or ``"min_s"``) and fastnn's
    speed-up over each other contender."""
    others = []
    for r in results:
        for who in r["contenders"]:
            if who != "fastnn" and who not in others:
                others.append(who)
    header = ["model", "batch", "fastnn ms", *[f"{o} ms" for o in others], "fastnn samples/s",
              *[f"vs {o}" for o in others]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        c = r["contenders"]
        f = c["fastnn"][statistic]
        cells = [r["model"], str(r["batch"]), f"{f * 1e3:.3f}"]
        cells += [f"{c[o][statistic] * 1e3:.3f}" if o in c else "-" for o in others]
        cells.append(f"{r['batch'] / f:,.0f}")
        cells += [f"{c[o][statistic] / f:.2f}x" if o in c else "-" for o in others]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


README_NOTE = (
    "fastnn is `forward(training=False)` (the inference plan); **layer-by-layer** the layers' "
    "(a graph model's nodes') own forwards one after the other; **torch** the `torch.nn` twin "
    "with the same weights, `eval()` under `torch.inference_mode()` (none for train-resnet and "
    "train-fcn, the graph models of `fastnn train`); **onnxruntime** the `fnn.onnx.export` file "
    "on the CPU "
    "provider, default graph optimisations; all interleaved in one process.")


def readme_block(run, statistic="min_s"):
    """The README's inference table of a saved run (``--readme RUN.json``): the machine, its
    load, the table of ``statistic`` (best samples by default, the least disturbed by other
    jobs) and how it was produced."""
    m = run.get("machine", {})
    load = m.get("load_average"), m.get("load_average_end")
    load_text = " -> ".join(f"{v:.1f}" for v in load if v is not None) or "?"
    which = "best of" if statistic == "min_s" else "median of"
    repeats = run.get("settings", {}).get("repeats", "?")
    head = (f"{m.get('cpu', '?')}, {m.get('threads', '?')} thread(s) each, {m.get('date', '?')}, "
            f"fastnn {m.get('git_commit') or '?'}, torch {m.get('torch', '-')}, onnxruntime "
            f"{m.get('onnxruntime', '-')}; load average {load_text} during the run; "
            f"latency per call in ms ({which} {repeats} samples), fastnn's throughput in samples/s. "
            f"`{run.get('command', 'python -m benchmarks.inference')}`")
    return "\n".join([head, "", README_NOTE, "", markdown(run["results"], statistic)]) + "\n"


def _machine():
    from .system import _git_commit, _load_average
    info = {"python": platform.python_version(), "threads": fnn.get_num_threads(),
            "isa": fnn.config()["isa"] if hasattr(fnn, "config") else None,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load_average": _load_average(), "git_commit": _git_commit()}
    for module in ("torch", "onnxruntime"):  # the versions of those the run imported
        if module in sys.modules:
            info[module] = getattr(sys.modules[module], "__version__", None)
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((line.split(":", 1)[1].strip() for line in f
                                if line.startswith("model name")), None)
    return info


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.inference", description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS + GRAPH_MODELS),
                        choices=MODELS + GRAPH_MODELS)
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 64])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--layer-by-layer", action="store_true",
                        help="also time the layers run one by one (the pre-plan path)")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-ort", action="store_true")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--markdown", metavar="JSON", help="print the tables of a saved run")
    parser.add_argument("--readme", metavar="JSON", help="print the README's inference section of a saved run")
    args = parser.parse_args(argv)
    if args.readme:
        with open(args.readme) as f:
            print(readme_block(json.load(f)))
        return 0
    if args.markdown:
        with open(args.markdown) as f:
            results = json.load(f)["results"]
        print(markdown(results) + "\n\n" + markdown(results, "min_s"))
        return 0
    start = time.time()
    from .system import _git_commit
    started = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "load_average": os.getloadavg()[0], "git_commit": _git_commit()}
    results = bench(args.models, args.batches, args.repeats, layer_by_layer=args.layer_by_layer,
                    use_torch=not args.no_torch, use_ort=not args.no_ort)
    print("\nmedians:\n" + markdown(results))
    print("\nbest samples (the least disturbed by other load on the machine):\n"
          + markdown(results, "min_s"))
    for r in results:
        for who, err in r["errors"].items():
            print(f"{r['model']} batch {r['batch']}: {who} skipped: {err}")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, time.strftime("inference-%Y%m%d-%H%M%S.json"))
    with open(path, "w") as f:
        machine = _machine()
        machine["load_average_end"] = machine["load_average"]
        machine.update(started)
        threads_env = os.environ.get("FASTNN_NUM_THREADS")
        command = ((f"FASTNN_NUM_THREADS={threads_env} " if threads_env else "")
                   + "python -m benchmarks.inference " + " ".join(sys.argv[1:] if argv is None else argv))
        json.dump({"kind": "inference", "command": command.strip(), "machine": machine,
                   "settings": {"repeats": args.repeats, "batches": args.batches},
                   "results": results}, f, indent=1)
    print(f"\nwrote {path} ({time.time() - start:.0f} s); the README's table: "
          f"python -m benchmarks.inference --readme {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
