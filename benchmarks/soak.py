"""Soak test: many training steps of the suite's models with the process's RSS sampled, to show
that memory does not grow once the buffers, caches and JIT code of the first steps exist.

    python -m benchmarks.soak                       # 20,000 steps each of lenet5 and lstm
    python -m benchmarks.soak --steps 2000 --models lenet5 --threads 1 --json soak.json

A step is ``zero_grad, forward, loss, backward, Adam step`` on one of a few fixed batches (the
batch changes every step so no shape or value is constant). RSS is read from
``/proc/self/statm`` every ``--sample-every`` steps. "Warm-up" is the RSS after ``--warmup``
steps (default 5% of the run, at least 200); the verdict compares the end with it:
``growth = end - warm-up`` and, more robust to one-off allocations, the slope of a least-squares
line through the samples after warm-up (KiB per 1,000 steps). Exit status 1 when the growth
exceeds ``--max-growth-mib`` (default 8 MiB), so the script can gate a long CI job.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastnn as fnn  # noqa: E402
from fastnn import losses, optim, zoo  # noqa: E402

BATCH = {"lenet5": 64, "lstm": 32, "rnn": 32, "mlp": 128, "vgg-bn": 64}
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mib():
    """Resident set size of this process in MiB (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def make_batches(model, input_shape, batch, count=4, seed=0):
    """``count`` different (x, y) batches whose shapes fit ``model`` (labels for cross-entropy)."""
    rng = np.random.default_rng(seed)
    first = model[0]
    out_probe = None
    batches = []
    for _ in range(count):
        if type(first).__name__ == "Embedding":
            x = rng.integers(0, first.num_embeddings, (batch,) + tuple(input_shape), dtype=np.int64)
        else:
            x = rng.standard_normal((batch,) + tuple(input_shape)).astype(np.float32)
        if out_probe is None:
            out_probe = model.forward(x, training=False)
        classes = out_probe.shape[-1]
        y = rng.integers(0, classes, out_probe.shape[:-1], dtype=np.int64)
        batches.append((x, y))
    return batches


def soak(name, steps, warmup, sample_every, seed=0, log=None):
    fnn.seed(seed)
    model, input_shape, loss_name = zoo.build(name)
    batch = BATCH.get(name, 32)
    batches = make_batches(model, input_shape, batch, seed=seed)
    loss_fn = losses.get(loss_name)
    opt = optim.Adam(model.parameters(), lr=1e-4)
    samples = [(0, rss_mib())]
    warm_rss = None
    t0 = time.perf_counter()
    t_warm = None
    last_loss = float("nan")
    for step in range(1, steps + 1):
        x, y = batches[step % len(batches)]
        model.zero_grad()
        out = model.forward(x, training=True)
        last_loss = loss_fn.forward(out, y)
        model.backward(loss_fn.backward())
        opt.step()
        if step == warmup:
            warm_rss, t_warm = rss_mib(), time.perf_counter()
        if step % sample_every == 0 or step == steps:
            samples.append((step, rss_mib()))
            if log is not None:
                log(f"{name}: step {step}/{steps}  rss {samples[-1][1]:.1f} MiB  loss {last_loss:.4f}")
    t_end = time.perf_counter()
    after = np.array([(s, r) for s, r in samples if s >= warmup], dtype=np.float64)
    slope = float(np.polyfit(after[:, 0], after[:, 1], 1)[0]) * 1000 * 1024 if len(after) > 2 else 0.0
    end_rss = samples[-1][1]
    timed_steps = steps - warmup
    return {
        "model": name, "batch": batch, "steps": steps, "warmup_steps": warmup,
        "threads": fnn.get_num_threads(),
        "rss_start_mib": samples[0][1], "rss_warmup_mib": warm_rss, "rss_end_mib": end_rss,
        "rss_max_after_warmup_mib": float(after[:, 1].max()) if len(after) else None,
        "growth_mib": end_rss - warm_rss,
        "slope_kib_per_1000_steps": slope,
        "steps_per_s": timed_steps / (t_end - t_warm) if timed_steps > 0 else None,
        "seconds": t_end - t0, "final_loss": float(last_loss),
        "samples": samples,
    }


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["lenet5", "lstm"], choices=sorted(zoo.BUILDERS))
    p.add_argument("--steps", type=int, default=20000, help="training steps per model (default 20000)")
    p.add_argument("--warmup", type=int, default=None, help="steps before the warm-up RSS reading")
    p.add_argument("--sample-every", type=int, default=None, help="steps between RSS samples")
    p.add_argument("--threads", type=int, default=None, help="fnn.set_num_threads (default: all cores)")
    p.add_argument("--max-growth-mib", type=float, default=8.0,
                   help="fail (exit 1) if RSS grows more than this after warm-up (default 8)")
    p.add_argument("--json", default=None, help="also write the results (with all samples) here")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.steps < 2:
        p.error("--steps must be >= 2")
    if args.threads is not None:
        fnn.set_num_threads(args.threads)
    warmup = args.warmup if args.warmup is not None else min(args.steps // 2, max(200, args.steps // 20))
    sample_every = args.sample_every or max(1, args.steps // 100)
    log = None if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    results, ok = [], True
    for name in args.models:
        r = soak(name, args.steps, warmup, sample_every, log=log)
        results.append(r)
        verdict = "ok" if r["growth_mib"] <= args.max_growth_mib else "GROWTH"
        ok &= verdict == "ok"
        print(f"{name:8s} steps={r['steps']} threads={r['threads']}  RSS start {r['rss_start_mib']:.1f} MiB, "
              f"after {warmup} warm-up steps {r['rss_warmup_mib']:.1f} MiB, end {r['rss_end_mib']:.1f} MiB "
              f"(growth {r['growth_mib']:+.2f} MiB, slope {r['slope_kib_per_1000_steps']:+.1f} KiB/1000 "
              f"steps), {r['steps_per_s']:.1f} steps/s  [{verdict}]", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
