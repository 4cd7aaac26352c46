"""fastnn's benchmark suite: ``python -m benchmarks [options]`` (also ``fastnn bench [options]``).

Times whole training steps of the suite's models against PyTorch in its three CPU setups (eager,
fused Adam, torch.compile; same weights, same process, interleaved) and fastnn's NumPy reference
kernels (the test oracle), measures the machine's float32 GEMM peak (best of numpy, torch and
fastnn), thread scaling, cold start and memory, runs the kernel benchmarks, and writes JSON,
Markdown and a PNG chart to ``--out``. ``--compare OLD.json`` adds a per-model comparison with
an earlier run; ``--compare OLD.json NEW.json`` compares two saved runs without measuring anything;
``--readme RUN.json`` prints the README's table from a saved run (the training table, or the
inference table of a ``python -m benchmarks.inference`` run).
"""
import argparse
import os
import sys
import time
import traceback

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
SCALING_MODELS = ("mlp", "lenet5", "lstm")
COLD_START_MODELS = ("mlp", "lenet5")


def _parser():
    from .models import MODELS

    p = argparse.ArgumentParser(prog="python -m benchmarks" if __package__ == "benchmarks" else "fastnn bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=None, metavar="NAME",
                   help=f"models to time, space or comma separated (default: all of {', '.join(MODELS)})")
    p.add_argument("--repeats", type=int, default=None, help="timed samples per contender (default 20, quick 5)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3, quick 1)")
    p.add_argument("--ref-repeats", type=int, default=None,
                   help="timed samples of the slow NumPy reference path (default 5, quick 2)")
    p.add_argument("--threads", type=int, default=None, help="fastnn.set_num_threads (torch follows); default: all cores")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even when it is importable")
    p.add_argument("--no-compile", action="store_true",
                   help="skip the torch.compile setup (eager and fused Adam only; no C++ compiles)")
    p.add_argument("--readme", metavar="JSON",
                   help="print the README's benchmark table and notes from a saved run, measure nothing")
    p.add_argument("--quick", action="store_true", help="few repeats, small side sections")
    p.add_argument("--out", default=DEFAULT_OUT, help="directory for the JSON/Markdown/PNG (default benchmarks/results)")
    p.add_argument("--compare", nargs="+", metavar="JSON",
                   help="OLD.json: compare this run with it; OLD.json NEW.json: only compare the two files")
    p.add_argument("--no-kernels", action="store_true", help="skip benchmarks/kernels.py")
    p.add_argument("--no-convs", action="store_true",
                   help="skip the conv layers of vgg-bn, dcgan-g and dcgan-d (benchmarks/convs.py)")
    p.add_argument("--no-scaling", action="store_true", help="skip thread scaling")
    p.add_argument("--no-cold-start", action="store_true", help="skip the cold-start subprocesses")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--no-chart", action="store_true", help="do not draw the PNG chart")
    p.add_argument("--routes", action="store_true",
                   help="only time every eligible convolution route of the conv layers of --models "
                        "(default vgg-bn, dcgan-g, dcgan-d) against the planner's choice "
                        "(benchmarks/routes.py), measure nothing else")
    p.add_argument("--routes-margin", type=float, default=0.10,
                   help="with --routes: flag a layer when its winner beats the planner by this much")
    return p


def _model_list(parser, given, known):
    if not given:
        return list(known)
    names = [n for item in given for n in item.split(",") if n]
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return list(dict.fromkeys(names))


def run_kernels(quick):
    """The kernel benchmarks of benchmarks/kernels.py, as rows of dicts."""
    from . import kernels

    repeats = 3 if quick else 10
    sizes = [256, 512] if quick else [256, 512, 1024]
    dense = [(32, 25, 3), (128, 784, 256)] if quick else [(32, 25, 3), (128, 784, 256), (128, 256, 10)]
    convs = kernels.CONV_LAYERS[:2] if quick else kernels.CONV_LAYERS
    raw = (kernels.bench_gemm(sizes, repeats) + kernels.bench_dense(dense, repeats * 20)
           + kernels.bench_conv(convs, repeats, 1 if quick else 2))
    return {"rows": [{"kernel": name, "fastnn_gflops": f, "baseline_gflops": b, "speedup": r}
                     for name, f, b, r in raw] + kernels.suite_rows(quick)}


def _section(results, key, fn, *args):
    """Run a side measurement; its failure is recorded, not raised."""
    print(f"[bench] {key} ...", file=sys.stderr, flush=True)
    try:
        results[key] = fn(*args)
    except Exception as exc:  # noqa: BLE001
        results[key] = None
        results.setdefault("section_errors", {})[key] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    from . import report

    if args.readme:
        import json
        with open(args.readme) as f:
            run = json.load(f)
        if isinstance(run, dict) and run.get("kind") == "inference":  # benchmarks/inference.py's
            from .inference import readme_block
            print(readme_block(run))
            return 0
        print(report.readme_block(report.load_json(args.readme)))
        return 0
    if args.compare and len(args.compare) > 2:
        parser.error("--compare takes OLD.json, or OLD.json NEW.json")
    if args.compare and len(args.compare) == 2:
        print(report.compare(report.load_json(args.compare[0]), report.load_json(args.compare[1])))
        return 0
    old = report.load_json(args.compare[0]) if args.compare else None
    for name in ("repeats", "warmup", "ref_repeats", "threads"):
        v = getattr(args, name)
        if v is not None and v < (0 if name == "warmup" else 1):
            parser.error(f"--{name.replace('_', '-')} must be >= {0 if name == 'warmup' else 1}, got {v}")

    import fastnn as fnn

    from . import convs, models, system

    if args.routes:
        from . import routes

        if args.threads is not None:
            fnn.set_num_threads(args.threads)
        chosen = _model_list(parser, args.models, convs.CONV_MODELS)
        routes.run(chosen, args.repeats or (3 if args.quick else 7), args.routes_margin)
        return 0
    names = _model_list(parser, args.models, models.MODELS)
    repeats = args.repeats or (5 if args.quick else 20)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    ref_repeats = args.ref_repeats or (2 if args.quick else 5)
    if args.threads is not None:
        fnn.set_num_threads(args.threads)
    use_torch = not args.no_torch and system.torch_available()
    setups = [s for s in models.TORCH_SETUPS if not (args.no_compile and models.TORCH_SETUPS[s][1])]
    started = time.perf_counter()
    results = {
        "schema": report.SCHEMA,
        "command": "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": {"models": names, "repeats": repeats, "warmup": warmup, "ref_repeats": ref_repeats,
                     "threads": fnn.get_num_threads(), "torch": use_torch, "quick": args.quick,
                     "torch_setups": setups if use_torch else []},
        "machine": system.machine_info(with_torch=use_torch),
        "heap": system.steady_heap(),
    }
    if not use_torch and not args.no_torch:
        print("[bench] torch is not importable: no PyTorch column (pip install '.[bench]')", file=sys.stderr)
    print("[bench] GEMM peak (numpy, fastnn" + (", torch" if use_torch else "") + ") ...", file=sys.stderr, flush=True)
    peak_args = ((512, 1024), 3, use_torch) if args.quick else ((512, 1024, 2048), 10, use_torch)
    start_peak = system.gemm_peak(*peak_args)
    results["gemm_peak"] = start_peak
    results["models"] = {}
    for name in names:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        r = models.bench_model(name, repeats, warmup, use_torch, ref_repeats, torch_setups=setups)
        if r["status"] != "ok":
            print(f"[bench] {name} failed: {r['error']}", file=sys.stderr)
        results["models"][name] = r

    cores = results["machine"]["usable_cpus"] or 1
    counts = list(range(1, cores + 1)) if cores <= 8 else sorted({1, 2, 4, 8, cores})
    if not args.no_scaling:
        scaling = [n for n in (SCALING_MODELS[:1] if args.quick else SCALING_MODELS) if n in names] or names[:1]
        _section(results, "thread_scaling", system.thread_scaling, scaling, counts,
                 5 if args.quick else 10, 1 if args.quick else 2)
    if not args.no_cold_start:
        cold = [n for n in (COLD_START_MODELS[:1] if args.quick else COLD_START_MODELS) if n in names] or names[:1]
        _section(results, "cold_start", system.cold_start, cold, 2 if args.quick else 3)
    if not args.no_memory:
        _section(results, "memory", system.peak_memory, names)
    if not args.no_kernels:
        _section(results, "kernels", run_kernels, args.quick)
    conv_models = [n for n in convs.CONV_MODELS if n in names]
    if not args.no_convs and conv_models:
        _section(results, "model_convs", convs.bench_model_convs, conv_models, 5 if args.quick else 20, use_torch,
                 1024, start_peak["best"])
    print("[bench] GEMM peak again ...", file=sys.stderr, flush=True)
    results["gemm_peak"] = system.merge_peaks(start_peak, system.gemm_peak(*peak_args))
    peak = results["gemm_peak"]["gflops"]
    for r in results["models"].values():
        if r["status"] == "ok":
            r["peak_fraction"] = r["gflops"] / peak
    results["machine"]["load_average_end"] = system._load_average()
    results["elapsed_s"] = time.perf_counter() - started
    results["machine"]["date_end"] = time.strftime("%Y-%m-%d %H:%M:%S")

    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, "bench-" + time.strftime("%Y%m%d-%H%M%S"))
    report.write_json(results, stem + ".json")
    text = report.markdown(results)
    if old is not None:
        text += "\n" + report.compare(old, results)
    with open(stem + ".md", "w") as f:
        f.write(text)
    print(text)
    written = [stem + ".json", stem + ".md"]
    if not args.no_chart and report.chart(results, stem + ".png"):
        written.append(stem + ".png")
    print("[bench] wrote " + ", ".join(written), file=sys.stderr)
    print(f"[bench] took {results['elapsed_s'] / 60:.1f} min; the README's table: "
          f"python -m benchmarks --readme {stem}.json", file=sys.stderr)
    return 0 if any(r["status"] == "ok" for r in results["models"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
