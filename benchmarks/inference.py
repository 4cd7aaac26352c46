"""Inference of the suite's models: fastnn's inference plan vs PyTorch and ONNX Runtime.

    python -m benchmarks.inference [--models mlp vgg-bn ...] [--batches 1 64] [--repeats 30]

For each model of ``fastnn.zoo`` and batch size, in one process, interleaved sample by sample
(``models.measure_interleaved``: each sample follows an untimed call of the same contender):

- **fastnn**: ``model.forward(x, training=False)``, the cached plan of fused steps
  (``fastnn.inference``: batch norm folded, epilogues fused, buffers reused); with
  ``--layer-by-layer`` also the layers run one by one (the path ``predict`` took before);
- **torch**: the ``torch.nn`` twin (``models.torch_module``) with fastnn's weights, ``eval()``,
  under ``torch.inference_mode()``, ``torch.set_num_threads(fnn.get_num_threads())``;
- **onnxruntime**: the model exported by ``fnn.onnx.export`` (opset 17), a
  ``InferenceSession`` on the CPU provider with ``intra_op_num_threads`` = fastnn's threads and
  graph optimisations at their default (all), spin-waiting off (``allow_spinning=0``: its
  spinning threads would slow the next contender of the interleaving).

Every contender's output is checked against fastnn's (float32, 1e-4) before timing. Reported:
latency per call (ms) and throughput (samples/s = batch / latency), as medians and as the best
samples (on a shared machine the medians carry the other jobs' load); the JSON goes to
``benchmarks/results/inference-YYYYmmdd-HHMMSS.json`` and the Markdown table is printed.
"""
import argparse
import contextlib
import json
import os
import platform
import tempfile
import time

import numpy as np

import fastnn as fnn
from fastnn import zoo

from .models import _stats, make_batch, measure_interleaved, torch_module, load_fastnn_weights

MODELS = tuple(zoo.BUILDERS)


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
    model, shape, loss = zoo.build(name)
    _randomise_batchnorm(model)
    x, _ = make_batch(model, shape, loss, batch)
    expected = model.forward(x, training=False)
    out = {"fastnn": lambda: model.forward(x, training=False)}
    if layer_by_layer:
        out["fastnn layer-by-layer"] = lambda: model._forward_layers(x, False)
    errors = {}
    if use_torch:
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


def _machine():
    info = {"python": platform.python_version(), "threads": fnn.get_num_threads(),
            "isa": fnn.config()["isa"] if hasattr(fnn, "config") else None}
    with contextlib.suppress(Exception):
        import torch
        info["torch"] = torch.__version__
    with contextlib.suppress(Exception):
        import onnxruntime
        info["onnxruntime"] = onnxruntime.__version__
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((line.split(":", 1)[1].strip() for line in f
                                if line.startswith("model name")), None)
    return info


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.inference", description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 64])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--layer-by-layer", action="store_true",
                        help="also time the layers run one by one (the pre-plan path)")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-ort", action="store_true")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--markdown", metavar="JSON", help="print the tables of a saved run")
    args = parser.parse_args(argv)
    if args.markdown:
        with open(args.markdown) as f:
            results = json.load(f)["results"]
        print(markdown(results) + "\n\n" + markdown(results, "min_s"))
        return 0
    start = time.time()
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
        json.dump({"machine": _machine(), "results": results}, f, indent=1)
    print(f"\nwrote {path} ({time.time() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
