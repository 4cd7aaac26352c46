"""Multi-head attention, as ``torch.nn.MultiheadAttention`` with ``batch_first=True``.

    mha = MultiheadAttention(embed_dim=64, num_heads=4)
    out = mha.forward(x)                             # self-attention, (N, L, E)
    out, w = mha.forward(q, k, v, need_weights=True)  # cross-attention; w (N, L, S), head mean
    dq = mha.backward(dout)                          # self; (dq, dk, dv) for cross-attention

Forward: Q, K, V projections (one GEMM over the packed ``in_proj_weight`` for self-attention);
then ``_core.attention_forward``, one task per batch and head reading its columns of the
projection in place: scores = Q K^T, the scaled, masked softmax of each row, dropout on the
probabilities, P V written into the head's columns of the context, which ``out_proj`` projects.
Backward: ``_core.attention_backward`` (the same GEMMs transposed, the softmax's backward
``dS = P * (dP - rowsum(dP * P))``) writes dQ, dK, dV into the columns of the packed
projection's gradient, and one GEMM pair gives dx and the in_proj gradients.
"""
import math

import numpy as np

from .. import _core
from .._random import rng
from .base import Layer, check_positive_int
from .dense import Dense


def causal_mask(T):
    """The float (T, T) mask of a decoder's self-attention: 0 on and below the diagonal, -inf
    above (position i attends to positions <= i), as torch's ``generate_square_subsequent_mask``."""
    T = check_positive_int("causal_mask", "T", T)
    return np.triu(np.full((T, T), -np.inf, dtype=np.float32), k=1)


class MultiheadAttention(Layer):
    r"""Multi-head scaled dot-product attention (batch-first), PyTorch's semantics and names.

    Args:
        embed_dim: E, the features of query, key and value and of the output.
        num_heads: heads; E must be divisible by it (head_dim = E / num_heads).
        dropout: dropout on the attention probabilities in training (default 0).
        bias: learn ``in_proj_bias`` and ``out_proj.bias`` (default True).

    Shapes:
        query (N, L, E); key and value (N, S, E) (None: self-attention on query);
        ``key_padding_mask`` (N, S): bool, True = ignore that key (or float, added);
        ``attn_mask`` (L, S) or (N * num_heads, L, S): bool, True = not allowed (or float,
        added to the scores). Output (N, L, E); with ``need_weights`` also the attention
        probabilities averaged over heads (N, L, S).

    State:
        in_proj_weight (3E, E) (Xavier uniform), in_proj_bias (3E,) (zeros),
        out_proj.weight (E, E), out_proj.bias (E,) (zeros).
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True):
        super().__init__()
        e = check_positive_int("MultiheadAttention", "embed_dim", embed_dim)
        h = check_positive_int("MultiheadAttention", "num_heads", num_heads)
        if e % h:
            raise ValueError(f"MultiheadAttention: embed_dim {e} must be divisible by num_heads {h}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.floating)) \
                or not 0 <= dropout < 1:
            raise ValueError(f"MultiheadAttention: dropout must be a number in [0, 1), got {dropout!r}")
        self.embed_dim, self.num_heads, self.head_dim = e, h, e // h
        self.dropout, self.use_bias = float(dropout), bool(bias)
        bound = math.sqrt(6.0 / (e + 3 * e))  # xavier_uniform_ on (3E, E)
        self.in_proj_weight = self.add_parameter("in_proj_weight", rng().uniform(-bound, bound, (3 * e, e)))
        self.in_proj_bias = self.add_parameter("in_proj_bias", np.zeros(3 * e)) if bias else None
        self.out_proj = Dense(e, e, bias=bias, bias_init="zeros")
        self._cache = None

    def config(self):
        return {"embed_dim": self.embed_dim, "num_heads": self.num_heads, "dropout": self.dropout,
                "bias": self.use_bias}

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}" + \
            (f", dropout={self.dropout}" if self.dropout else "") + ("" if self.use_bias else ", bias=False")

    def _on_dtype_change(self):
        self._cache = None

    # --- helpers ---------------------------------------------------------------------------------
    def _seq(self, a, name):
        a = self.as_input(a, name)
        if a.ndim != 3 or a.shape[2] != self.embed_dim or a.shape[1] < 1:
            raise self.shape_error(f"(N, T, {self.embed_dim}) with T >= 1", a.shape, name)
        return a

    def _project(self, x, part):
        """x (N, T, E) @ W_part^T + b_part for parts slice(0, E) (q), ... -> (N*T, width)."""
        w = self.in_proj_weight.data[part]  # whole rows: a contiguous view
        b = self.in_proj_bias.data[part] if self.in_proj_bias is not None else None
        out = np.empty((x.shape[0] * x.shape[1], w.shape[0]), dtype=self._dtype)
        _core.dense_forward(x.reshape(-1, self.embed_dim), w, b, out)
        return out

    def _mask(self, n, l, s, attn_mask, key_padding_mask):
        """One additive float mask (M, L, S), M in (1, N, N*H), or None."""
        mask = None
        if attn_mask is not None:
            am = np.asarray(attn_mask)
            if am.ndim == 2 and am.shape == (l, s):
                am = am[None]
            elif not (am.ndim == 3 and am.shape == (n * self.num_heads, l, s)):
                raise ValueError(f"{self.describe()}: attn_mask must be ({l}, {s}) or "
                                 f"({n * self.num_heads}, {l}, {s}), got {am.shape}")
            mask = _additive(am, self._dtype, "attn_mask", self)
        if key_padding_mask is not None:
            kp = np.asarray(key_padding_mask)
            if kp.shape != (n, s):
                raise ValueError(f"{self.describe()}: key_padding_mask must be ({n}, {s}), got {kp.shape}")
            kp = _additive(kp, self._dtype, "key_padding_mask", self)[:, None, :]  # (N, 1, S)
            if mask is None:
                mask = np.broadcast_to(kp, (n, l, s))
            elif mask.shape[0] == 1:
                mask = mask + kp
            else:  # per head: (N*H, L, S) + the sample's padding
                mask = (mask.reshape(n, self.num_heads, l, s) + kp[:, None]).reshape(n * self.num_heads, l, s)
        return None if mask is None else np.ascontiguousarray(mask, dtype=self._dtype)

    # --- forward and backward --------------------------------------------------------------------
    def forward(self, query, key=None, value=None, key_padding_mask=None, attn_mask=None,
                need_weights=False, training=True):
        """The attention output (and the head-averaged weights with ``need_weights``)."""
        if isinstance(query, (list, tuple)):  # called on a list in a graph model: (q, k, v)
            query, key, value = (list(query) + [None, None])[:3]
        self_attention = key is None and value is None
        if (key is None) != (value is None):
            raise TypeError(f"{self.describe()}: give both key and value (cross-attention) or "
                            f"neither (self-attention)")
        q_in = self._seq(query, "query")
        n, l, e = q_in.shape
        h, d = self.num_heads, self.head_dim
        if self_attention:
            qkv = self._project(q_in, slice(0, 3 * e))  # (N*L, 3E): the heads read in place
            q, k, v = qkv[:, :e], qkv[:, e:2 * e], qkv[:, 2 * e:]
            k_in = v_in = None
            s = l
        else:
            k_in, v_in = self._seq(key, "key"), self._seq(value, "value")
            if k_in.shape[:2] != v_in.shape[:2] or k_in.shape[0] != n:
                raise ValueError(f"{self.describe()}: key {k_in.shape} and value {v_in.shape} must be "
                                 f"(N, S, E) with the query's N = {n}")
            s = k_in.shape[1]
            q = self._project(q_in, slice(0, e))
            k = self._project(k_in, slice(e, 2 * e))
            v = self._project(v_in, slice(2 * e, 3 * e))
        mask = self._mask(n, l, s, attn_mask, key_padding_mask)
        p = np.empty((n * h, l, s), dtype=self._dtype)
        p_used, drop = None, None
        if training and self.dropout:
            keep = 1.0 - self.dropout
            drop = ((rng().random(p.shape) < keep) / keep).astype(self._dtype)
            p_used = np.empty_like(p)
        scale = 1.0 / math.sqrt(d)
        ctx = np.empty((n * l, e), dtype=self._dtype)
        _core.attention_forward(q, k, v, h, scale, mask, p, ctx, drop, p_used)
        out = self.out_proj.forward(ctx.reshape(n, l, e), training)
        p_used = p if p_used is None else p_used
        self._cache = dict(q_in=q_in, k_in=k_in, v_in=v_in, q=q, k=k, v=v, p=p, p_used=p_used,
                           drop=drop, scale=scale, shape=(n, l, s), self_attention=self_attention)
        if need_weights:
            return out, p_used.reshape(n, h, l, s).mean(axis=1)
        return out

    def backward(self, dout):
        """dquery for self-attention; (dquery, dkey, dvalue) for cross-attention."""
        self.check_forwarded(self._cache)
        c = self._cache
        n, l, s = c["shape"]
        h, e = self.num_heads, self.embed_dim
        dout = self.checked_dy(dout, (n, l, e))
        dctx = self.out_proj.backward(dout).reshape(n * l, e)
        w, wg = self.in_proj_weight.data, self.in_proj_weight.grad
        bg = self.in_proj_bias.grad if self.in_proj_bias is not None else None
        if c["self_attention"]:  # dq, dk, dv straight into the packed projection's gradient
            dqkv = np.empty((n * l, 3 * e), dtype=self._dtype)
            dq, dk, dv = dqkv[:, :e], dqkv[:, e:2 * e], dqkv[:, 2 * e:]
        else:
            dq = np.empty((n * l, e), dtype=self._dtype)
            dk, dv = (np.empty((n * s, e), dtype=self._dtype) for _ in range(2))
        used = None if c["drop"] is None else c["p_used"]
        _core.attention_backward(c["q"], c["k"], c["v"], h, c["scale"], c["p"], used, c["drop"],
                                 dctx, dq, dk, dv)
        if c["self_attention"]:
            dx = np.empty((n * l, e), dtype=self._dtype)
            _core.dense_backward(c["q_in"].reshape(-1, e), w, dqkv, dx, wg, bg)
            return dx.reshape(n, l, e)
        grads = []
        for i, (x_in, g, t) in enumerate(((c["q_in"], dq, l), (c["k_in"], dk, s), (c["v_in"], dv, s))):
            part = slice(i * e, (i + 1) * e)
            dx = np.empty((n * t, e), dtype=self._dtype)
            _core.dense_backward(x_in.reshape(-1, e), w[part], g, dx, wg[part],
                                 None if bg is None else bg[part])  # rows: contiguous views
            grads.append(dx.reshape(n, t, e))
        return tuple(grads)


def _additive(mask, dtype, name, layer):
    """A bool mask (True = not allowed) as 0/-inf, a float mask as given, in ``dtype``."""
    if mask.dtype == np.bool_:
        return np.where(mask, -np.inf, 0.0).astype(dtype)
    if mask.dtype.kind != "f":
        raise TypeError(f"{layer.describe()}: {name} must be bool or float, got {mask.dtype}")
    return mask.astype(dtype)
