"""Transformer layers, as ``torch.nn.TransformerEncoderLayer`` / ``TransformerDecoderLayer`` with
``batch_first=True`` (same submodule names, so a ``state_dict`` loads across), and the
sinusoidal ``PositionalEncoding``.

Post-norm (default), encoder:  x = norm1(x + drop1(self_attn(x)));  x = norm2(x + drop2(ff(x)))
Pre-norm (``norm_first``):     x = x + drop1(self_attn(norm1(x)));  x = x + drop2(ff(norm2(x)))
with ff(x) = linear2(dropout(activation(linear1(x)))); the decoder adds the cross-attention on
``memory`` (``multihead_attn``, ``norm2``, ``dropout2``) between the two, its feed-forward block
taking ``norm3``/``dropout3``. Backward runs the same blocks in reverse through the sublayers'
own backward passes.
"""
import math

import numpy as np

from .activation import GELU, ReLU
from .attention import MultiheadAttention
from .base import Layer, check_positive_int
from .dense import Dense
from .dropout import Dropout
from .norm import LayerNorm


def _activation(owner, activation):
    if activation == "relu":
        return ReLU()
    if activation == "gelu":
        return GELU()
    raise ValueError(f"{owner}: activation must be 'relu' or 'gelu', got {activation!r}")


def _add_into(fresh, other):
    """fresh + other, written over ``fresh``: the sublayers' outputs and input gradients are
    new arrays nobody else holds, so the residual sum needs no array of its own (no
    allocation, one pass fewer over a fresh page). Anything else gets a new array."""
    if fresh is other or fresh.shape != other.shape or not fresh.flags.writeable:
        return fresh + other
    np.add(fresh, other, out=fresh)
    return fresh


def _fusable(fresh, other, norm):
    """Whether ``norm.forward(fresh, residual=other)`` may form fresh + other in place:
    _add_into's in-place case, both C-contiguous float arrays of norm's dtype."""
    return (type(norm) is LayerNorm and fresh is not other and fresh.shape == other.shape
            and fresh.dtype == other.dtype == norm._dtype and fresh.flags.writeable
            and fresh.flags.c_contiguous and other.flags.c_contiguous
            and not np.may_share_memory(fresh, other))


class _Block(Layer):
    """What the encoder and decoder layers share: arguments, the feed-forward block."""

    def _setup(self, d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps,
               norm_first):
        owner = type(self).__name__
        self.d_model = check_positive_int(owner, "d_model", d_model)
        self.nhead = check_positive_int(owner, "nhead", nhead)
        self.dim_feedforward = check_positive_int(owner, "dim_feedforward", dim_feedforward)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.floating)) \
                or not 0 <= dropout < 1:
            raise ValueError(f"{owner}: dropout must be a number in [0, 1), got {dropout!r}")
        self.p, self.activation_name = float(dropout), activation
        self.layer_norm_eps, self.norm_first = float(layer_norm_eps), bool(norm_first)
        _activation(owner, activation)  # validate before building anything

    def _feedforward_layers(self):
        self.linear1 = Dense(self.d_model, self.dim_feedforward)
        self.dropout = Dropout(self.p)
        self.linear2 = Dense(self.dim_feedforward, self.d_model)

    def config(self):
        return {"d_model": self.d_model, "nhead": self.nhead,
                "dim_feedforward": self.dim_feedforward, "dropout": self.p,
                "activation": self.activation_name, "layer_norm_eps": self.layer_norm_eps,
                "norm_first": self.norm_first}

    def _ff(self, x, training):
        fusion = self.linear1.activation_fusion(self.activation)
        if fusion is not None:
            # ReLU in linear1's GEMM epilogue, as Sequential fuses Dense + ReLU
            h = self.linear1.forward_relu(x, training, **fusion[0])
            self.activation.fused_output(h)
        else:
            h = self.activation.forward(self.linear1.forward(x, training), training)
        return self.linear2.forward(self.dropout.forward(h, training), training)

    def _residual(self, x, block, norm, drop, training):
        """x + drop(block(x)) normalised by ``norm`` after (post-norm) or on the block's input
        (``norm_first``)."""
        if self.norm_first:
            return _add_into(drop.forward(block(norm.forward(x, training)), training), x)
        fresh = drop.forward(block(x), training)
        if _fusable(fresh, x, norm):
            # the residual sum formed inside the layer norm's pass, written over fresh
            return norm.forward(fresh, training, residual=x)
        return norm.forward(_add_into(fresh, x), training)

    def _residual_backward(self, g, block_backward, norm, drop):
        """The gradient of ``_residual``'s input from its output's; ``block_backward`` maps the
        block's output gradient to its input's."""
        if self.norm_first:
            return _add_into(norm.backward(block_backward(drop.backward(g))), g)
        g = norm.backward(g)
        return _add_into(block_backward(drop.backward(g)), g)

    def _ff_backward(self, g):
        h = self.activation.saved
        if (type(self.activation) is ReLU and self.dropout.mode == "identity"
                and h is not None and self.linear2.x is not None and h.flags.c_contiguous
                and self.linear2.x.size == h.size and self.linear2.x.ctypes.data == h.ctypes.data
                and g.flags.c_contiguous and g.dtype == h.dtype):
            # the ReLU's output went straight into linear2: its mask is applied while linear2's
            # dx is formed (one pass over the hidden gradient fewer; dx and dweight in one
            # 2-thread region as unfused, so the same bits at every level)
            return self.linear1.backward(self.linear2.backward(g, relu=True))
        g = self.dropout.backward(self.linear2.backward(g))
        return self.linear1.backward(self.activation.backward(g))

    def _seq(self, x, name):
        x = self.as_input(x, name)
        if x.ndim != 3 or x.shape[2] != self.d_model:
            raise self.shape_error(f"(N, T, {self.d_model})", x.shape, name)
        return x


class TransformerEncoderLayer(_Block):
    """Self-attention and a feed-forward block, each with a residual connection, dropout and
    layer norm (after, or before with ``norm_first``), batch-first.

    Args: as ``torch.nn.TransformerEncoderLayer`` (``activation`` "relu" or "gelu").
    Shapes: src (N, T, d_model) -> (N, T, d_model); ``src_mask`` and ``src_key_padding_mask``
    as ``MultiheadAttention``'s ``attn_mask`` and ``key_padding_mask``.
    State: ``self_attn.*``, ``linear1.*``, ``linear2.*``, ``norm1.*``, ``norm2.*``.
    """

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
                 layer_norm_eps=1e-5, norm_first=False):
        super().__init__()
        self._setup(d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps, norm_first)
        self.self_attn = MultiheadAttention(self.d_model, self.nhead, dropout=self.p)
        self._feedforward_layers()
        self.norm1 = LayerNorm(self.d_model, eps=self.layer_norm_eps)
        self.norm2 = LayerNorm(self.d_model, eps=self.layer_norm_eps)
        self.dropout1, self.dropout2 = Dropout(self.p), Dropout(self.p)
        self.activation = _activation("TransformerEncoderLayer", activation)
        self._ran = None

    def forward(self, src, src_mask=None, src_key_padding_mask=None, training=True):
        x = self._seq(src, "src")
        masks = dict(attn_mask=src_mask, key_padding_mask=src_key_padding_mask, training=training)
        x = self._residual(x, lambda h: self.self_attn.forward(h, **masks), self.norm1,
                           self.dropout1, training)
        x = self._residual(x, lambda h: self._ff(h, training), self.norm2, self.dropout2, training)
        self._ran = x.shape
        return x

    def backward(self, dy):
        g = self._residual_backward(self.checked_dy(dy, self._ran), self._ff_backward, self.norm2, self.dropout2)
        return self._residual_backward(g, self.self_attn.backward, self.norm1, self.dropout1)


class TransformerDecoderLayer(_Block):
    """Masked self-attention, cross-attention on ``memory`` and a feed-forward block, each with
    a residual connection, dropout and layer norm, batch-first.

    Args: as ``torch.nn.TransformerDecoderLayer``.
    Shapes: tgt (N, T, d_model), memory (N, S, d_model) -> (N, T, d_model); ``backward``
    returns ``(dtgt, dmemory)``. In a graph model call it on ``[tgt, memory]``.
    State: ``self_attn.*``, ``multihead_attn.*``, ``linear1.*``, ``linear2.*``, ``norm1-3.*``.
    """

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
                 layer_norm_eps=1e-5, norm_first=False):
        super().__init__()
        self._setup(d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps, norm_first)
        self.self_attn = MultiheadAttention(self.d_model, self.nhead, dropout=self.p)
        self.multihead_attn = MultiheadAttention(self.d_model, self.nhead, dropout=self.p)
        self._feedforward_layers()
        self.norm1 = LayerNorm(self.d_model, eps=self.layer_norm_eps)
        self.norm2 = LayerNorm(self.d_model, eps=self.layer_norm_eps)
        self.norm3 = LayerNorm(self.d_model, eps=self.layer_norm_eps)
        self.dropout1, self.dropout2, self.dropout3 = Dropout(self.p), Dropout(self.p), Dropout(self.p)
        self.activation = _activation("TransformerDecoderLayer", activation)
        self._ran = None

    def forward(self, tgt, memory=None, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, training=True):
        if isinstance(tgt, (list, tuple)):  # called on [tgt, memory] in a graph model
            tgt, memory = tgt
        x = self._seq(tgt, "tgt")
        mem = self._seq(memory, "memory")
        if mem.shape[0] != x.shape[0]:
            raise ValueError(f"{self.describe()}: tgt {x.shape} and memory {mem.shape} must have "
                             f"the same batch size")
        sa = dict(attn_mask=tgt_mask, key_padding_mask=tgt_key_padding_mask, training=training)
        ca = dict(attn_mask=memory_mask, key_padding_mask=memory_key_padding_mask, training=training)
        x = self._residual(x, lambda h: self.self_attn.forward(h, **sa), self.norm1,
                           self.dropout1, training)
        x = self._residual(x, lambda h: self.multihead_attn.forward(h, mem, mem, **ca), self.norm2,
                           self.dropout2, training)
        x = self._residual(x, lambda h: self._ff(h, training), self.norm3, self.dropout3, training)
        self._ran = x.shape
        return x

    def backward(self, dy):
        """(dtgt, dmemory)."""
        dmemory = []

        def cross_backward(g):  # the query's gradient on; the memory's (key + value) kept
            dq, dk, dv = self.multihead_attn.backward(g)
            dmemory.append(dk + dv)
            return dq

        g = self._residual_backward(self.checked_dy(dy, self._ran), self._ff_backward, self.norm3, self.dropout3)
        g = self._residual_backward(g, cross_backward, self.norm2, self.dropout2)
        g = self._residual_backward(g, self.self_attn.backward, self.norm1, self.dropout1)
        return g, dmemory[0]


class PositionalEncoding(Layer):
    r"""Adds the sinusoidal position code and applies dropout: ``y = dropout(x + PE[:T])`` with
    :math:`PE[t, 2i] = \sin(t / 10000^{2i/d})`, :math:`PE[t, 2i+1] = \cos(t / 10000^{2i/d})`.

    Args:
        d_model: features d of the input (N, T, d).  max_len: the longest T (default 5000).
        dropout: dropout after the addition (default 0.1).

    State: none (the code is a constant of the configuration).
    """

    def __init__(self, d_model, max_len=5000, dropout=0.1):
        super().__init__()
        self.d_model = check_positive_int("PositionalEncoding", "d_model", d_model)
        self.max_len = check_positive_int("PositionalEncoding", "max_len", max_len)
        self.drop = Dropout(dropout)
        self.p = self.drop.p
        self._pe = None

    def config(self):
        return {"d_model": self.d_model, "max_len": self.max_len, "dropout": self.p}

    def children(self):
        return []  # the Dropout has no state

    def table(self):
        """PE (max_len, d_model) in this layer's dtype."""
        if self._pe is None or self._pe.dtype != self._dtype:
            pos = np.arange(self.max_len, dtype=np.float64)[:, None]
            div = np.exp(np.arange(0, self.d_model, 2, dtype=np.float64) * (-math.log(10000.0) / self.d_model))
            pe = np.zeros((self.max_len, self.d_model))
            pe[:, 0::2] = np.sin(pos * div)
            pe[:, 1::2] = np.cos(pos * div[: self.d_model // 2])
            self._pe = pe.astype(self._dtype)
        return self._pe

    def forward(self, x, training=True):
        x = self.as_input(x)
        if x.ndim != 3 or x.shape[2] != self.d_model or x.shape[1] > self.max_len:
            raise self.shape_error(f"(N, T <= {self.max_len}, {self.d_model})", x.shape)
        self.drop._dtype = self._dtype
        return self.drop.forward(x + self.table()[: x.shape[1]], training)

    def backward(self, dy):
        return self.drop.backward(dy)

    def _on_dtype_change(self):
        self._pe = None
        self.drop.astype(self._dtype)
