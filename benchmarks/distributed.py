"""Data-parallel scaling: one process with T threads against K MPI ranks of T/K threads each.

    python -m benchmarks.distributed                       # mlp and lenet5, 1x2 vs 2x1
    python -m benchmarks.distributed --models mlp --rounds 5 --ranks 2 --threads 2

Each configuration trains ``fit`` epochs of ``--steps`` steps on random data of the suite's
shapes (``fastnn.zoo``, float32, Adam), at the suite's global batch (strong scaling: each of K
ranks takes batch / K rows) and, with ``--weak``, also at the suite's batch per rank. The two
set-ups run in turns, ``--rounds`` times, each a fresh launch; the report gives medians of the
per-epoch times (the first epoch of a launch is warm-up and dropped): steps/s, samples/s, and for
the ranks the share of a step spent in communication (starting, advancing and waiting for the
gradient allreduces: ``DataParallel.timing``).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

BATCH = {"mlp": 128, "lenet5": 64}


def worker(name, batch, steps, epochs):
    """One launch (alone or as one of the ranks): prints rank 0's per-epoch measurements."""
    import fastnn as fnn
    from fastnn import callbacks, distributed as dist, zoo

    dist.init()
    fnn.seed(0)
    model, input_shape, loss_name = zoo.build(name)
    if dist.size() > 1:
        model = dist.DataParallel(model)
    data = np.random.default_rng(0)
    n = batch * dist.size() * steps
    X = data.standard_normal((n, *input_shape), dtype=np.float32)
    y = data.integers(0, 10, n)
    times, comm = [], []

    class Clock(callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()
            self.comm = getattr(self.model, "timing", {}).get("comm_seconds", 0.0)

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)
            comm.append(getattr(self.model, "timing", {}).get("comm_seconds", 0.0) - self.comm)

    model.fit(X, y, loss=loss_name, optimizer=fnn.optim.Adam(model.parameters()),
              epochs=epochs, batch_size=batch, verbose=0, callbacks=[Clock()])
    if dist.rank() == 0:
        print(json.dumps({"epoch_seconds": times[1:], "comm_seconds": comm[1:],
                          "threads": fnn.get_num_threads(), "ranks": dist.size()}))


def launch(name, ranks, threads, batch, steps, epochs):
    env = dict(os.environ, FASTNN_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "benchmarks.distributed", "--worker", name, "--batch",
           str(batch), "--steps", str(steps), "--epochs", str(epochs)]
    if ranks > 1:
        cmd = [os.path.join(os.path.dirname(sys.executable), "mpiexec"), "-n", str(ranks), *cmd]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure(name, ranks, threads, global_batch, steps, epochs, rounds, one_thread=False,
            ranks_only=False):
    setups = [("alone", 1, threads, global_batch),
              ("ranks", ranks, max(1, threads // ranks), global_batch // ranks)]
    if ranks_only:
        setups = setups[1:]
    elif one_thread:
        setups.append(("one thread", 1, 1, global_batch))
    runs = {label: [] for label, *_ in setups}
    for r in range(rounds):
        for label, k, t, b in (setups if r % 2 == 0 else setups[::-1]):
            runs[label].append(launch(name, k, t, b, steps, epochs))
    rows = []
    for label, k, t, b in setups:
        epoch_s = [s for run in runs[label] for s in run["epoch_seconds"]]
        comm_s = [s for run in runs[label] for s in run["comm_seconds"]]
        median = statistics.median(epoch_s)
        rows.append({"model": name, "ranks": k, "threads": t, "batch_per_rank": b,
                     "global_batch": b * k, "steps_per_s": steps / median,
                     "samples_per_s": steps * b * k / median,
                     "comm_share": statistics.median(c / e for c, e in zip(comm_s, epoch_s)),
                     "epoch_seconds": epoch_s})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.distributed")
    parser.add_argument("--models", nargs="+", default=list(BATCH), choices=sorted(BATCH))
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="threads of the single process")
    parser.add_argument("--steps", type=int, default=40, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=4, help="per launch; the first is warm-up")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--weak", action="store_true",
                        help="also the suite's batch per rank (the global batch grows)")
    parser.add_argument("--one-thread", action="store_true",
                        help="also one process with one thread (what the threads alone give)")
    parser.add_argument("--json", default=None, help="write the rows here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.batch, args.steps, args.epochs)
    rows = []
    for name in args.models:
        rows += measure(name, args.ranks, args.threads, BATCH[name], args.steps, args.epochs,
                        args.rounds, args.one_thread)
        if args.weak:
            rows += measure(name, args.ranks, args.threads, BATCH[name] * args.ranks,
                            args.steps, args.epochs, args.rounds, ranks_only=True)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d')}")
    print("| model | ranks x threads | batch per rank (global) | steps/s | samples/s | "
          "communication share |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        share = f"{row['comm_share']:.0%}" if row["ranks"] > 1 else "-"
        print(f"| {row['model']} | {row['ranks']} x {row['threads']} | {row['batch_per_rank']} "
              f"({row['global_batch']}) | {row['steps_per_s']:.1f} | {row['samples_per_s']:.0f} "
              f"| {share} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
