"""``Sequential``: a stack of layers with training (``fit``), ``evaluate``, ``predict`` and
single-file checkpoints (``save`` / ``fastnn.load``).

    model = fnn.Sequential(L.Flatten(), L.Dense(64, 128), L.ReLU(), L.Dense(128, 10))
    history = model.fit(X, y, loss="cross_entropy", optimizer="adam", epochs=20,
                        validation_data=(Xv, yv), metrics=["accuracy"])
    model.evaluate(Xt, yt)              # {"loss": ..., "accuracy": ...}
    model.save("digits.npz"); model2 = fnn.load("digits.npz")

A ``Sequential`` is itself a layer (forward/backward/parameters/state_dict), so it nests inside
``Residual`` and goes through ``fnn.gradcheck``. Its state-dict keys are those of
``torch.nn.Sequential``: ``"0.weight"``, ``"2.running_mean"``, ...
"""
import contextlib
import inspect
import json
import math
import os
import sys
import tempfile
import threading
from functools import partial

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

import numpy as np

from . import callbacks as _callbacks
from . import inference as _inference
from . import losses as _losses
from . import metrics as _metrics
from . import optim as _optim
from ._random import rng
from .layers.base import Layer, layer_from_spec, layer_to_spec

__all__ = ["Sequential", "History", "NonFiniteError", "load"]

CHECKPOINT_FORMAT = "fastnn-checkpoint"
CHECKPOINT_VERSION = 1


class NonFiniteError(FloatingPointError):
    """Training stopped because the loss (or a layer's output) became NaN or infinite."""


class History:
    """What ``fit`` returns: ``history.history`` maps ``"loss"``, ``"val_loss"``, each metric and
    ``"val_<metric>"`` (and ``"lr"``) to one value per epoch; ``history.epoch`` lists the epochs."""

    def __init__(self):
        self.history = {}
        self.epoch = []

    def _append(self, epoch, logs):
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, keys={list(self.history)})"


class ModelBase(Layer):
    """What ``Sequential`` and the graph ``Model`` share: ``fit``, ``evaluate``, ``predict``,
    ``save`` and input checks, written against the layer interface (``forward``, ``backward``,
    ``parameters``, ``state_dict``). ``n_inputs``/``n_outputs`` above 1 make X, y and the
    outputs lists (one array per input/output)."""

    def forward(self, x, training=True):
        """The outputs for ``x`` (a list with one array per input for several inputs). In
        training, the layers (a graph's nodes) one by one (``_forward_each``); in inference
        (``training=False``) the model's cached :mod:`fastnn.inference` plan
        (``_inference_forward``: batch norm folded, activations fused, no caches, reused
        buffers)."""
        if not training and _inference.ENABLED:
            self._replay_input = x  # a backward after it replays the layers (gradcheck)
            return self._inference_forward(x)
        self._replay_input = None
        if training:
            _inference.weights_changed()  # batch norms update their running statistics
        return self._forward_each(x, training)

    def _replay_for_backward(self):
        """Before a backward: the last forward ran the plan, which keeps no caches, so the
        layers' own forward runs again on its input."""
        replay = self.__dict__.pop("_replay_input", None)
        if replay is not None:
            self._forward_each(replay, False)

    n_inputs = 1
    n_outputs = 1

    def __init__(self, name=None):
        super().__init__(name=name)
        self.stop_training = False
        self.history = None
        self.saved_optimizer_state = None
        self.saved_training_state = None
        self._last_loss = None
        # None or a callable(layer) that backward calls right after `layer`'s backward has
        # accumulated its parameter gradients (distributed.DataParallel starts reducing them)
        self.after_layer_backward = None
        # layers cache per-call state on themselves (inputs, shapes, workspaces), so one model
        # runs one forward/backward at a time: predict/evaluate calls and training steps take it
        self._lock = threading.RLock()

    def __getstate__(self):  # copy.deepcopy / pickle: a lock cannot be copied, make a new one
        state = self.__dict__.copy()
        state.pop("_lock", None)
        state.pop("_inference_plan", None)  # rebuilt on use; its buffers need no copying
        state.pop("_replay_input", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.RLock()

    # --- training ----------------------------------------------------------------------------------
    def fit(self, X, y, loss="cross_entropy", optimizer="adam", epochs=1, batch_size=32,
            validation_data=None, shuffle=True, verbose=1, metrics=None, callbacks=None,
            clip_norm=None, checkpoint=None, nan_guard=True, resume=None, initial_epoch=0,
            _plan=None):
        """Train with mini-batch gradient descent; returns a :class:`History`.

        Args:
            X, y: inputs ``(N, ...)`` and targets ``(N, ...)`` for ``loss``.
            loss: a name (``"cross_entropy"``, ``"mse"``, ``"bce"``, ``"bce_with_logits"``) or a
                ``fastnn.losses.Loss``.
            optimizer: an optimizer over this model's parameters, or a name (a new one with its
                default hyperparameters is made; pass an object to keep state across calls).
            validation_data: ``(X_val, y_val)`` evaluated after every epoch (``val_*`` logs).
            shuffle: reshuffle every epoch with fastnn's generator (``fnn.seed``).
            verbose: 0 silent, 1 a tqdm progress bar (loss, samples/s), 2 one line per epoch.
            metrics: names or callables ``(pred, target) -> float``, e.g. ``["accuracy"]``.
            callbacks: ``fastnn.callbacks`` objects (early stopping, LR schedules, checkpoints).
            clip_norm: clip the global gradient norm to this before each step.
            checkpoint: a path; the model and optimizer are saved there (atomically) after
                each epoch, so a crash or a non-finite loss leaves the last good epoch on disk.
            nan_guard: stop with :class:`NonFiniteError` naming the step and the first layer
                whose output went non-finite when the loss becomes NaN/inf (checked every step).
            resume: a checkpoint written by ``fit(checkpoint=...)`` (or ``ModelCheckpoint``):
                its weights, optimizer state, history, completed epochs and fastnn's random
                generator state are restored and training continues with the next epoch up to
                ``epochs`` (a total, as in Keras). With ``fnn.seed`` and one thread the result is
                bit-identical to a run that was never interrupted.
            initial_epoch: the epoch to start at (0-based) when not resuming; ``epochs`` is the
                total, so ``fit(..., epochs=5, initial_epoch=3)`` runs epochs 4 and 5.
            _plan: how steps are split and totalled across processes (internal: the default
                trains here alone; ``fastnn.distributed.DataParallel`` passes its own).
        """
        X, y = self._check_xy("fit", X, y)
        batch_size = _positive_int("fit", "batch_size", batch_size)
        epochs = _positive_int("fit", "epochs", epochs, minimum=0)
        initial_epoch = _positive_int("fit", "initial_epoch", initial_epoch, minimum=0)
        if clip_norm is not None and not (clip_norm > 0):
            raise ValueError(f"fit: clip_norm must be > 0, got {clip_norm!r}")
        loss_fn = self._get_loss(loss)
        self._last_loss = loss_fn
        if isinstance(optimizer, str):
            optimizer = _optim.get(optimizer, self.parameters())
        elif not (hasattr(optimizer, "step") and hasattr(optimizer, "zero_grad")):
            raise TypeError(f"fit: optimizer must be a fastnn optimizer or a name, got "
                            f"{type(optimizer).__name__}")
        metric_fns = self._metric_fns(metrics, loss_fn)
        if validation_data is not None:
            if not (isinstance(validation_data, (tuple, list)) and len(validation_data) == 2):
                raise TypeError("fit: validation_data must be a pair (X_val, y_val)")
            validation_data = self._check_xy("fit (validation_data)", *validation_data)
        cbs = list(callbacks or [])
        if checkpoint is not None:
            cbs.append(_callbacks.ModelCheckpoint(checkpoint))
        plan = _plan if _plan is not None else _LocalPlan(self)
        for cb in cbs:
            cb.model, cb.optimizer = plan.model, optimizer
        params = self.parameters()

        history = History()
        if resume is not None:
            initial_epoch = plan.resume(self, resume, optimizer, history)
        self.history = history
        self.stop_training = False
        n = _count(X)
        n_batches = plan.steps(n, batch_size)
        for cb in cbs:
            cb.on_train_begin({})
        for epoch in range(initial_epoch, epochs):
            for cb in cbs:
                cb.on_epoch_begin(epoch, {})
            order = rng().permutation(n) if shuffle else None
            bar = _progress(verbose, n, f"epoch {epoch + 1}/{epochs}")
            loss_sum, metric_sums, seen = 0.0, [0.0] * len(metric_fns), 0
            for b in range(n_batches):
                rows, step_rows = plan.rows(b, n, batch_size)
                if order is not None:
                    rows = order[rows]
                xb, yb = _take(X, rows), _take(y, rows)
                value, count = 0.0, _count(xb)
                with self._lock:  # one whole step; a predict from another thread waits for it
                    self.zero_grad()
                    with plan.step(count, step_rows):  # on exit the gradients are final
                        if count:  # a process's share of a short last batch may be empty
                            out = self.forward(xb, training=True)
                            value = _loss_forward("fit", loss_fn, out, yb)
                            if nan_guard and not math.isfinite(value):
                                self._raise_non_finite(value, loss_fn, xb, yb, epoch, b,
                                                       n_batches)
                            for j, (_, fn) in enumerate(metric_fns):
                                metric_sums[j] += fn(out, yb) * count
                            self.backward(loss_fn.backward(), input_grad=False)
                    if clip_norm is not None:
                        _optim.clip_grad_norm(params, clip_norm)
                    optimizer.step()
                loss_sum += value * count
                seen += count
                if bar is not None:
                    bar.update(step_rows)
                    bar.set_postfix_str(f"loss={loss_sum / max(seen, 1):.4f}", refresh=False)
            loss_sum, *metric_sums = plan.total([loss_sum, *metric_sums])
            logs = {"loss": loss_sum / n}
            logs.update({name: s / n for (name, _), s in zip(metric_fns, metric_sums)})
            if validation_data is not None:
                val = plan.evaluate(self, "fit (validation)", *validation_data, loss_fn,
                                    metric_fns, max(batch_size, 256))
                logs.update({f"val_{k}": v for k, v in val.items()})
            if hasattr(optimizer, "lr"):
                logs["lr"] = optimizer.lr
            text = "  ".join(f"{k}={v:.4g}" for k, v in logs.items())
            if bar is not None:
                bar.set_postfix_str(text)
                bar.close()
            elif verbose == 2:
                print(f"epoch {epoch + 1}/{epochs}  {text}", file=sys.stderr)
            history._append(epoch, logs)
            for cb in cbs:
                cb.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        for cb in cbs:
            cb.on_train_end({})
        return history

    def training_state(self, epoch):
        """What a checkpoint needs to resume ``fit`` after ``epoch`` (0-based) has completed:
        the epoch count, the history so far and fastnn's random generator state (JSON-able)."""
        history = self.history.history if self.history is not None else {}
        return {"epochs_done": int(epoch) + 1,
                "history": {k: [float(v) for v in vals] for k, vals in history.items()},
                "rng": rng().bit_generator.state}

    def _resume_from(self, path, optimizer, history):
        """Restore weights, optimizer state, history and RNG from ``path``; returns the epoch
        to start at."""
        saved = load(path)
        where = f"fit(resume={os.fspath(path)!r})"
        if saved.saved_training_state is None:
            raise ValueError(f"{where}: the checkpoint has no training state (epoch, random "
                             f"generator); write it with fit(checkpoint=...) or ModelCheckpoint")
        try:
            self.load_state_dict(saved.state_dict())
        except (KeyError, ValueError) as e:
            raise ValueError(f"{where}: the checkpoint was made for another architecture: "
                             f"{e.args[0] if e.args else e}") from e
        if saved.saved_optimizer_state is not None:
            if not hasattr(optimizer, "load_state_dict"):
                raise TypeError(f"{where}: the optimizer {type(optimizer).__name__} cannot load "
                                f"the saved optimizer state")
            optimizer.load_state_dict(saved.saved_optimizer_state)
        state = saved.saved_training_state
        generator = rng().bit_generator
        if state["rng"].get("bit_generator") != type(generator).__name__:
            raise ValueError(f"{where}: the saved random state is for "
                             f"{state['rng'].get('bit_generator')}, fastnn uses "
                             f"{type(generator).__name__}")
        generator.state = state["rng"]
        for epoch in range(state["epochs_done"]):
            history._append(epoch, {k: v[epoch] for k, v in state["history"].items()
                                    if epoch < len(v)})
        return state["epochs_done"]

    def evaluate(self, X, y, loss=None, metrics=("accuracy",), batch_size=256):
        """Loss and metrics over ``(X, y)`` in inference mode: ``{"loss": ..., "accuracy": ...}``.

        ``loss`` defaults to the one last used by ``fit`` (else cross-entropy)."""
        X, y = self._check_xy("evaluate", X, y)
        batch_size = _positive_int("evaluate", "batch_size", batch_size)
        loss_fn = self._get_loss(loss if loss is not None else (self._last_loss or "cross_entropy"))
        return self._evaluate("evaluate", X, y, loss_fn, self._metric_fns(metrics, loss_fn),
                              batch_size)

    def _evaluate(self, where, X, y, loss_fn, metric_fns, batch_size):
        total, sums = 0.0, [0.0] * len(metric_fns)
        n = _count(X)
        for start in range(0, n, batch_size):
            rows = slice(start, start + batch_size)
            xb, yb = _take(X, rows), _take(y, rows)
            with self._lock:  # the output may live in a layer's reused buffer
                out = self.forward(xb, training=False)
                total += _loss_forward(where, loss_fn, out, yb) * _count(xb)
                for j, (_, fn) in enumerate(metric_fns):
                    sums[j] += fn(out, yb) * _count(xb)
        result = {"loss": total / n}
        result.update({name: s / n for (name, _), s in zip(metric_fns, sums)})
        return result

    def predict(self, X, batch_size=256):
        """The model's output for ``X`` in inference mode (dropout off, running statistics).

        Safe to call from several threads at once: calls on one model run one batch at a time
        (layers keep per-call state), each with all of fastnn's kernel threads; see
        docs/robustness.md."""
        X = self._check_x("predict", X)
        batch_size = _positive_int("predict", "batch_size", batch_size)
        outs = []
        for s in range(0, _count(X), batch_size):
            with self._lock:  # np.array copies the output before another call can reuse buffers
                out = self.forward(_take(X, slice(s, s + batch_size)), training=False)
                outs.append([np.array(o) for o in out] if self.n_outputs > 1 else np.array(out))
        if self.n_outputs > 1:
            return [np.concatenate(parts, axis=0) for parts in zip(*outs)]
        return np.concatenate(outs, axis=0)

    # --- checkpoints -------------------------------------------------------------------------------
    def save(self, path, optimizer=None, training_state=None):
        """Write architecture, weights (and ``optimizer``'s state) to ONE ``.npz`` file.

        ``training_state`` (from :meth:`training_state`) lets ``fit(resume=path)`` continue.

        The file is written to a temporary file in the same directory, flushed, fsync'ed and then
        renamed over ``path``, so a crash never leaves a half-written checkpoint behind; the
        temporary of a save killed midway is removed by the next save to ``path``.
        ``fastnn.load(path)`` rebuilds the model.
        """
        arrays = {}
        state = self.state_dict()
        for i, (key, value) in enumerate(state.items()):
            arrays[f"state:{i}"] = value
        meta = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                "architecture": layer_to_spec(self), "dtype": str(self.dtype),
                "state_keys": list(state), "optimizer": None, "training": training_state}
        if optimizer is not None:
            meta["optimizer"] = _flatten_optimizer_state(optimizer.state_dict(), arrays)
        arrays["__meta__"] = np.array(json.dumps(meta))
        _atomic_write(path, lambda f: _write_npz(f, arrays))

    # --- helpers -----------------------------------------------------------------------------------
    @property
    def dtype(self):
        params = self.parameters()
        return params[0].data.dtype if params else self._dtype

    def _check_x(self, where, X):
        """X as one array, or a list of ``n_inputs`` arrays with the same number of samples."""
        if self.n_inputs == 1:
            return self._check_one_x(where, X)
        if not isinstance(X, (list, tuple)) or len(X) != self.n_inputs:
            raise TypeError(f"{where}: this model has {self.n_inputs} inputs; X must be a list of "
                            f"{self.n_inputs} arrays, got {_describe(X)}")
        X = [self._check_one_x(f"{where} (input {i})", x) for i, x in enumerate(X)]
        if len({len(x) for x in X}) > 1:
            raise ValueError(f"{where}: the inputs have different numbers of samples: "
                             f"{[x.shape for x in X]}")
        return X

    def _check_one_x(self, where, X):
        if not isinstance(X, np.ndarray):
            X = np.asarray(X)
        if X.ndim < 1 or len(X) == 0:
            raise ValueError(f"{where}: X must have shape (N, ...) with N >= 1, got {X.shape}")
        if X.dtype.kind == "f" and X.dtype != self.dtype:
            X = X.astype(self.dtype)  # cast once, not per batch
        elif X.dtype.kind not in "fiub":
            raise TypeError(f"{where}: X must be a numeric array, got dtype {X.dtype}")
        return X

    def _check_xy(self, where, X, y):
        X = self._check_x(where, X)
        if self.n_outputs == 1:
            ys = [np.asarray(y)]
        elif isinstance(y, (list, tuple)) and len(y) == self.n_outputs:
            ys = [np.asarray(t) for t in y]
        else:
            raise TypeError(f"{where}: this model has {self.n_outputs} outputs; y must be a list "
                            f"of {self.n_outputs} target arrays, got {_describe(y)}")
        n = _count(X)
        for t in ys:
            if t.ndim < 1 or len(t) != n:
                raise ValueError(f"{where}: X has {n} samples (shape {_shapes(X)}) but y has "
                                 f"shape {t.shape}; they must agree on axis 0")
        return X, (ys[0] if self.n_outputs == 1 else ys)

    def _get_loss(self, loss):
        """A loss for the model's output; with several outputs one loss per output (a list, or
        one loss used for each), summed."""
        if self.n_outputs == 1:
            return _losses.get(loss)
        if isinstance(loss, (list, tuple)):
            if len(loss) != self.n_outputs:
                raise ValueError(f"this model has {self.n_outputs} outputs but {len(loss)} "
                                 f"losses were given")
            return _SummedLoss([_losses.get(item) for item in loss])
        return _SummedLoss([_losses.get(loss) for _ in range(self.n_outputs)])

    def _metric_fns(self, metrics, loss_fn):
        fns = []
        for m in metrics or ():
            fn = _metrics.get(m)
            name = m if isinstance(m, str) else getattr(fn, "__name__", type(fn).__name__)
            if fn is _metrics.accuracy and isinstance(loss_fn, _losses.BCEWithLogits):
                fn = partial(_metrics.accuracy, threshold=0.0)  # outputs are logits
            if self.n_outputs == 1:
                fns.append((name, fn))
            else:  # one value per output, named by the output's index
                fns.extend((f"{name}_{k}", partial(_of_output, fn, k))
                           for k in range(self.n_outputs))
        return fns

    def _raise_non_finite(self, value, loss_fn, xb, yb, epoch, batch, n_batches):
        where = (f"fit: loss ({type(loss_fn).__name__}) became {value} at epoch {epoch + 1}, "
                 f"step {batch + 1}/{n_batches}")
        bad_params = [name for name, p in self.named_parameters() if not np.isfinite(p.data).all()]
        detail = ""
        if any(x.dtype.kind == "f" and not np.isfinite(x).all() for x in _as_list(xb)):
            detail = "; the input batch itself contains NaN/inf values"
        else:
            # replay the batch layer by layer to locate the first non-finite output; the replay
            # must not disturb running statistics, so the state is put back afterwards
            saved = self.state_dict()
            try:
                for where_, layer, out in self._layer_outputs(xb):
                    if not all(np.isfinite(o).all() for o in _as_list(out)):
                        detail = (f"; the first non-finite output comes from {where_} "
                                  f"{layer.describe()} (its input was finite)")
                        break
                else:
                    yb0 = _as_list(yb)[0]
                    detail = (f"; every layer's output is finite, so the loss itself overflowed "
                              f"(check the targets: shape {yb0.shape}, dtype {yb0.dtype})")
            finally:
                self.load_state_dict(saved)
        if bad_params:
            shown = ", ".join(bad_params[:5]) + (" ..." if len(bad_params) > 5 else "")
            detail += f"; non-finite parameters: {shown}"
        raise NonFiniteError(where + detail + ". Try a lower learning rate or clip_norm=; the "
                             "last checkpoint written (if any) is from the last good epoch.")


_INPUT_GRAD_FLAG = {}


class _SummedLoss:
    """Several outputs' losses as one: ``forward`` sums them, ``backward`` returns the list of
    gradients (one per output)."""

    def __init__(self, losses):
        self.losses = losses

    def forward(self, outs, targets):
        return sum(fn.forward(o, t) for fn, o, t in zip(self.losses, outs, targets))

    def backward(self):
        return [fn.backward() for fn in self.losses]


def _of_output(fn, k, outs, targets):
    return fn(outs[k], targets[k])


def _as_list(a):
    return a if isinstance(a, list) else [a]


def _take(a, rows):
    """Rows of an array, or of each array of a list (one per model input or output)."""
    return [v[rows] for v in a] if isinstance(a, list) else a[rows]


def _count(a):
    return len(a[0]) if isinstance(a, list) else len(a)


def _shapes(a):
    return [v.shape for v in a] if isinstance(a, list) else a.shape


def _describe(a):
    if isinstance(a, (list, tuple)):
        return f"a {type(a).__name__} of {len(a)}"
    return f"{type(a).__name__} with shape {np.shape(a)}"




class Sequential(ModelBase):
    """Layers applied in order: ``y = layers[-1](...layers[1](layers[0](x)))``.

    Args:
        *layers: ``fastnn.layers.Layer`` instances (a single list is accepted too). Layers are
            not copied: a layer shared by two models shares its weights.

    State: each layer's parameters and buffers, prefixed by its index (``"0.weight"``).
    """

    def __init__(self, *layers):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: item {i} must be a fastnn layer (a subclass of "
                                f"fastnn.layers.Layer), got {type(layer).__name__}")
        self.layers = list(layers)
        params = self.parameters()
        if params:
            self._dtype = params[0].data.dtype


    # --- the layer interface ---------------------------------------------------------------------
    def children(self):
        return [(str(i), layer) for i, layer in enumerate(self.layers)]

    def _inference_forward(self, x):
        return _inference.run(self, x)

    def _forward_each(self, x, training):
        """The layers in order. A layer that can run the activation after it in its own pass
        (``activation_fusion``: Dense, Conv2D or BatchNorm followed by a ReLU, the latter two
        by a LeakyReLU too, Dense by a Sigmoid or Tanh too) does so; after a BatchNorm the
        activation's backward is folded into the BatchNorm's too, before a Conv2D, MaxPool2D
        or Dense into its dx pass (``backward``). The result is bitwise that of the layers run one by one, the
        gradients equal to rounding."""
        layers = self.layers
        fused = []
        i = 0
        while i < len(layers):
            layer = layers[i]
            following = layers[i + 1] if i + 1 < len(layers) else None
            fusion = layer.activation_fusion(following) if following is not None else None
            if fusion is not None:
                kwargs, takes_backward = fusion
                x = layer.forward_relu(x, training=training, **kwargs)
                following.fused_output(x)
                if takes_backward:
                    fused.append(i + 1)
                i += 2
            else:
                x = layer.forward(x, training=training)
                i += 1
        self._fused_relus = frozenset(fused)
        return x

    def backward(self, dy, input_grad=True):
        """Backpropagate ``dy`` through the layers (parameter gradients accumulate); returns dx.

        ``input_grad=False`` returns None and skips the work only the input's gradient needs:
        the backward of the layers before the first one with parameters, and that layer's
        input-gradient pass (the backward-data GEMM of a first convolution or dense layer), as
        PyTorch does for an input that does not require grad. ``fit`` trains this way.

        If ``self.after_layer_backward`` is set, it is called with each layer right after that
        layer's backward (in backward order; every layer with parameters is reported), so a
        caller can use a layer's gradients while the layers before it are still running."""
        self._replay_for_backward()
        layers = self.layers
        first = 0
        if not input_grad:
            first = next((i for i, layer in enumerate(layers) if _has_parameters(layer)),
                         len(layers))
        fused = getattr(self, "_fused_relus", frozenset())
        done = getattr(self, "after_layer_backward", None) or _no_hook
        skip = -1
        for i in range(len(layers) - 1, first - 1, -1):
            if i in fused or i == skip:
                continue  # the layer before it takes dy through the activation
            layer = layers[i]
            if (i > first and i - 1 not in fused  # an Embedding has parameters: first <= i - 1
                    and getattr(layer, "takes_table_backward", None) is not None
                    and layer.takes_table_backward(layers[i - 1])):
                # a recurrent layer on an Embedding's table: the Embedding's weight gradient
                # from per-id sums, no dx (Embedding.backward returns None too)
                dy = layer.backward_table(dy, self.layers[i - 1])
                done(layer)
                done(self.layers[i - 1])
                if i - 1 == first and not input_grad:
                    return None
                skip = i - 1
                continue
            if i == first and not input_grad:
                backward_params_only(layer, dy)
                done(layer)
                return None
            if (i > first and i - 1 not in fused
                    and getattr(layer, "takes_activation_backward", None) is not None
                    and layer.takes_activation_backward(layers[i - 1])):
                # the ReLU before it: its backward runs in this layer's dx pass
                dy = layer.backward_through_activation(dy, layers[i - 1])
                done(layer)
                done(layers[i - 1])
                skip = i - 1
                continue
            dy = layer.backward(dy)
            done(layer)
        return None if not input_grad else dy

    def _layer_outputs(self, x):
        """(position, layer, output) of each layer in turn, run one by one in training mode."""
        for i, layer in enumerate(self.layers):
            x = layer.forward(x, training=True)
            yield f"layer {i}", layer, x

    def config(self):
        return {"layers": [layer_to_spec(layer) for layer in self.layers]}

    def extra_repr(self):
        return f"{len(self.layers)} layers"

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(*self.layers[index])
        return self.layers[index]

    def __iter__(self):
        return iter(self.layers)

    def __repr__(self):
        lines = [f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers)]
        return "Sequential(\n" + "\n".join(lines) + "\n)" if lines else "Sequential()"

    def summary(self, input_shape=None, print_fn=print):
        """A table of layers, output shapes and parameter counts; printed and returned.

        ``input_shape`` excludes the batch axis, e.g. ``(1, 28, 28)``; without it the output
        shapes are not known and show as ``?``.
        """
        shapes = [None] * len(self.layers)
        if input_shape is not None:
            input_shape = tuple(int(s) for s in input_shape)
            first = type(self.layers[0]).__name__ if self.layers else ""
            x = np.zeros((1, *input_shape), dtype=np.int64 if first == "Embedding" else self.dtype)
            for i, layer in enumerate(self.layers):
                x = layer.forward(x, training=False)
                shapes[i] = "(None, " + ", ".join(str(s) for s in x.shape[1:]) + ")"
        rows = [("#", "layer", "output shape", "params")]
        total = 0
        for i, layer in enumerate(self.layers):
            count = sum(p.data.size for p in layer.parameters())
            total += count
            rows.append((str(i), layer.describe(), shapes[i] or "?", f"{count:,}"))
        widths = [max(len(r[c]) for r in rows) for c in range(4)]
        fmt = lambda r: "  ".join(r[c].ljust(widths[c]) if c < 3 else r[c].rjust(widths[c])
                                  for c in range(4))
        rule = "-" * len(fmt(rows[0]))
        lines = [fmt(rows[0]), rule, *(fmt(r) for r in rows[1:]), rule,
                 f"total parameters: {total:,} ({self.dtype})"]
        text = "\n".join(lines)
        if print_fn is not None:
            print_fn(text)
        return text


class _LocalPlan:
    """How ``fit`` splits an epoch into steps and totals it when it trains in this process
    alone. ``fastnn.distributed.DataParallel`` passes its own plan (each process takes its share
    of every global batch; gradients, sums and checkpoints are shared between processes)."""

    def __init__(self, model):
        self.model = model  # what callbacks see as ``cb.model`` (save, stop_training, ...)

    def steps(self, n, batch_size):
        """Optimizer steps per epoch of ``n`` samples."""
        return -(-n // batch_size)

    def rows(self, b, n, batch_size):
        """Step ``b``'s positions in the epoch's order taken here (a slice), and the number of
        rows the whole step takes (in every process)."""
        stop = min(n, (b + 1) * batch_size)
        return slice(b * batch_size, stop), stop - b * batch_size

    def step(self, rows, step_rows):
        """A context around one step's forward and backward; the gradients are final on exit."""
        return contextlib.nullcontext()

    def total(self, sums):
        """An epoch's per-process sums (loss and metrics, weighted by rows) -> overall sums."""
        return sums

    def evaluate(self, model, where, X, y, loss_fn, metric_fns, batch_size):
        return model._evaluate(where, X, y, loss_fn, metric_fns, batch_size)

    def resume(self, model, path, optimizer, history):
        return model._resume_from(path, optimizer, history)


def _no_hook(layer):
    pass


def _has_parameters(layer):
    """``bool(layer.parameters())``, without walking the attributes for sub-layers when the
    layer has parameters of its own and lists them the base class's way."""
    cls = type(layer)
    if (layer.__dict__.get("_params") and cls.parameters is Layer.parameters
            and cls.named_parameters is Layer.named_parameters):
        return True
    return bool(layer.parameters())


def backward_params_only(layer, dy):
    """``layer``'s backward for its parameter gradients only: without the input-gradient pass
    where the layer can skip it (``backward(dy, input_grad=False)``)."""
    if _takes_input_grad(layer):
        layer.backward(dy, input_grad=False)
    else:
        layer.backward(dy)


def _takes_input_grad(layer):
    """True when ``layer.backward`` accepts ``input_grad=`` (conv and dense layers)."""
    cls = type(layer)
    flag = _INPUT_GRAD_FLAG.get(cls)
    if flag is None:
        try:
            flag = "input_grad" in inspect.signature(cls.backward).parameters
        except (TypeError, ValueError):
            flag = False
        _INPUT_GRAD_FLAG[cls] = flag
    return flag


def _positive_int(where, name, v, minimum=1):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{where}: {name} must be an int >= {minimum}, got {v!r}")
    return int(v)


def _loss_forward(where, loss_fn, out, yb):
    try:
        return loss_fn.forward(out, yb)
    except (ValueError, TypeError) as e:
        raise type(e)(f"{where}: model output has shape {tuple(out.shape)} and the targets have "
                      f"shape {tuple(yb.shape)} ({yb.dtype}): {e}") from e


def _progress(verbose, total, desc):
    if verbose != 1:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="samples", leave=True, dynamic_ncols=True,
                mininterval=0.2)


# --- checkpoint files -----------------------------------------------------------------------------
def _write_npz(fileobj, arrays):
    np.savez(fileobj, **arrays)


_TMP_SUFFIX = ".tmp"
_TMP_RANDOM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")  # tempfile's name characters


def _lock(fd, blocking=True):
    """An exclusive ``flock`` on ``fd``; False if another open file holds one (non-blocking).

    flock locks belong to an open file, not to a process: a save in another thread of this
    process conflicts like one in another process, and the kernel drops the lock when the
    holder dies, however it dies (``kill -9`` included)."""
    if fcntl is None:  # pragma: no cover - not POSIX: no locks, no clean-up of stale files
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except OSError:  # held elsewhere, or a file system without locks: every temporary in use
        return False
    return True


def _is_own_temporary(name, base):
    """``name`` is one of the temporaries ``_atomic_write`` makes for a file named ``base``:
    ``.BASE.XXXXXXXX.tmp`` with tempfile's 8 random characters."""
    prefix = f".{base}."
    if not (name.startswith(prefix) and name.endswith(_TMP_SUFFIX)):
        return False
    middle = name[len(prefix):-len(_TMP_SUFFIX)]
    return len(middle) == 8 and set(middle) <= _TMP_RANDOM


def _remove_stale_temporaries(directory, base):
    """Delete the temporaries of earlier saves to ``base`` whose writer died (a crash or
    ``kill -9`` mid-save), leaving the previous checkpoint intact but its temporary behind.

    A live writer holds an flock on its temporary from right after creating it until it has
    renamed it over the checkpoint; a temporary nobody holds a lock on belongs to a dead
    writer. (A writer whose fresh temporary is deleted in the instant before it locks it sees
    that and starts over with a new one.)"""
    if fcntl is None:  # pragma: no cover
        return
    try:
        entries = [e.name for e in os.scandir(directory) if _is_own_temporary(e.name, base)]
    except OSError:
        return
    for name in entries:
        stale = os.path.join(directory, name)
        try:
            fd = os.open(stale, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:  # gone already (its writer finished) or not ours to open
            continue
        try:
            if _lock(fd, blocking=False) and _same_file(fd, stale):
                os.unlink(stale)
        except OSError:
            pass
        finally:
            os.close(fd)


def _same_file(fd, path):
    """``path`` still names the open file ``fd`` (not renamed away or unlinked meanwhile)."""
    try:
        a, b = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _locked_temporary(directory, base):
    """Create ``.BASE.XXXXXXXX.tmp`` in ``directory`` and flock it; returns ``(fd, path)``."""
    while True:
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=_TMP_SUFFIX, dir=directory)
        if not _lock(fd) or _same_file(fd, tmp):
            return fd, tmp
        os.close(fd)  # another save took it for stale before the lock: start over


def _atomic_write(path, write):
    """Run ``write(fileobj)`` into a temporary file beside ``path`` and rename it over ``path``
    only after it is complete and on disk.

    A writer killed mid-save leaves its temporary ``.NAME.XXXXXXXX.tmp`` behind (the previous
    ``path`` is intact); the next save to ``path`` removes such temporaries, but only those no
    live writer holds (see :func:`_remove_stale_temporaries`)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    _remove_stale_temporaries(directory, base)
    fd, tmp = _locked_temporary(directory, base)
    try:
        # the lock is held until the file is closed, after the rename: until then a concurrent
        # save sees the temporary as in use
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual file mode
            os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def _flatten_optimizer_state(sd, arrays):
    """Optimizer state -> JSON-able dict; arrays go into ``arrays`` as ``optim:<i>:<name>``."""
    state = []
    for i, entry in enumerate(sd["state"]):
        flat = {}
        for k, v in entry.items():
            if isinstance(v, np.ndarray):
                key = f"optim:{i}:{k}"
                arrays[key] = v
                flat[k] = {"array": key}
            else:
                flat[k] = v
        state.append(flat)
    return {"class": sd["class"], "hyperparameters": sd["hyperparameters"], "state": state}


def _unflatten_optimizer_state(meta, arrays):
    state = []
    for entry in meta["state"]:
        state.append({k: (arrays[v["array"]] if isinstance(v, dict) else v)
                      for k, v in entry.items()})
    return {"class": meta["class"], "hyperparameters": meta["hyperparameters"], "state": state}


def _layer_registry(name):
    if name == "Sequential":
        return _sequential_from_config
    if name == "Model":
        from .graph import _model_from_config
        return _model_from_config
    from . import layers
    return layers.get(name)


def _sequential_from_config(layers):
    return Sequential(*(layer_from_spec(spec, _layer_registry) for spec in layers))


def load(path):
    """Rebuild a model saved with ``Sequential.save``: architecture, weights and dtype.

    The optimizer state, if one was saved, is in ``model.saved_optimizer_state`` (pass it to
    ``optimizer.load_state_dict`` to resume training). A corrupted or truncated file raises a
    ``ValueError`` naming the path.
    """
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            if "__meta__" not in f.files:
                raise ValueError("no fastnn metadata in the file")
            meta = json.loads(str(f["__meta__"][()]))
            arrays = {k: f[k] for k in f.files if k != "__meta__"}
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as e:  # zipfile, zlib, numpy and json each have their own errors for
        # damaged bytes (BadZipFile, NotImplementedError for a flipped flag bit, ...)
        raise ValueError(f"fnn.load: {path!r} is not a readable fastnn checkpoint (corrupted or "
                         f"truncated?): {type(e).__name__}: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"fnn.load: {path!r} is not a fastnn checkpoint")
    if meta.get("version", 0) > CHECKPOINT_VERSION:
        raise ValueError(f"fnn.load: {path!r} has checkpoint version {meta['version']}; this "
                         f"fastnn reads up to version {CHECKPOINT_VERSION}")
    try:
        model = layer_from_spec(meta["architecture"], _layer_registry)
        if not isinstance(model, ModelBase):
            model = Sequential(model)
        model.astype(meta["dtype"])
        keys = meta["state_keys"]
        model.load_state_dict({key: arrays[f"state:{i}"] for i, key in enumerate(keys)})
        if meta.get("optimizer") is not None:
            model.saved_optimizer_state = _unflatten_optimizer_state(meta["optimizer"], arrays)
        model.saved_training_state = meta.get("training")
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"fnn.load: cannot rebuild the model in {path!r}: "
                         f"{type(e).__name__}: {e}") from e
    return model
