"""Run under ``mpiexec -n 2 python -m mpi4py tests/mpi_checks.py MODE OUTDIR`` by
tests/model/test_distributed.py: data-parallel training checked against single-process training
computed here, on every rank. Mode ``checks`` writes ``OUTDIR/rank<r>.json`` (what each check
measured); modes ``raise`` and ``kill`` make rank 1 fail in the middle of ``fit`` (an exception,
or SIGKILL)."""
import json
import os
import signal
import sys

import numpy as np

import fastnn as fnn
from fastnn import _random
from fastnn import distributed as dist
from fastnn import callbacks
from fastnn import layers as L

dist.init()
RANK, SIZE = dist.rank(), dist.size()


def weights(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def max_diff(a, b):
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in a)


def params(model):
    return {k: p.data.copy() for k, p in model.named_parameters()}


def same_on_every_rank(state):
    """True when every rank holds bitwise the same arrays."""
    mine = {k: v.tobytes() for k, v in state.items()}
    return all(other == mine for other in dist_comm().allgather(mine))


def dist_comm():
    from mpi4py import MPI
    return MPI.COMM_WORLD


def train_pair(build, X, y, *, optimizer, epochs, batch_size, sync_batchnorm=False, **fit_args):
    """The same model trained data-parallel (batch_size per rank) and in this process alone
    (batch_size * SIZE); returns both models and histories."""
    ddp = dist.DataParallel(build(), bucket_bytes=1024, sync_batchnorm=sync_batchnorm)
    fnn.seed(5)
    hist = ddp.fit(X, y, optimizer=optimizer(ddp.parameters()), epochs=epochs,
                   batch_size=batch_size, verbose=0, **fit_args)
    single = build()
    fnn.seed(5)
    ref = single.fit(X, y, optimizer=optimizer(single.parameters()), epochs=epochs,
                     batch_size=batch_size * SIZE, verbose=0, **fit_args)
    return ddp, hist, single, ref


def mlp64():
    fnn.seed(0)
    return fnn.Sequential(L.Dense(10, 48), L.ReLU(), L.Dense(48, 32), L.Tanh(),
                          L.Dense(32, 3)).astype(np.float64)


def cnn32():
    fnn.seed(1)
    return fnn.Sequential(L.Conv2D(1, 4, 3, padding=1), L.ReLU(), L.MaxPool2D(2), L.Flatten(),
                          L.Dense(4 * 4 * 4, 16), L.ReLU(), L.Dense(16, 3))


def bn_cnn64():
    fnn.seed(2)
    # BatchNorm + ReLU and BatchNorm + LeakyReLU run fused in Sequential
    # (no bias before a batch norm: its gradient is rounding noise, which Adam's normalisation
    # blows up to ~lr * 1e-9 differences between any two summation orders)
    return fnn.Sequential(L.Conv2D(1, 4, 3, padding=1, bias=False), L.BatchNorm2D(4), L.ReLU(),
                          L.Conv2D(4, 4, 3, padding=1, bias=False), L.BatchNorm2D(4),
                          L.LeakyReLU(0.1),
                          L.Flatten(), L.Dense(4 * 6 * 6, 3)).astype(np.float64)


def bn_graph64():
    """A graph model whose batch norm is called twice (two runners, one set of statistics)."""
    fnn.seed(8)
    inp = fnn.Input(shape=(1, 6, 6))
    bn = L.BatchNorm2D(4, name="bn")
    h = L.ReLU()(bn(L.Conv2D(1, 4, 3, padding=1, bias=False, name="c1")(inp)))
    h = L.Tanh()(bn(L.Conv2D(4, 4, 3, padding=1, bias=False, name="c2")(h)))
    out = L.Dense(4 * 6 * 6, 3, name="head")(L.Flatten()(h))
    return fnn.Model(inputs=inp, outputs=out).astype(np.float64)


def bn_mlp64():
    fnn.seed(3)
    return fnn.Sequential(L.Dense(10, 16), L.BatchNorm1D(16), L.ReLU(),
                          L.Dense(16, 3)).astype(np.float64)


def graph64():
    """A graph model with fan-out and a layer called twice (its gradients accumulate)."""
    fnn.seed(6)
    inp = fnn.Input(shape=(10,))
    shared = L.Dense(10, 10, name="shared")
    h = L.Tanh()(shared(inp))
    h = L.Add()([h, L.Tanh()(shared(h))])
    out = L.Dense(10, 3, name="head")(L.ReLU()(L.Dense(10, 10, name="mid")(h)))
    return fnn.Model(inputs=inp, outputs=out).astype(np.float64)


def adam(params):
    return fnn.optim.Adam(params, lr=1e-2)


def sgd(params):
    return fnn.optim.SGD(params, lr=0.05, momentum=0.9)


def checks(outdir):
    out = {}
    data = np.random.default_rng(7)
    X = data.standard_normal((203, 10))
    y = data.integers(0, 3, 203)

    # float64 MLP; 203 rows, global batch 32: the last global batch has 11 rows (6 + 5)
    ddp, hist, single, ref = train_pair(mlp64, X, y, optimizer=adam, epochs=3, batch_size=16,
                                        metrics=["accuracy"], validation_data=(X[:50], y[:50]))
    out["mlp64"] = {"same_on_ranks": same_on_every_rank(weights(ddp)),
                    "diff": max_diff(weights(ddp), weights(single)),
                    "history": hist.history, "history_single": ref.history,
                    "evaluate": ddp.evaluate(X, y, loss="cross_entropy"),
                    "evaluate_single": single.evaluate(X, y, loss="cross_entropy"),
                    "predict_diff": float(np.abs(ddp.predict(X) - single.predict(X)).max()),
                    "steps": ddp.timing["steps"]}

    # a graph model (fnn.Model) with a shared layer; small buckets: several start in backward
    ddp, _, single, _ = train_pair(graph64, X, y, optimizer=adam, epochs=2, batch_size=16)
    out["graph64"] = {"same_on_ranks": same_on_every_rank(weights(ddp)),
                      "diff": max_diff(weights(ddp), weights(single)),
                      "buckets": len(ddp._buckets.bounds),
                      "early": sum(1 for e in ddp._buckets.expected if e > 0)}

    # a training loop of one's own: forward, backward (gradients averaged over the ranks), step
    def manual(model, parallel):
        opt = adam(model.parameters())
        loss = fnn.losses.CrossEntropy()
        for step in range(4):
            rows = slice(32 * step, 32 * (step + 1))
            if parallel:
                rows = slice(rows.start + 16 * RANK, rows.start + 16 * (RANK + 1))
            model.zero_grad()
            loss.forward(model.forward(X[rows]), y[rows])
            model.backward(loss.backward())
            opt.step()
        return weights(model)

    own = manual(dist.DataParallel(mlp64()), True)
    out["manual"] = {"same_on_ranks": same_on_every_rank(own),
                     "diff": max_diff(own, manual(mlp64(), False))}

    # float32 convolutional net, SGD with momentum, 96 rows: whole global batches only
    Xc = data.standard_normal((96, 1, 8, 8)).astype(np.float32)
    yc = data.integers(0, 3, 96)
    ddp, _, single, _ = train_pair(cnn32, Xc, yc, optimizer=sgd, epochs=2, batch_size=8)
    out["cnn32"] = {"same_on_ranks": same_on_every_rank(weights(ddp)),
                    "diff": max_diff(weights(ddp), weights(single))}

    # batch norm over the global batch; 41 rows, global batch 8: the last global batch has one
    # row, so rank 1's share is empty (it still takes part in every allreduce)
    Xb = data.standard_normal((41, 1, 6, 6)) * 3 + 1
    yb = data.integers(0, 3, 41)
    ddp, _, single, _ = train_pair(bn_cnn64, Xb, yb, optimizer=adam, epochs=2, batch_size=4,
                                   sync_batchnorm=True)
    out["sync_bn"] = {"same_on_ranks": same_on_every_rank(weights(ddp)),
                      "diff": max_diff(weights(ddp), weights(single)),
                      "steps": ddp.timing["steps"]}
    ddp, _, single, _ = train_pair(bn_graph64, Xb, yb, optimizer=adam, epochs=2, batch_size=4,
                                   sync_batchnorm=True)
    out["sync_bn_graph"] = {"same_on_ranks": same_on_every_rank(weights(ddp)),
                            "diff": max_diff(weights(ddp), weights(single))}

    # per-rank batch norm: the weights still agree (averaged gradients) and the running
    # statistics are averaged before saving; save on rank 0 then resume on both
    path = os.path.join(outdir, "ckpt.npz")

    def bn_run(epochs, **fit_args):
        ddp = dist.DataParallel(bn_mlp64())
        fnn.seed(11)
        opt = adam(ddp.parameters())
        hist = ddp.fit(X, y, optimizer=opt, epochs=epochs, batch_size=16, verbose=0, **fit_args)
        return ddp, hist

    whole, whole_hist = bn_run(4)
    bn_run(2, checkpoint=path)
    fnn.seed(99)  # the resumed run must take its generator state from the checkpoint
    resumed, resumed_hist = bn_run(4, resume=path)
    running = [resumed.module.layers[1].running_mean.copy()]
    final = os.path.join(outdir, "final.npz")
    resumed.save(final)
    saved = fnn.load(final)
    running.append(resumed.module.layers[1].running_mean.copy())
    gathered = dist_comm().allgather(running[0])
    out["resume"] = {"same_on_ranks": same_on_every_rank(params(resumed)),
                     "diff": max_diff(params(resumed), params(whole)),
                     "history": resumed_hist.history["loss"],
                     "history_whole": whole_hist.history["loss"],
                     "running_differ_before_save": not np.array_equal(*gathered),
                     "running_is_mean": float(np.abs(running[1] - np.mean(gathered, 0)).max()),
                     "state_same_after_save": same_on_every_rank(weights(resumed)),
                     "saved_equals_model": max_diff(weights(saved), weights(resumed)),
                     "files": sorted(os.listdir(outdir))}

    # dropout: a stream of its own per rank, reproducible from fnn.seed
    def dropout_run():
        fnn.seed(4)
        model = fnn.Sequential(L.Dense(10, 32), L.ReLU(), L.Dropout(0.5), L.Dense(32, 3))
        ddp = dist.DataParallel(model)
        with _random.using(ddp._rank_generator):
            mask = ddp.module.layers[2].forward(np.ones((4, 32), np.float32)).copy()
        ddp.fit(X.astype(np.float32), y, optimizer=adam(ddp.parameters()), epochs=1,
                batch_size=16, verbose=0)
        return mask, weights(ddp)

    mask, state = dropout_run()
    mask_again, state_again = dropout_run()
    masks = dist_comm().allgather(mask)
    out["dropout"] = {"masks_differ": not np.array_equal(masks[0], masks[1]),
                      "reproducible": bool(np.array_equal(mask, mask_again)
                                           and max_diff(state, state_again) == 0.0),
                      "same_on_ranks": same_on_every_rank(state)}

    # a rank that built another architecture: a clear error on every rank
    fnn.seed(0)
    width = 48 if RANK == 0 else 47
    other = fnn.Sequential(L.Dense(10, width), L.ReLU(), L.Dense(width, 3))
    try:
        dist.DataParallel(other)
        out["mismatch"] = None
    except ValueError as e:
        out["mismatch"] = str(e)

    # data of another length on one rank: a clear error on every rank, not a hang
    try:
        ddp = dist.DataParallel(mlp64())
        ddp.fit(X[:200 + RANK], y[:200 + RANK], epochs=1, batch_size=16, verbose=0)
        out["uneven"] = None
    except ValueError as e:
        out["uneven"] = str(e)

    # the collectives
    a = np.full(3, RANK + 1.0)
    dist.allreduce(a, op="sum")
    b = np.full(3, RANK + 1.0)
    dist.allreduce(b, op="mean")
    c = np.arange(4.0) + 10 * RANK
    dist.broadcast(c, root=1)
    dist.barrier()
    out["collectives"] = {"sum": a.tolist(), "mean": b.tolist(), "broadcast": c.tolist(),
                          "rank": RANK, "size": SIZE, "initialized": dist.is_initialized()}
    out["threads"] = fnn.get_num_threads()

    with open(os.path.join(outdir, f"rank{RANK}.json"), "w") as f:
        json.dump(out, f)


def hosts(outdir):
    """The float64 MLP check, for ranks on two (network-namespace) hosts."""
    from mpi4py import MPI

    data = np.random.default_rng(7)
    X, y = data.standard_normal((203, 10)), data.integers(0, 3, 203)
    ddp, _, single, _ = train_pair(mlp64, X, y, optimizer=adam, epochs=2, batch_size=16)
    local = MPI.COMM_WORLD.Split_type(MPI.COMM_TYPE_SHARED)
    out = {"same_on_ranks": same_on_every_rank(weights(ddp)),
           "diff": max_diff(weights(ddp), weights(single)),
           "hostname": MPI.Get_processor_name(), "ranks_on_host": local.Get_size()}
    with open(os.path.join(outdir, f"rank{RANK}.json"), "w") as f:
        json.dump(out, f)


class FailOnRank(callbacks.Callback):
    def __init__(self, how):
        self.how = how

    def on_epoch_end(self, epoch, logs=None):
        if RANK == 1 and epoch == 1:
            if self.how == "kill":  # no exception, no clean-up: the process is just gone
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("rank 1 fails on purpose")


def fail(outdir, how):
    data = np.random.default_rng(7)
    X, y = data.standard_normal((64, 10)), data.integers(0, 3, 64)
    ddp = dist.DataParallel(mlp64())
    ddp.fit(X, y, optimizer=adam(ddp.parameters()), epochs=50, batch_size=8, verbose=0,
            checkpoint=os.path.join(outdir, "ckpt.npz"), callbacks=[FailOnRank(how)])
    with open(os.path.join(outdir, f"finished{RANK}"), "w") as f:
        f.write("training ended normally")


if __name__ == "__main__":
    mode, outdir = sys.argv[1], sys.argv[2]
    if mode in ("checks", "hosts"):
        {"checks": checks, "hosts": hosts}[mode](outdir)
    else:
        fail(outdir, mode)
