"""Numerical gradient checking: analytic gradients against central differences, in float64.

    result = fnn.gradcheck(layer, x)                       # a layer (or Sequential, or your own)
    result = fnn.gradcheck(loss, pred, target=t)           # a loss: d loss / d pred
    result = fnn.gradcheck(model, x, target=t, loss=fnn.losses.MSE())   # model and loss together
    print(result.report()); assert result.ok
    fnn.assert_gradcheck(layer, x)                         # raises AssertionError with the report

How it works
------------
The object is deep-copied and cast to float64 (``astype(np.float64)`` where it exists, else every
parameter's ``data``/``grad`` is cast), so the caller's object is never touched. A layer is turned
into the scalar objective ``L = sum(forward(x) * R)`` with a fixed, seeded Gaussian ``R``; hence the
analytic gradients are ``backward(R)`` (input) and the accumulated ``p.grad`` (parameters). A loss
is its own objective (``forward(pred, target)``, gradient ``backward()``); a loss whose backward
returns a pair (``KLDivergenceNormal``: ``(dmu, dlogvar)``) is checked against both arguments.

Every evaluation of ``L`` starts from the same state: buffers (running statistics) are restored
from a snapshot with ``load_state_dict`` and fastnn's random generator is rewound to one saved
state, so ``Dropout`` draws the same mask and ``BatchNorm`` sees the same running statistics on
every forward. The generator is rewound to where it was when the check returns, so a gradcheck
consumes no randomness of the caller's run.

Each checked entry ``i`` gets ``numeric = (L(t+eps e_i) - L(t-eps e_i)) / (2 eps)`` and passes when
``|analytic - numeric| <= atol + rtol * |numeric|``. Tensors larger than ``max_entries`` are checked
on a seeded random sample of that many entries (``max_entries=None`` checks all).

Non-differentiable points (kinks) are handled without loosening tolerances:
  1. ``nudge`` (default on for layers and models, off for losses whose inputs are often
     constrained, e.g. probabilities): before anything is computed, float input entries are moved
     so that none lies within ``nudge_margin`` of 0 (ReLU, LeakyReLU) and no two lie within
     ``nudge_margin`` of each other (max-pool ties). The checked point is simply a nearby point.
  2. An entry that still fails is tested for a kink: if the one-sided differences
     ``(L(+eps) - L(0)) / eps`` and ``(L(0) - L(-eps)) / eps`` disagree beyond tolerance, a kink
     lies within ``eps`` (e.g. a hidden ReLU whose pre-activation is ~0). The entry is retried
     with steps ``eps/16`` and ``eps/256`` (which usually step off the kink); failing that it is
     accepted only if the analytic value equals one of the one-sided derivatives (a valid
     one-sided gradient at the kink). Such entries are counted as ``kinks`` in the report; a
     smooth entry is never excused.
"""
import copy

import numpy as np

from . import _random

__all__ = ["gradcheck", "assert_gradcheck", "GradcheckResult", "TensorCheck", "EntryCheck"]

_SMALLER_STEPS = (16.0, 256.0)


class EntryCheck:
    """One checked entry: ``index`` into the tensor, ``analytic`` and ``numeric`` derivative,
    ``abs_err``, ``rel_err`` (abs_err / max(|analytic|, |numeric|, atol)), ``ratio`` (abs_err / allowed error; > 1 means out of tolerance) and
    ``status``: ``"ok"``, ``"kink"`` (accepted by the kink rule) or ``"FAIL"``."""

    __slots__ = ("index", "analytic", "numeric", "abs_err", "rel_err", "ratio", "status")

    def __init__(self, index, analytic, numeric, abs_err, rel_err, ratio, status):
        self.index, self.analytic, self.numeric = index, analytic, numeric
        self.abs_err, self.rel_err, self.ratio, self.status = abs_err, rel_err, ratio, status

    def __repr__(self):
        return (f"EntryCheck(index={self.index}, analytic={self.analytic:.6g}, numeric={self.numeric:.6g}, "
                f"abs_err={self.abs_err:.2e}, rel_err={self.rel_err:.2e}, status={self.status!r})")


class TensorCheck:
    """The check of one tensor (``"input"``, a parameter name, ``"pred"``, ``"target"``)."""

    def __init__(self, name, shape, n_total, entries, error=None, skipped=None):
        self.name = name
        self.shape = tuple(shape)
        self.n_total = n_total
        self.entries = entries            # list of EntryCheck, in checked order
        self.error = error                # structural problem (no gradient, wrong shape, ...)
        self.skipped = skipped            # reason the tensor was not checked (integer input)

    @property
    def n_checked(self):
        return len(self.entries)

    @property
    def failures(self):
        return [e for e in self.entries if e.status == "FAIL"]

    @property
    def n_kinks(self):
        return sum(e.status == "kink" for e in self.entries)

    @property
    def ok(self):
        return self.error is None and not self.failures

    @property
    def max_abs_err(self):
        smooth = [e.abs_err for e in self.entries if e.status != "kink"]
        return max(smooth, default=0.0)

    @property
    def max_rel_err(self):
        smooth = [e.rel_err for e in self.entries if e.status != "kink"]
        return max(smooth, default=0.0)

    def worst(self, k=3):
        """The ``k`` entries furthest out of tolerance (failures first)."""
        return sorted(self.entries, key=lambda e: (e.status == "FAIL", e.ratio), reverse=True)[:k]

    def __repr__(self):
        return (f"TensorCheck({self.name!r}, shape={self.shape}, checked={self.n_checked}/{self.n_total}, "
                f"failed={len(self.failures)}, ok={self.ok})")


class GradcheckResult:
    """Outcome of ``gradcheck``: ``ok`` (bool), ``tensors`` (list of ``TensorCheck``), ``errors``
    (problems not tied to one entry), ``report()`` (readable text), and the settings used."""

    def __init__(self, subject, tensors, errors, settings, notes):
        self.subject = subject
        self.tensors = tensors
        self.errors = errors
        self.settings = settings
        self.notes = notes

    @property
    def ok(self):
        return not self.errors and all(t.ok for t in self.tensors)

    def __bool__(self):
        return self.ok

    @property
    def failed_tensors(self):
        return [t.name for t in self.tensors if not t.ok]

    def tensor(self, name):
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(f"gradcheck result has no tensor {name!r}; tensors: {[t.name for t in self.tensors]}")

    def report(self, worst=3):
        s = self.settings
        lines = [f"gradcheck {self.subject} [float64, training={s['training']}]: "
                 f"{'ok' if self.ok else 'FAILED'}",
                 f"  eps={s['eps']:g} atol={s['atol']:g} rtol={s['rtol']:g}; {s['objective']}"]
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  ERROR: {e}" for e in self.errors]
        width = max([len(t.name) for t in self.tensors] + [6])
        lines.append(f"  {'tensor':<{width}}  {'shape':<16} {'checked':>11} {'max abs err':>12} "
                     f"{'max rel err':>12} {'failed':>6} {'kinks':>5}")
        for t in self.tensors:
            head = f"  {t.name:<{width}}  {str(t.shape):<16}"
            if t.skipped:
                lines.append(f"{head} skipped: {t.skipped}")
                continue
            lines.append(f"{head} {f'{t.n_checked}/{t.n_total}':>11} {t.max_abs_err:12.2e} "
                         f"{t.max_rel_err:12.2e} {len(t.failures):>6} {t.n_kinks:>5}"
                         + ("" if t.ok else "   <-- FAILED"))
        for t in self.tensors:
            if t.error:
                lines.append(f"  {t.name}: {t.error}")
            if t.failures:
                lines.append(f"  worst entries of {t.name} ({len(t.failures)} of {t.n_checked} checked "
                             f"out of tolerance):")
                for e in t.worst(worst):
                    lines.append(f"    index {e.index}: analytic {e.analytic:.8g}, numeric {e.numeric:.8g}, "
                                 f"abs err {e.abs_err:.2e}, rel err {e.rel_err:.2e} [{e.status}]")
        return "\n".join(lines)

    __str__ = report

    def __repr__(self):
        return f"GradcheckResult(ok={self.ok}, subject={self.subject}, failed={self.failed_tensors})"


# --- helpers --------------------------------------------------------------------------------------
def _describe(obj):
    describe = getattr(obj, "describe", None)
    if callable(describe):
        try:
            return describe()
        except Exception:  # a user's describe() must not break the check
            pass
    return type(obj).__name__


def _named_parameters(obj):
    if hasattr(obj, "named_parameters"):
        named = list(obj.named_parameters())
    elif hasattr(obj, "parameters"):
        named = [(getattr(p, "name", None) or f"param{i}", p) for i, p in enumerate(obj.parameters())]
    else:
        return []
    seen, out = {}, []
    for name, p in named:
        if name in seen:                 # two parameters of one name: keep both, distinguishable
            seen[name] += 1
            name = f"{name}#{seen[name]}"
        else:
            seen[name] = 0
        out.append((name, p))
    return out


def _to_float64(obj):
    """Cast a (deep-copied) object to float64."""
    astype = getattr(obj, "astype", None)
    if callable(astype):
        result = astype(np.float64)
        return obj if result is None else result
    for _, p in _named_parameters(obj):
        if p.data.dtype != np.float64:
            p.data = np.ascontiguousarray(p.data, dtype=np.float64)
            p.grad = np.zeros_like(p.data)
    return obj


def _zero_grad(obj, params):
    if hasattr(obj, "zero_grad"):
        obj.zero_grad()
    for _, p in params:            # also covers objects whose zero_grad misses a parameter
        p.grad[...] = 0


def _nudge(x, margin):
    """``x`` moved (by at most a few margins per entry) so that no entry lies within ``margin``
    of 0 and no two entries lie within ``margin`` of each other. Returns (new x, entries moved)."""
    flat = x.ravel()
    order = np.argsort(flat, kind="stable")
    values = flat[order].copy()
    if np.all(np.abs(values) >= margin) and np.all(np.diff(values) >= margin):
        return x, 0                     # the common case: nothing to move, no Python loop
    prev = -np.inf
    for k in range(values.size):
        v = max(values[k], prev + margin)
        if abs(v) < margin:
            v = -margin if (v < 0 and prev + margin <= -margin) else margin
        values[k] = v
        prev = v
    out = np.empty_like(flat)
    out[order] = values
    moved = int(np.count_nonzero(out != flat))
    return out.reshape(x.shape), moved


class _Objective:
    """``L`` evaluated from one fixed state, with one entry of one tensor moved by ``delta``."""

    def __init__(self, obj, mode, x, target, loss, training, weights_seed):
        self.obj, self.mode, self.loss, self.training = obj, mode, loss, training
        self.x, self.target = x, target
        self.params = _named_parameters(obj) if mode != "loss" else []
        self.snapshot = None
        if mode != "loss" and hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict"):
            self.snapshot = {k: np.array(v, copy=True) for k, v in obj.state_dict().items()}
        self.generator = _random.rng()
        self.rng_state = copy.deepcopy(self.generator.bit_generator.state)
        self.weights_seed = weights_seed
        self.R = None

    def restore_rng(self):
        self.generator.bit_generator.state = copy.deepcopy(self.rng_state)

    def _reset(self):
        if self.snapshot is not None:
            self.obj.load_state_dict(self.snapshot)
        self.restore_rng()
        if self.loss is not None and hasattr(self.loss, "zero_grad"):
            self.loss.zero_grad()

    def _forward(self, x, target):
        if self.mode == "loss":
            return float(self.obj.forward(x, target))
        y = self.obj.forward(x, training=self.training)
        if self.mode == "model+loss":
            return float(self.loss.forward(y, target))
        ys = [np.asarray(v) for v in y] if isinstance(y, (list, tuple)) else [np.asarray(y)]
        if self.R is None:
            for v in ys:
                if v.dtype != np.float64:
                    raise TypeError(f"gradcheck: {_describe(self.obj)}.forward returned dtype "
                                    f"{v.dtype} for a float64 input and float64 parameters; the "
                                    f"check needs float64")
            rng = np.random.default_rng(self.weights_seed)
            self.R = [rng.standard_normal(v.shape) for v in ys]
        if [v.shape for v in ys] != [r.shape for r in self.R]:
            raise ValueError(f"gradcheck: {_describe(self.obj)}.forward output shape changed from "
                             f"{[r.shape for r in self.R]} to {[v.shape for v in ys]} between calls")
        return float(sum(np.sum(v * r) for v, r in zip(ys, self.R)))

    def value(self, tensor=None, index=None, delta=0.0):
        """``L`` with entry ``index`` of ``tensor`` ("input", "target" or a parameter position)
        moved by ``delta``."""
        self._reset()
        x, target = self.x, self.target
        if tensor == "input":
            x = x.copy()
            x.flat[index] += delta
        elif isinstance(tensor, tuple):  # ("input", k): input k of a model with several
            x = list(x)
            x[tensor[1]] = x[tensor[1]].copy()
            x[tensor[1]].flat[index] += delta
        elif tensor == "target":
            target = target.copy()
            target.flat[index] += delta
        elif tensor is not None:
            data = self.params[tensor][1].data
            original = data.flat[index]
            data.flat[index] = original + delta
            try:
                return self._forward(x, target)
            finally:
                data.flat[index] = original
        return self._forward(x, target)

    def analytic(self):
        """``L`` and its analytic gradients: {"input"/"target": array or error, param pos: array}."""
        self._reset()
        _zero_grad(self.obj, self.params)
        value = self._forward(self.x, self.target)
        if self.mode == "loss":
            grads = self.obj.backward()
            if isinstance(grads, tuple):
                out = {"input": grads[0]}
                if len(grads) > 1:
                    out["target"] = grads[1]
            else:
                out = {"input": grads}
            return value, out
        if self.mode == "model+loss":
            dy = self.loss.backward()
        else:
            dy = [r.copy() for r in self.R] if len(self.R) > 1 else self.R[0].copy()
        dx = self.obj.backward(dy)
        if isinstance(self.x, list):
            dxs = dx if isinstance(dx, (list, tuple)) else [dx]
            out = {("input", k): (dxs[k] if k < len(dxs) else None) for k in range(len(self.x))}
        else:
            out = {"input": dx}
        for k, (_, p) in enumerate(self.params):
            out[k] = np.array(p.grad, copy=True)
        return value, out


def _check_tensor(objective, name, key, point, analytic, f0, eps, atol, rtol, max_entries, rng):
    shape = point.shape
    n_total = int(point.size)
    if analytic is None:
        return TensorCheck(name, shape, n_total, [], error="backward returned no gradient (None)")
    analytic = np.asarray(analytic)
    if analytic.shape != shape:
        return TensorCheck(name, shape, n_total, [],
                           error=f"gradient has shape {analytic.shape}, expected {shape}")
    if max_entries is None or n_total <= max_entries:
        flat_indices = np.arange(n_total)
    else:
        flat_indices = np.sort(rng.choice(n_total, size=max_entries, replace=False))
    entries = []
    for i in flat_indices:
        i = int(i)
        a = float(analytic.flat[i])
        f_plus = objective.value(key, i, eps)
        f_minus = objective.value(key, i, -eps)
        num = (f_plus - f_minus) / (2 * eps)
        status = "ok" if abs(a - num) <= atol + rtol * abs(num) else "FAIL"
        if status == "FAIL":
            d_plus, d_minus = (f_plus - f0) / eps, (f0 - f_minus) / eps
            if abs(d_plus - d_minus) > atol + rtol * max(abs(d_plus), abs(d_minus)):
                # one-sided differences disagree: a kink lies within eps of this point
                for shrink in _SMALLER_STEPS:
                    h = eps / shrink
                    small = (objective.value(key, i, h) - objective.value(key, i, -h)) / (2 * h)
                    if abs(a - small) <= atol + rtol * abs(small):
                        status, num = "kink", small
                        break
                else:
                    for d in (d_plus, d_minus):
                        if abs(a - d) <= atol + rtol * abs(d):
                            status, num = "kink", d
                            break
        abs_err = abs(a - num)
        # relative to the larger magnitude, floored at atol so a true zero gradient computed as
        # 1e-17 vs 6e-16 does not read as a 100% error
        rel_err = abs_err / max(abs(a), abs(num), atol) if abs_err > 0 else 0.0
        ratio = abs_err / (atol + rtol * abs(num))
        entries.append(EntryCheck(tuple(int(v) for v in np.unravel_index(i, shape)), a, num,
                                  abs_err, rel_err, ratio, status))
    return TensorCheck(name, shape, n_total, entries)


# --- public API -------------------------------------------------------------------------------------
def gradcheck(layer_or_model, x, eps=1e-6, atol=1e-5, rtol=1e-3, training=True, *, target=None,
              loss=None, max_entries=200, nudge=None, nudge_margin=1e-4, check_params=True, seed=0):
    """Compare analytic gradients with central differences in float64.

    Args:
        layer_or_model: any object with the layer interface (``forward(x, training)``,
            ``backward(dy)``, ``parameters()`` of objects with ``.name/.data/.grad``,
            ``zero_grad()``), e.g. a built-in layer, a ``Sequential`` or your own layer; or a
            loss (``forward(pred, target) -> float``, ``backward() -> dpred``) when ``target`` is
            given and ``loss`` is not.
        x: the input (for a loss: ``pred``), or a list of inputs for a model or layer with
            several (a graph ``Model``, ``Add``); the gradients then come back as a list. Cast
            to float64 if float; an integer input (Embedding indices) has no gradient and is
            not checked. A list of outputs is checked through ``L = sum_k sum(y_k * R_k)``.
        eps: central-difference step.
        atol, rtol: an entry passes when ``|analytic - numeric| <= atol + rtol * |numeric|``.
        training: passed to ``forward`` (both modes are supported; ignored for a loss).
        target: the loss target. With ``loss=None`` the object itself is the loss; a float target
            is also checked when the loss's backward returns a pair (``KLDivergenceNormal``).
        loss: check ``layer_or_model`` and ``loss`` together: ``L = loss(model(x), target)``.
        max_entries: per tensor, check at most this many entries (a seeded random sample);
            ``None`` checks every entry.
        nudge: move float input entries off 0 and apart from each other by ``nudge_margin``
            (kinks of ReLU-like layers and max pooling); default True except for a bare loss.
        check_params: also check every parameter's gradient (default True).
        seed: seeds ``R`` (the objective's weights) and the entry sample.

    Returns:
        ``GradcheckResult`` with ``.ok``, ``.tensors``, ``.report()``. The caller's object, its
        dtype and fastnn's random generator are left as they were.
    """
    if loss is not None and target is None:
        raise TypeError("gradcheck: a check with loss= needs target=")
    if loss is not None:
        mode = "model+loss"
    elif target is not None:
        mode = "loss"
    else:
        mode = "layer"
        if _is_fastnn_loss(layer_or_model):
            raise TypeError(f"gradcheck: {_describe(layer_or_model)} is a loss: pass its target, "
                            f"e.g. gradcheck(loss, pred, target=t)")
    if not (isinstance(eps, (int, float, np.floating)) and eps > 0):
        raise ValueError(f"gradcheck: eps must be a positive float, got {eps!r}")
    if max_entries is not None and int(max_entries) < 1:
        raise ValueError(f"gradcheck: max_entries must be >= 1 or None, got {max_entries!r}")
    if nudge is None:
        nudge = mode != "loss"

    subject = _describe(layer_or_model)
    if mode == "model+loss":
        subject = f"{subject} + {_describe(loss)}"
    notes = []
    several = isinstance(x, (list, tuple)) and mode != "loss"
    xs = []
    for k, xk in enumerate(x if several else [x]):
        xk = np.asarray(xk)
        xk = np.array(xk, dtype=np.float64 if xk.dtype.kind == "f" else xk.dtype, copy=True)
        if xk.dtype.kind == "f" and nudge and xk.size:
            xk, moved = _nudge(xk, nudge_margin)
            if moved:
                notes.append(f"nudged {moved} of {xk.size} entries of input{f' {k}' if several else ''} "
                             f"by <= a few x {nudge_margin:g} (away from 0 and from ties)")
        xs.append(xk)
    x = xs if several else xs[0]
    if target is not None:
        target = np.asarray(target)
        target = np.array(target, dtype=np.float64 if target.dtype.kind == "f" else target.dtype, copy=True)

    obj = _to_float64(copy.deepcopy(layer_or_model))
    loss_copy = copy.deepcopy(loss) if loss is not None else None
    objective = _Objective(obj, mode, x, target, loss_copy, training, seed)
    settings = dict(eps=float(eps), atol=float(atol), rtol=float(rtol), training=bool(training),
                    max_entries=max_entries, nudge=bool(nudge), seed=seed,
                    objective={"layer": f"L = sum(forward(x) * R), R ~ N(0, 1) seeded {seed}",
                               "loss": "L = forward(pred, target)",
                               "model+loss": "L = loss(forward(x), target)"}[mode])
    tensors, errors = [], []
    try:
        f0, grads = objective.analytic()
        rng = np.random.default_rng(seed + 1)
        input_name = "pred" if mode == "loss" else "input"
        named = ([(f"input_{k}", ("input", k), xk) for k, xk in enumerate(x)] if several
                 else [(input_name, "input", x)])
        for name, key, xk in named:
            if xk.dtype.kind == "f":
                tensors.append(_check_tensor(objective, name, key, xk, grads.get(key), f0,
                                             eps, atol, rtol, max_entries, rng))
            else:
                tensors.append(TensorCheck(name, xk.shape, int(xk.size), [],
                                           skipped=f"integer dtype {xk.dtype} has no gradient"))
        if "target" in grads and target is not None and target.dtype.kind == "f":
            tensors.append(_check_tensor(objective, "target", "target", target, grads["target"], f0,
                                         eps, atol, rtol, max_entries, rng))
        if check_params:
            for k, (name, p) in enumerate(objective.params):
                tensors.append(_check_tensor(objective, name, k, p.data, grads[k], f0,
                                             eps, atol, rtol, max_entries, rng))
    finally:
        objective.restore_rng()
    if mode == "layer" and not objective.params and check_params and not hasattr(obj, "parameters"):
        notes.append("object has no parameters(); only the input gradient was checked")
    return GradcheckResult(subject, tensors, errors, settings, notes)


def assert_gradcheck(layer_or_model, x, *args, **kwargs):
    """``gradcheck`` that raises ``AssertionError`` with the readable report on failure; returns
    the ``GradcheckResult`` when it passes."""
    result = gradcheck(layer_or_model, x, *args, **kwargs)
    if not result.ok:
        raise AssertionError("\n" + result.report())
    return result


def _is_fastnn_loss(obj):
    import sys

    losses = sys.modules.get("fastnn.losses")
    base = getattr(losses, "Loss", None)
    return base is not None and isinstance(obj, base)
