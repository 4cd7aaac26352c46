"""Embedding: a lookup table of learnable vectors indexed by integer ids."""
import weakref

import numpy as np

from .. import _core
from .._random import rng
from .base import Layer


class Embedding(Layer):
    r"""y[n, t] = weight[x[n, t]]: each integer id picks one row of a learnable table.

    Args:
        num_embeddings: size of the vocabulary (ids lie in ``[0, num_embeddings)``).
        embedding_dim: length of each vector.
        padding_idx: an id whose row is initialised to zeros and never receives a gradient
            (a padding token), as PyTorch; negative counts from the end. Default None.

    Shapes:
        input: integer array (N, T) of any integer dtype (any shape of ids works; the output
        appends ``embedding_dim``); output: (N, T, embedding_dim).

    State:
        weight (num_embeddings, embedding_dim), initialised N(0, 1) as PyTorch.
        The backward pass scatter-adds into ``weight.grad`` (repeated ids add up) and returns
        ``None``: there is no gradient with respect to integer ids.

    Example::

        emb = Embedding(64, 32)
        y = emb.forward(np.array([[1, 2, 3]]))      # (1, 3, 32)
        emb.backward(np.ones_like(y))
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None):
        super().__init__()
        for name, v in (("num_embeddings", num_embeddings), ("embedding_dim", embedding_dim)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"Embedding: {name} must be a positive int, got {v!r}")
        self.num_embeddings = int(num_embeddings)
        self.embedding_dim = int(embedding_dim)
        if padding_idx is not None:
            if isinstance(padding_idx, bool) or not isinstance(padding_idx, (int, np.integer)) \
                    or not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise ValueError(f"Embedding: padding_idx must be an int in "
                                 f"[-{self.num_embeddings}, {self.num_embeddings}), got {padding_idx!r}")
            padding_idx = int(padding_idx) % self.num_embeddings
        self.padding_idx = padding_idx
        table = rng().standard_normal((self.num_embeddings, self.embedding_dim))
        if padding_idx is not None:
            table[padding_idx] = 0
        self.weight = self.add_parameter("weight", table)
        self._indices = None
        self._in_shape = None

    def config(self):
        config = {"num_embeddings": self.num_embeddings, "embedding_dim": self.embedding_dim}
        if self.padding_idx is not None:
            config["padding_idx"] = self.padding_idx
        return config

    def _ids(self, x):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{self.describe()}: input must be a numpy.ndarray of integer ids, "
                            f"got {type(x).__name__}")
        if x.dtype.kind not in "iu":
            raise TypeError(f"{self.describe()}: input must hold integer ids, got dtype {x.dtype} "
                            f"with shape {x.shape}")
        ids = np.ascontiguousarray(x.reshape(-1), dtype=np.int64)
        if ids.size:
            lo, hi = ids.min(), ids.max()
            if lo < 0 or hi >= self.num_embeddings:
                raise ValueError(f"{self.describe()}: ids must lie in [0, {self.num_embeddings}), "
                                 f"got values in [{lo}, {hi}] in input of shape {x.shape}")
        return ids

    def forward(self, x, training=True):
        ids = self._ids(x)
        out = np.empty((ids.shape[0], self.embedding_dim), dtype=self._dtype)
        _core.embedding_forward(ids, self.weight.data, out)
        self._indices, self._in_shape = ids, x.shape
        y = out.reshape(*x.shape, self.embedding_dim)
        _remember_lookup(y, ids, self.weight.data)
        return y

    def backward(self, dy):
        self.check_forwarded(self._indices)
        expected = (*self._in_shape, self.embedding_dim)
        dy = self.as_input(dy, "dy")
        if dy.shape != expected:
            raise self.shape_error(expected, dy.shape, "dy")
        grad = self.weight.grad
        kept = grad[self.padding_idx].copy() if self.padding_idx is not None else None
        _core.embedding_backward(self._indices, dy.reshape(-1, self.embedding_dim), grad)
        if kept is not None:
            grad[self.padding_idx] = kept  # the padding row takes no gradient
        return None


# The latest lookup, for a recurrent layer that receives its output: a projection of every row,
# x @ W.T, is then (table @ W.T)[ids], a GEMM over the vocabulary instead of over every position
# (see layers/recurrent.py). Only a hint: the consumer checks that its input still equals
# table[ids] before relying on it, so a modified output or table falls back to the plain path.
# One slot, replaced atomically (a tuple), so concurrent models can only miss the hint.
_last_lookup = None


def _remember_lookup(y, ids, table):
    # weak references only: the hint never keeps an output, its ids or a model's table alive
    global _last_lookup
    _last_lookup = (weakref.ref(y), weakref.ref(ids), weakref.ref(table))


def lookup_of(x):
    """(ids, table) if ``x`` is the very array the latest Embedding.forward returned, else None.
    The caller must still verify ``x == table[ids]``."""
    last = _last_lookup
    if last is None or last[0]() is not x:
        return None
    ids, table = last[1](), last[2]()
    if ids is None or table is None:
        return None
    return ids, table
