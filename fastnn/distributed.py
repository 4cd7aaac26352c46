"""Data-parallel training over MPI (``pip install "fastnn[mpi]"``: mpi4py and the MPICH wheel).

    from fastnn import distributed as dist
    dist.init()                                   # MPI's world; without a launcher: one rank
    ddp = dist.DataParallel(model)                # rank 0's weights on every rank
    ddp.fit(X, y, optimizer=fnn.optim.Adam(ddp.parameters()), epochs=5, batch_size=64)
    ddp.save("model.npz")                         # rank 0 writes, every rank waits

    mpiexec -n 4 python train.py                  # four processes, one script

Every rank holds the whole model and a copy of the data. ``fit`` shards every global batch of
``batch_size * size`` rows between the ranks, and the gradients are averaged (weighted by rows)
with non-blocking allreduces of buckets of one contiguous gradient buffer, each started as soon
as the layers of its bucket have finished their backward, so the reduction overlaps the rest of
the backward. After ``fit`` every rank holds the weights a single process would have after
``fit`` with ``batch_size * size``.

A script runs unchanged without ``mpiexec`` (one rank, no MPI at all when none launched it).
Under a launcher with more than one rank, an uncaught exception on any rank aborts every rank
(``MPI_Abort``), so one failing process never leaves the others waiting forever.
"""
import contextlib
import hashlib
import json
import os
import sys
import time

import numpy as np

from . import _random
from .layers.base import settle_grads

__all__ = ["init", "rank", "size", "is_initialized", "barrier", "broadcast", "allreduce",
           "DataParallel"]

# environment variables a launcher sets for its processes (MPICH/Hydra and PMIx, Open MPI, Slurm)
_LAUNCHER_ENV = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE")

_state = {"comm": None, "mpi": None}


class _OneRank:
    """The communicator of a process that no launcher started: one rank, nothing to exchange."""

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 1

    def Barrier(self):
        pass

    def bcast(self, obj, root=0):
        return obj

    def allgather(self, obj):
        return [obj]

    def Dup(self):
        return self


def launched():
    """True when an MPI launcher (``mpiexec``, ``srun``) started this process, or MPI already
    runs in it (``python -m mpi4py``)."""
    return any(k in os.environ for k in _LAUNCHER_ENV) or "mpi4py.MPI" in sys.modules


def init():
    """Join MPI's world (``MPI_COMM_WORLD``); idempotent. A process no launcher started is one
    rank on its own and needs no MPI installed.

    With more than one rank, an uncaught exception on any rank aborts all of them, and unless
    ``FASTNN_NUM_THREADS`` is set each rank uses the cores of its host divided by the ranks on
    that host (``fnn.set_num_threads``)."""
    if _state["comm"] is not None:
        return
    if not launched():
        _state["comm"] = _OneRank()
        return
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError("fastnn.distributed: this process was started by an MPI launcher but "
                          "mpi4py is not installed; pip install \"fastnn[mpi]\"") from e
    _state["mpi"], _state["comm"] = MPI, MPI.COMM_WORLD
    if MPI.COMM_WORLD.Get_size() > 1:
        _abort_on_uncaught_exceptions(MPI.COMM_WORLD)
        if "FASTNN_NUM_THREADS" not in os.environ:
            from ._core.threads import set_num_threads
            set_num_threads(_threads_per_rank(MPI))


def _threads_per_rank(MPI):
    """The cores this process may use divided by the ranks on its host (at least 1)."""
    local = MPI.COMM_WORLD.Split_type(MPI.COMM_TYPE_SHARED)
    on_host = local.Get_size()
    local.Free()
    cores = os.cpu_count() or 1
    try:
        cores = min(cores, len(os.sched_getaffinity(0)) * on_host)
    except AttributeError:  # pragma: no cover - no affinity call on this OS
        pass
    return max(1, cores // on_host)


def _abort_on_uncaught_exceptions(comm):
    previous = sys.excepthook

    def hook(kind, value, tb):
        try:
            # the error first, in one line: the launcher may cut the traceback short
            sys.stderr.write(f"fastnn.distributed: rank {comm.Get_rank()} of {comm.Get_size()} "
                             f"failed ({kind.__name__}: {value}); aborting every rank\n")
            sys.stderr.flush()
            previous(kind, value, tb)
            sys.stdout.flush()
            sys.stderr.flush()
            time.sleep(0.5)  # let the launcher forward the output before it ends the job
        finally:
            comm.Abort(1)

    sys.excepthook = hook


def _comm():
    init()
    return _state["comm"]


def is_initialized():
    """True once :func:`init` has run (the functions below call it on first use)."""
    return _state["comm"] is not None


def rank():
    """This process's rank in MPI's world (0 without a launcher)."""
    return _comm().Get_rank()


def size():
    """The number of ranks (1 without a launcher)."""
    return _comm().Get_size()


def barrier():
    """Wait until every rank has called ``barrier``."""
    _comm().Barrier()


def broadcast(array, root=0):
    """Overwrite ``array`` on every rank with ``root``'s (same shape and dtype everywhere);
    returns ``array``."""
    array = _check_array("broadcast", array)
    comm = _comm()
    if comm.Get_size() == 1:
        return array
    buf = array if array.flags.c_contiguous else np.ascontiguousarray(array)
    comm.Bcast(buf, root=root)
    if buf is not array:
        array[...] = buf
    return array


_OPS = ("sum", "mean", "max", "min")


def allreduce(array, op="sum"):
    """Replace ``array`` on every rank, in place, with the elementwise ``op`` (``"sum"``,
    ``"mean"``, ``"max"``, ``"min"``) of every rank's ``array``; returns ``array``."""
    array = _check_array("allreduce", array)
    if op not in _OPS:
        raise ValueError(f"allreduce: op must be one of {_OPS}, got {op!r}")
    if op == "mean" and array.dtype.kind not in "fc":
        raise TypeError(f"allreduce: op='mean' needs a floating-point array, got {array.dtype}")
    comm = _comm()
    if comm.Get_size() == 1:
        return array
    MPI = _state["mpi"]
    mpi_op = {"sum": MPI.SUM, "mean": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}[op]
    buf = array if array.flags.c_contiguous else np.ascontiguousarray(array)
    comm.Allreduce(MPI.IN_PLACE, buf, op=mpi_op)
    if op == "mean":
        buf /= comm.Get_size()
    if buf is not array:
        array[...] = buf
    return array


def _check_array(where, array):
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{where}: expected a numpy.ndarray (changed in place), got "
                        f"{type(array).__name__}")
    if not array.flags.writeable:
        raise ValueError(f"{where}: the array is read-only")
    return array


# --- running a piece of work on rank 0 -----------------------------------------------------------
def _on_root(comm, where, work):
    """Run ``work()`` on rank 0 only; every rank returns when it is done. An exception on rank 0
    is raised there and, as a RuntimeError naming it, on every other rank."""
    result, failure = None, None
    if comm.Get_rank() == 0:
        try:
            result = work()
        except Exception as e:
            failure = e
    message = comm.bcast(None if failure is None else f"{type(failure).__name__}: {failure}",
                         root=0)
    if failure is not None:
        raise failure
    if message is not None:
        raise RuntimeError(f"{where} failed on rank 0: {message}")
    return result


# --- the architecture check ----------------------------------------------------------------------
def _describe(model):
    """What must agree between ranks: every state tensor's shape and dtype in order, and (when
    the model can say) its layer specification; the tensors' names go along for the message."""
    state = [(list(v.shape), str(v.dtype)) for v in model.state_dict().values()]
    spec = None
    try:
        from .layers.base import layer_to_spec
        spec = _without_names(layer_to_spec(model))
    except Exception:  # a model without layer configs: the tensors alone are compared
        pass
    return {"class": type(model).__name__, "state": state, "spec": spec,
            "keys": list(model.state_dict())}


def _without_names(spec):
    """A layer spec without the layers' names: default names count the layers a process has
    made, which differs between ranks (names that matter are in the state keys)."""
    if isinstance(spec, dict):
        return {k: _without_names(v) for k, v in spec.items()
                if not (k == "name" and "class" in spec)}
    if isinstance(spec, list):
        return [_without_names(v) for v in spec]
    return spec


def _first_difference(mine, root):
    if mine["class"] != root["class"]:
        return f"rank 0 wraps a {root['class']}, this rank a {mine['class']}"
    a, b = root["state"], mine["state"]
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else None
        y = b[i] if i < len(b) else None
        if x != y:
            def show(d, t):
                return "nothing" if t is None else f"{d['keys'][i]} {tuple(t[0])} {t[1]}"
            return (f"state tensor {i}: rank 0 has {show(root, x)}, this rank has "
                    f"{show(mine, y)}")
    return (f"the layer configurations differ: rank 0 {json.dumps(root['spec'])[:300]}, this "
            f"rank {json.dumps(mine['spec'])[:300]}")


def _check_same_architecture(comm, model):
    descriptions = comm.allgather(_describe(model))
    compared = [json.dumps({k: v for k, v in d.items() if k != "keys"}, sort_keys=True)
                for d in descriptions]
    differing = [r for r, d in enumerate(compared) if d != compared[0]]
    if differing:
        me = comm.Get_rank()
        detail = _first_difference(descriptions[me if me in differing else differing[0]],
                                   descriptions[0])
        raise ValueError(f"DataParallel: every rank must build the same model, but rank(s) "
                         f"{differing} differ from rank 0 ({detail}; rank "
                         f"{me if me in differing else differing[0]})")


# --- batch norm over the global batch -------------------------------------------------------------
class _SyncBatchNorm:
    """Batch statistics over the shares of one global batch on every rank: one allreduce of
    per-channel sums in forward, one in backward (``BatchNorm*.sync`` calls it).

    The gradients a rank computes are those of its own mean loss; ``DataParallel`` weights them
    by the rank's share of the rows (``m_r / M``) before summing, so the backward returns
    ``dx`` in those units: ``dx = w * invstd * (dy - S1 / m_r - xhat * S2 / m_r)`` with
    ``S1 = sum_r (m_r / M) sum(dy)``, ``S2 = sum_r (m_r / M) sum(dy * xhat)``."""

    def __init__(self, comm, MPI):
        self.comm, self.MPI = comm, MPI
        self.seconds = 0.0  # time spent in the allreduces

    def _allreduce(self, buf):
        start = time.perf_counter()
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        self.seconds += time.perf_counter() - start

    def forward(self, layer, x3, out, relu, negative_slope):
        c = layer.num_features
        # moments about the running mean (the same on every rank): no cancellation when the
        # batch mean is far from zero
        shift = layer.running_mean.astype(np.float64)
        d = x3.astype(np.float64) - shift[:, None]
        sums = np.empty(2 * c + 1)
        sums[0] = x3.shape[0] * x3.shape[2]
        d.sum(axis=(0, 2), out=sums[1:c + 1])
        np.einsum("ncl,ncl->c", d, d, out=sums[c + 1:])
        self._allreduce(sums)
        count = sums[0]
        if count < 2:
            raise ValueError(f"{layer.describe()}: training needs more than one value per channel "
                             f"over the global batch to estimate the variance, got {int(count)}")
        delta = sums[1:c + 1] / count
        mean = shift + delta
        var = np.maximum(sums[c + 1:] / count - delta * delta, 0.0)
        invstd = 1.0 / np.sqrt(var + layer.eps)
        layer.mean[...] = mean
        layer.invstd[...] = invstd
        if x3.size:
            from . import _core
            dtype = layer.dtype
            _core.batchnorm_forward_eval(x3, layer.weight.data, layer.bias.data,
                                         mean.astype(dtype), var.astype(dtype), layer.eps, out,
                                         relu=relu, negative_slope=negative_slope)
        m = layer.momentum
        layer.running_mean[...] = (1 - m) * layer.running_mean + m * mean
        layer.running_var[...] = (1 - m) * layer.running_var + m * var * count / (count - 1)
        layer.sync_count = count

    def backward(self, layer, dy3, dx):
        c = layer.num_features
        dy = dy3.astype(np.float64)
        if layer.relu_out is not None:  # the fused ReLU's backward first
            open_ = layer.relu_out > 0
            dy = np.where(open_, dy, 0.0 if layer.relu_slope is None else dy * layer.relu_slope)
        mean = layer.mean.astype(np.float64)
        invstd = layer.invstd.astype(np.float64)
        xhat = (layer.x.astype(np.float64) - mean[:, None]) * invstd[:, None]
        local = layer.x.shape[0] * layer.x.shape[2]
        sums = np.empty(2 * c)
        dy.sum(axis=(0, 2), out=sums[:c])
        np.einsum("ncl,ncl->c", dy, xhat, out=sums[c:])
        layer.bias.grad += sums[:c].astype(layer.dtype)
        layer.weight.grad += sums[c:].astype(layer.dtype)
        total = sums * (local / layer.sync_count)
        self._allreduce(total)
        if local:
            g = dy - total[:c, None] / local - xhat * (total[c:, None] / local)
            g *= (layer.weight.data.astype(np.float64) * invstd)[:, None]
            dx[...] = g

    def idle(self, layers):
        """A rank with no rows in this step takes part in the collectives of the others'
        forward and backward (empty shares: its sums are zero)."""
        for layer in layers:
            layer.forward(_empty_input(layer), training=True)
        for layer in reversed(layers):
            layer.backward(_empty_input(layer))


def _empty_input(layer):
    return np.zeros((0, layer.num_features) + (1,) * (min(layer._ranks) - 2), layer.dtype)


def _batchnorm_calls(model):
    """The batch norm layers in the order a training forward calls them: a layer called twice
    is there twice (in a graph model, its second call runs on a second runner object that
    shares its parameters and buffers)."""
    from .layers.norm import _BatchNorm

    found = []

    def visit(layer):
        if isinstance(layer, _BatchNorm):
            found.append(layer)
        for _, child in layer.children():
            visit(child)

    steps = getattr(model, "_steps", None)  # a graph model's calls in forward order
    for layer in [step.runner for step in steps] if steps is not None else [model]:
        visit(layer)
    return found


# --- gradient buckets ----------------------------------------------------------------------------
class _Buckets:
    """Every parameter's ``.grad`` as a view into one contiguous buffer, laid out in reverse
    parameter order (the order backward finishes them) and cut into buckets of at least
    ``bucket_bytes``.

    ``layer_done`` is the model's ``after_layer_backward``. The first step that reports layers
    only counts the reports (which layer, how often: a layer called twice is reported twice);
    from the next step on, a bucket's non-blocking allreduce starts as soon as every report its
    parameters wait for has come. A bucket holding a parameter of no reported layer starts
    after backward. Buckets start in index order on every rank (MPI matches collectives by
    their order), whatever the timing."""

    def __init__(self, model, comm, MPI, bucket_bytes):
        self.model, self.comm, self.MPI = model, comm, MPI
        self.bucket_bytes = bucket_bytes
        self.seconds = 0.0  # time spent in MPI calls (starting, progressing, waiting)
        self.bind()

    def bind(self):
        unique = {}
        for p in self.model.parameters():
            unique.setdefault(id(p), p)
        self.params = list(unique.values())
        dtypes = {p.data.dtype for p in self.params}
        if len(dtypes) > 1:
            raise TypeError(f"DataParallel: the parameters must share one dtype, got "
                            f"{sorted(str(d) for d in dtypes)}")
        dtype = dtypes.pop() if dtypes else np.dtype(np.float32)
        total = sum(p.data.size for p in self.params)
        self.flat = np.zeros(total, dtype)
        self.views, self.bounds, bucket_of, self.bucket_params = [], [], {}, [[]]
        offset, start = 0, 0
        for p in reversed(self.params):
            view = self.flat[offset:offset + p.data.size].reshape(p.data.shape)
            view[...] = p.grad
            p.grad = view
            self.views.append(view)
            bucket_of[id(p)] = len(self.bounds)
            self.bucket_params[-1].append(p)
            offset += p.data.size
            if (offset - start) * dtype.itemsize >= self.bucket_bytes:
                self.bounds.append((start, offset))
                self.bucket_params.append([])
                start = offset
        if offset > start or not self.bounds:
            self.bounds.append((start, offset))
        self.views.reverse()
        self.bucket_of = bucket_of
        # learned from the first step with reports: how many (report, parameter) pairs each
        # bucket waits for (0: it starts after backward), and what one layer's report settles
        self.expected = [0] * len(self.bounds)
        self.settles = None
        self.reports = None

    def _learn(self, reports):
        expected = [0] * len(self.bounds)
        covered, self.settles = set(), {}
        for key, (layer, calls) in reports.items():
            counts = {}
            for p in {id(q): q for q in layer.parameters()}.values():
                b = self.bucket_of.get(id(p))
                if b is not None:
                    counts[b] = counts.get(b, 0) + 1
                    covered.add(id(p))
            self.settles[key] = list(counts.items())
            for b, k in counts.items():
                expected[b] += k * calls
        for p in self.params:
            if id(p) not in covered:
                expected[self.bucket_of[id(p)]] = 0
        self.expected = expected

    def check_bound(self):
        """Rebind when a parameter's gradient array was replaced (``astype``, a new layer)."""
        params = self.model.parameters()
        if (len(params) != len(self.params)
                or any(p.grad is not v for p, v in zip(self.params, self.views))
                or any(p is not q for p, q in zip(params, self.params))):
            self.bind()

    def begin(self, weight):
        self.weight = weight
        self.pending = list(self.expected)
        self.next = 0
        self.requests = []
        self.reports = {} if self.settles is None else None

    def layer_done(self, layer):
        if self.reports is not None:  # the first step: count the reports
            entry = self.reports.setdefault(id(layer), [layer, 0])
            entry[1] += 1
            return
        settles = self.settles.get(id(layer))
        if not settles:
            return
        for b, k in settles:
            self.pending[b] -= k
        start = time.perf_counter()
        while self.next < len(self.bounds) and self.pending[self.next] <= 0 \
                and self.expected[self.next] > 0:
            self._start(self.next)
            self.next += 1
        if self.requests:  # MPICH advances non-blocking collectives inside MPI calls
            self.MPI.Request.Testall(self.requests)
        self.seconds += time.perf_counter() - start

    def _start(self, b):
        lo, hi = self.bounds[b]
        settle_grads(self.bucket_params[b])  # a parameter no layer wrote this step: its zeros
        segment = self.flat[lo:hi]
        if self.weight != 1.0:
            segment *= segment.dtype.type(self.weight)
        self.requests.append(self.comm.Iallreduce(self.MPI.IN_PLACE, segment, op=self.MPI.SUM))

    def finish(self):
        start = time.perf_counter()
        while self.next < len(self.bounds):
            self._start(self.next)
            self.next += 1
        self.MPI.Request.Waitall(self.requests)
        self.requests = []
        self.seconds += time.perf_counter() - start
        if self.reports:
            self._learn(self.reports)
        self.reports = None


# --- fit's plan for several ranks -----------------------------------------------------------------
class _ShardedPlan:
    """``Sequential.fit``'s plan (see ``model._LocalPlan``) for data-parallel training: global
    batch i is the batch i of one process with ``batch_size * size`` rows; rank r takes rows
    [r*b, (r+1)*b) of it, a short last batch split as evenly as possible."""

    def __init__(self, ddp):
        self.ddp = ddp
        self.model = ddp  # callbacks save through the wrapper (rank 0 writes)
        self.rank, self.size = ddp.rank, ddp.size

    def steps(self, n, batch_size):
        return -(-n // (batch_size * self.size))

    def rows(self, b, n, batch_size):
        start = b * batch_size * self.size
        m = min(n, start + batch_size * self.size) - start
        q, r = divmod(m, self.size)
        lo = start + self.rank * q + min(self.rank, r)
        return slice(lo, lo + q + (self.rank < r)), m

    def step(self, rows, step_rows):
        return self.ddp._step(rows / step_rows, idle=rows == 0)

    def total(self, sums):
        values = np.array(sums, dtype=np.float64)
        self.ddp._comm_sum(values)
        return [float(v) for v in values]

    def evaluate(self, model, where, X, y, loss_fn, metric_fns, batch_size):
        return self.ddp._evaluate(where, X, y, loss_fn, metric_fns, batch_size)

    def resume(self, model, path, optimizer, history):
        return self.ddp._resume(path, optimizer, history)


def _chain(first, then):
    """A layer report to a hook the model already had, then to ``then``."""
    if first is None:
        return then

    def both(layer):
        first(layer)
        then(layer)
    return both


def _shard(n, rank, size):
    q, r = divmod(n, size)
    lo = rank * q + min(rank, r)
    return slice(lo, lo + q + (rank < r))


class DataParallel:
    """``model`` trained data-parallel by every rank of MPI's world, with the model's API
    (``forward``, ``backward``, ``fit``, ``evaluate``, ``predict``, ``save``, ``parameters``,
    ``state_dict``, ...).

    Wrapping checks that every rank built the same architecture (a ``ValueError`` on every rank
    otherwise) and copies rank 0's parameters and buffers to the others. Each parameter's
    ``.grad`` becomes a view into one contiguous buffer whose buckets are averaged between the
    ranks during backward (see :class:`_Buckets`).

    Args:
        model: a ``Sequential`` or graph ``Model`` (or any object with their API; the
            reduction overlaps the backward when the model reports each layer's end of backward
            through ``after_layer_backward``, as those two do; otherwise it runs after it).
        bucket_bytes: the least size of one allreduce (default 1 MiB): larger buckets mean fewer
            messages, smaller ones an earlier start.
        sync_batchnorm: batch norm statistics over the global batch (one allreduce of the sums
            forward, one backward); otherwise each rank normalises its own share and the running
            statistics are averaged between ranks before evaluating, predicting and saving.

    ``fit``: ``batch_size`` is per rank; every rank draws the same shuffled order (fastnn's
    generator, rank 0's state), global batch i holds exactly the rows one process would take as
    its batch i with ``batch_size * size``, rank r its rows [r*b, (r+1)*b) (a short last batch
    split as evenly as possible, gradients weighted by rows), so every rank runs the same steps
    and ends with the weights of that single-process ``fit``. Loss and metrics in the history and
    in ``evaluate`` are over all ranks' rows; only rank 0 shows progress. Dropout draws from a
    stream of its own on each rank, derived from fastnn's generator (``fnn.seed``) and the rank.

    ``timing`` counts steps and the seconds spent in communication (starting, advancing and
    waiting for the gradient allreduces, and synchronised batch norm; waiting includes waiting
    for a slower rank).
    """

    def __init__(self, model, bucket_bytes=1 << 20, sync_batchnorm=False):
        init()
        if isinstance(bucket_bytes, bool) or not isinstance(bucket_bytes, (int, np.integer)) \
                or bucket_bytes < 1:
            raise ValueError(f"DataParallel: bucket_bytes must be an int >= 1, got "
                             f"{bucket_bytes!r}")
        for name in ("forward", "backward", "parameters", "state_dict", "load_state_dict", "fit"):
            if not callable(getattr(model, name, None)):
                raise TypeError(f"DataParallel: the model needs a {name}() method (the "
                                f"Sequential API), got a {type(model).__name__}")
        world = _comm()
        self.module = model
        self.rank, self.size = world.Get_rank(), world.Get_size()
        self.sync_batchnorm = bool(sync_batchnorm)
        self.timing = {"steps": 0, "comm_seconds": 0.0}
        _check_same_architecture(world, model)
        # gradients and batch norm each on a communicator of their own: a rank with an empty
        # share issues its batch-norm allreduces in another order relative to the buckets
        self._comm = world.Dup()
        self._MPI = _state["mpi"]
        self._broadcast_state()
        self._bn_layers = _batchnorm_calls(model)
        self._sync = None
        if self.sync_batchnorm and self.size > 1:
            self._sync = _SyncBatchNorm(world.Dup(), self._MPI)
            for layer in self._bn_layers:
                layer.sync = self._sync
        self._buckets = (_Buckets(model, self._comm, self._MPI, int(bucket_bytes))
                         if self.size > 1 else None)
        self._share_generator()

    # --- what is shared between ranks -----------------------------------------------------------
    def _broadcast_state(self):
        """Rank 0's parameters and buffers on every rank."""
        if self.size == 1:
            return
        state = self.module.state_dict()
        for value in state.values():
            self._comm.Bcast(value, root=0)
        self.module.load_state_dict(state)

    def _share_generator(self):
        """Rank 0's generator state on every rank (the shuffled order), and this rank's own
        stream for dropout: derived from that state and the rank, reproducible from fnn.seed."""
        generator = _random.rng()
        if self.size > 1:
            generator.bit_generator.state = self._comm.bcast(generator.bit_generator.state,
                                                             root=0)
        state = json.dumps(generator.bit_generator.state, sort_keys=True, default=str)
        entropy = int.from_bytes(hashlib.sha256(state.encode()).digest()[:16], "little")
        seeds = np.random.SeedSequence(entropy, spawn_key=(self.rank,))
        self._rank_generator = np.random.Generator(type(generator.bit_generator)(seeds))

    def _average_buffers(self):
        """Per-rank running statistics (batch norm without sync) averaged between ranks."""
        if self.size == 1 or self._sync is not None or not self._bn_layers:
            return
        buffers = {}
        for layer in self._bn_layers:  # a layer called twice shares its buffers: once each
            for buf in (layer.running_mean, layer.running_var):
                buffers.setdefault(id(buf), buf)
        for buf in buffers.values():
            self._comm.Allreduce(self._MPI.IN_PLACE, buf, op=self._MPI.SUM)
            buf /= self.size

    def _comm_sum(self, values):
        if self.size > 1:
            self._comm.Allreduce(self._MPI.IN_PLACE, values, op=self._MPI.SUM)
        return values

    # --- one training step ----------------------------------------------------------------------
    @contextlib.contextmanager
    def _step(self, weight, idle=False):
        """Forward and backward inside: dropout from this rank's stream, gradient buckets
        reduced as layers finish (scaled by ``weight``, this rank's share of the rows); on a
        normal exit the gradients are the global ones."""
        buckets = self._buckets
        previous = getattr(self.module, "after_layer_backward", None)
        if buckets is not None:
            buckets.check_bound()
            buckets.begin(weight)
            self.module.after_layer_backward = _chain(previous, buckets.layer_done)
        try:
            with _random.using(self._rank_generator):
                yield
        finally:
            if buckets is not None:
                self.module.after_layer_backward = previous
        if buckets is not None:
            if idle and self._sync is not None:
                self._sync.idle(self._bn_layers)
            buckets.finish()
            self.timing["comm_seconds"] = buckets.seconds + (
                self._sync.seconds if self._sync is not None else 0.0)
        self.timing["steps"] += 1

    def forward(self, x, training=True):
        """The model's forward (dropout from this rank's stream)."""
        with _random.using(self._rank_generator):
            return self.module.forward(x, training=training)

    def backward(self, dy, **kwargs):
        """The model's backward, then the gradients averaged over the ranks (each rank's
        gradient of its own mean loss weighs 1/size)."""
        buckets = self._buckets
        if buckets is None:
            return self.module.backward(dy, **kwargs)
        buckets.check_bound()
        buckets.begin(1.0 / self.size)
        previous = getattr(self.module, "after_layer_backward", None)
        self.module.after_layer_backward = _chain(previous, buckets.layer_done)
        try:
            dx = self.module.backward(dy, **kwargs)
        finally:
            self.module.after_layer_backward = previous
        buckets.finish()
        return dx

    # --- the model API --------------------------------------------------------------------------
    def fit(self, X, y, *args, verbose=1, **kwargs):
        """``model.fit`` data-parallel (see the class docstring); the same arguments, with
        ``batch_size`` per rank."""
        if "_plan" in kwargs:
            raise TypeError("DataParallel.fit: _plan is set by DataParallel itself")
        from .model import _count

        # what sets the number of steps must agree, or one rank would wait for the others forever
        self._agree("fit", rows=_count(X),
                    **{k: kwargs[k] for k in ("batch_size", "epochs", "initial_epoch")
                       if k in kwargs})
        self._share_generator()
        return self.module.fit(X, y, *args, verbose=verbose if self.rank == 0 else 0,
                               _plan=_ShardedPlan(self), **kwargs)

    def _agree(self, where, **values):
        """Raise on every rank when ``values`` differ between ranks."""
        if self.size == 1:
            return
        every = self._comm.allgather(values)
        for key in values:
            seen = [v.get(key) for v in every]
            if any(v != seen[0] for v in seen):
                raise ValueError(f"DataParallel.{where}: every rank must pass the same {key} "
                                 f"(each holds the whole data set and takes its share), got "
                                 f"{', '.join(f'rank {r}: {v!r}' for r, v in enumerate(seen))}")

    def evaluate(self, X, y, loss=None, metrics=("accuracy",), batch_size=256):
        """Loss and metrics over all of ``(X, y)``, each rank evaluating a share."""
        m = self.module
        X, y = m._check_xy("evaluate", X, y)
        loss_fn = m._get_loss(loss if loss is not None else (m._last_loss or "cross_entropy"))
        return self._evaluate("evaluate", X, y, loss_fn, m._metric_fns(metrics, loss_fn),
                              batch_size)

    def _evaluate(self, where, X, y, loss_fn, metric_fns, batch_size):
        from .model import _count, _take

        self._average_buffers()
        n = _count(X)
        rows = _shard(n, self.rank, self.size)
        sums = np.zeros(1 + len(metric_fns))
        count = rows.stop - rows.start
        if count:
            local = self.module._evaluate(where, _take(X, rows), _take(y, rows), loss_fn,
                                          metric_fns, batch_size)
            sums[:] = [local["loss"] * count] + [local[name] * count for name, _ in metric_fns]
        self._comm_sum(sums)
        result = {"loss": float(sums[0] / n)}
        result.update({name: float(s / n) for (name, _), s in zip(metric_fns, sums[1:])})
        return result

    def predict(self, X, batch_size=256):
        """The model's output for all of ``X`` on every rank, each rank predicting a share."""
        from .model import _count, _take

        self._average_buffers()
        if self.size == 1:
            return self.module.predict(X, batch_size=batch_size)
        rows = _shard(_count(X), self.rank, self.size)
        part = (self.module.predict(_take(X, rows), batch_size=batch_size)
                if rows.stop > rows.start else None)
        parts = [p for p in self._comm.allgather(part) if p is not None]
        if isinstance(parts[0], list):  # several outputs
            return [np.concatenate(column, axis=0) for column in zip(*parts)]
        return np.concatenate(parts, axis=0)

    def save(self, path, optimizer=None, training_state=None):
        """``model.save`` on rank 0 only (atomically), then every rank waits for it; an error
        on rank 0 is raised on every rank."""
        self._average_buffers()
        _on_root(self._comm, f"DataParallel.save({os.fspath(path)!r})",
                 lambda: self.module.save(path, optimizer=optimizer,
                                          training_state=training_state))
        self._comm.Barrier()

    def _resume(self, path, optimizer, history):
        """``fit(resume=path)``: rank 0 reads the checkpoint; weights, optimizer state, history,
        completed epochs and the generator state are broadcast."""
        comm = self._comm
        epochs = _on_root(comm, f"fit(resume={os.fspath(path)!r})",
                          lambda: self.module._resume_from(path, optimizer, history))
        self._broadcast_state()
        if self.size > 1:
            opt_state = comm.bcast(optimizer.state_dict() if self.rank == 0 else None, root=0)
            if self.rank != 0:
                optimizer.load_state_dict(opt_state)
            epochs, epoch_list, logs = comm.bcast((epochs, history.epoch, history.history),
                                                  root=0)
            history.epoch, history.history = list(epoch_list), dict(logs)
        self._share_generator()
        return epochs

    def training_state(self, epoch):
        return self.module.training_state(epoch)

    def parameters(self):
        return self.module.parameters()

    def named_parameters(self, prefix=""):
        return self.module.named_parameters(prefix)

    def zero_grad(self):
        self.module.zero_grad()

    def state_dict(self):
        return self.module.state_dict()

    def load_state_dict(self, state_dict, strict=True):
        self.module.load_state_dict(state_dict, strict=strict)

    @property
    def stop_training(self):
        return self.module.stop_training

    @stop_training.setter
    def stop_training(self, value):
        self.module.stop_training = value

    @property
    def dtype(self):
        return self.module.dtype

    def __getattr__(self, name):  # layers, summary, history, ... come from the model
        if name == "module" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.module, name)

    def __repr__(self):
        return (f"DataParallel(rank {self.rank} of {self.size}, "
                f"sync_batchnorm={self.sync_batchnorm}):\n{self.module!r}")
