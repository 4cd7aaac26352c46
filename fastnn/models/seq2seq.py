"""Sequence-to-sequence models on token ids: a GRU encoder-decoder with Luong attention and a
Transformer encoder-decoder, trained with teacher forcing and decoded greedily.

    model = fnn.models.GRUSeq2Seq(src_vocab=60, tgt_vocab=12)          # or TransformerSeq2Seq
    model.fit(src, tgt, epochs=10, batch_size=64)                       # tgt without the BOS
    pred = model.greedy_decode(src_test, length=tgt.shape[1])
    model.sequence_accuracy(src_test, tgt_test)                         # exact-sequence accuracy

Token conventions: id 0 is padding in the source (``key_padding_mask`` and sequence lengths are
taken from it, so pad on the right); the decoder's input is ``[bos] + tgt[:-1]`` (teacher
forcing), ``bos`` a target id that no target sequence contains (``tgt_vocab - 1`` by default).

Both are ``Layer``s holding their layers as attributes (``parameters``, ``state_dict`` with
prefixed keys, ``astype``), with ``forward([src, tgt_in]) -> logits (N, T, tgt_vocab)`` and
``backward(dlogits)``, the parameter gradients of the whole encoder-decoder.
"""
import json
import math
import sys
import time

import numpy as np

from .. import losses as _losses
from .. import optim as _optim
from .._random import rng
from ..layers import (GRU, Dense, Embedding, LayerNorm, MultiheadAttention, PositionalEncoding, Tanh,
                      TransformerDecoderLayer, TransformerEncoderLayer, causal_mask)
from ..layers.base import Layer, check_positive_int
from ..model import _atomic_write, _write_npz

__all__ = ["GRUSeq2Seq", "TransformerSeq2Seq"]


class _EncoderDecoder(Layer):
    """Teacher-forced training, greedy decoding and exact-sequence accuracy for a model with
    ``encode(src, training)`` (keeps what the decoder needs) and ``decode(tgt_in, training) ->
    logits``, and their backward passes ``_decode_backward(dlogits)`` / ``_encode_backward()``."""

    def _setup(self, src_vocab, tgt_vocab, bos):
        owner = type(self).__name__
        self.src_vocab = check_positive_int(owner, "src_vocab", src_vocab)
        self.tgt_vocab = check_positive_int(owner, "tgt_vocab", tgt_vocab)
        bos = self.tgt_vocab - 1 if bos is None else bos
        if isinstance(bos, bool) or not isinstance(bos, (int, np.integer)) or not 0 <= bos < self.tgt_vocab:
            raise ValueError(f"{owner}: bos must be a target id in [0, {self.tgt_vocab}), got {bos!r}")
        self.bos = int(bos)

    def _ids(self, x, vocab, name):
        x = np.asarray(x)
        if x.ndim != 2 or x.dtype.kind not in "iu" or x.shape[1] < 1:
            raise ValueError(f"{self.describe()}: {name} must be integer ids (N, T), got "
                             f"{x.dtype} {x.shape}")
        if x.size and (x.min() < 0 or x.max() >= vocab):
            raise ValueError(f"{self.describe()}: {name} ids must be in [0, {vocab}), got "
                             f"[{x.min()}, {x.max()}]")
        return x.astype(np.int64, copy=False)

    def decoder_input(self, tgt):
        """Teacher forcing: ``[bos] + tgt[:, :-1]``."""
        tgt = self._ids(tgt, self.tgt_vocab, "tgt")
        return np.concatenate([np.full((len(tgt), 1), self.bos, np.int64), tgt[:, :-1]], axis=1)

    # --- the Layer interface -------------------------------------------------------------------
    def forward(self, x, training=True):
        """``x = [src (N, S), tgt_in (N, T)]`` (ids) -> logits (N, T, tgt_vocab)."""
        src, tgt_in = x
        self.encode(self._ids(src, self.src_vocab, "src"), training)
        return self.decode(self._ids(tgt_in, self.tgt_vocab, "tgt_in"), training)

    def backward(self, dlogits):
        """Accumulates every parameter's gradient; token ids have none (returns [None, None])."""
        self._decode_backward(self.as_input(dlogits, "dlogits"))
        self._encode_backward()
        return [None, None]

    # --- training and decoding -----------------------------------------------------------------
    def fit(self, src, tgt, epochs=10, batch_size=64, optimizer=None, clip_norm=1.0,
            schedule="constant", warmup=0, validation_data=None, verbose=1):
        """Teacher-forced training on cross-entropy at every target position (Adam, lr 1e-3, by
        default; gradient norm clipped to ``clip_norm`` unless None). The learning rate per
        step is the optimizer's ``lr`` times a linear warm-up over the first ``warmup`` steps
        and, with ``schedule="cosine"``, a cosine decay to 0 over the whole run.
        ``validation_data=(src, tgt)`` adds the exact-sequence accuracy of greedy decoding after
        each epoch. Returns the history ``{"loss": [...], ("val_accuracy": [...])}`` (also kept
        as ``self.history``)."""
        src = self._ids(src, self.src_vocab, "src")
        tgt = self._ids(tgt, self.tgt_vocab, "tgt")
        if len(src) != len(tgt):
            raise ValueError(f"{self.describe()}.fit: {len(src)} sources and {len(tgt)} targets")
        batch_size = check_positive_int(f"{type(self).__name__}.fit", "batch_size", batch_size)
        tgt_in = self.decoder_input(tgt)
        optimizer = optimizer or _optim.Adam(self.parameters(), lr=1e-3)
        if schedule not in ("constant", "cosine"):
            raise ValueError(f"{self.describe()}.fit: schedule must be 'constant' or 'cosine', got {schedule!r}")
        base_lr, step, steps = optimizer.lr, 0, epochs * -(-len(src) // batch_size)
        loss_fn = _losses.CrossEntropy()
        history = {"loss": []} | ({"val_accuracy": []} if validation_data is not None else {})
        for epoch in range(epochs):
            t0, total, seen = time.perf_counter(), 0.0, 0
            order = rng().permutation(len(src))
            for start in range(0, len(src), batch_size):
                idx = order[start:start + batch_size]
                factor = min(1.0, (step + 1) / warmup) if warmup else 1.0
                if schedule == "cosine":
                    factor *= 0.5 * (1 + math.cos(math.pi * step / steps))
                optimizer.lr, step = base_lr * factor, step + 1
                optimizer.zero_grad()
                logits = self.forward([src[idx], tgt_in[idx]], training=True)
                total += loss_fn.forward(logits, tgt[idx]) * len(idx)
                seen += len(idx)
                self.backward(loss_fn.backward())
                if clip_norm is not None:
                    _optim.clip_grad_norm(self.parameters(), clip_norm)
                optimizer.step()
            history["loss"].append(total / seen)
            line = f"epoch {epoch + 1}/{epochs}: loss {total / seen:.4f}"
            if validation_data is not None:
                history["val_accuracy"].append(self.sequence_accuracy(*validation_data))
                line += f", val exact-sequence accuracy {history['val_accuracy'][-1]:.2%}"
            if verbose:
                print(f"{line} ({time.perf_counter() - t0:.1f} s)", file=sys.stdout, flush=True)
        optimizer.lr = base_lr
        self.history = history
        return history

    def greedy_decode(self, src, length, batch_size=512):
        """Target ids (N, length): from ``bos``, each step appends the most likely next token
        given the source and the tokens decoded so far (inference mode)."""
        src = self._ids(src, self.src_vocab, "src")
        length = check_positive_int(f"{type(self).__name__}.greedy_decode", "length", length)
        out = np.empty((len(src), length), np.int64)
        for start in range(0, len(src), batch_size):
            part = src[start:start + batch_size]
            self.encode(part, training=False)
            seq = np.full((len(part), 1), self.bos, np.int64)
            for _ in range(length):
                nxt = self.decode(seq, training=False)[:, -1].argmax(-1)
                seq = np.concatenate([seq, nxt[:, None]], axis=1)
            out[start:start + len(part)] = seq[:, 1:]
        return out

    def save(self, path):
        """One ``.npz``: the constructor arguments (JSON) and the state_dict; see :meth:`load`."""
        arrays = {f"state:{k}": v for k, v in self.state_dict().items()}
        arrays["config"] = np.array(json.dumps({"class": type(self).__name__, "config": self.config(),
                                                "dtype": str(self.dtype)}))
        _atomic_write(path, lambda f: _write_npz(f, arrays))

    @staticmethod
    def load(path):
        """The model :meth:`save` wrote to ``path``, its class, configuration and weights."""
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["config"]))
            state = {k[len("state:"):]: f[k] for k in f.files if k.startswith("state:")}
        cls = {c.__name__: c for c in (GRUSeq2Seq, TransformerSeq2Seq)}.get(meta["class"])
        if cls is None:
            raise ValueError(f"load: {path!r} holds a {meta['class']!r}, not a seq2seq model")
        model = cls(**meta["config"]).astype(meta["dtype"])
        model.load_state_dict(state)
        return model

    def sequence_accuracy(self, src, tgt):
        """The fraction of sources whose greedy decoding equals the target exactly."""
        tgt = self._ids(tgt, self.tgt_vocab, "tgt")
        return float(np.mean((self.greedy_decode(src, tgt.shape[1]) == tgt).all(axis=1)))


class GRUSeq2Seq(_EncoderDecoder):
    r"""GRU encoder-decoder with Luong attention (Luong, Pham and Manning, 2015).

    The encoder GRU reads the embedded source; the decoder GRU starts from the encoder's state
    at each source's last (non-padding) token and reads the embedded decoder input. Each
    decoder state :math:`h_t` attends over the encoder states :math:`\bar h_s` (padding masked):
    a one-head ``MultiheadAttention`` (query ``h_t``, keys and values ``\bar h_s``), whose score
    :math:`(W_q h_t)^\top (W_k \bar h_s) / \sqrt{H}` is Luong's bilinear "general" score with
    :math:`W_a = W_q^\top W_k / \sqrt{H}`, and whose context is a projection of
    :math:`\sum_s a_{ts} \bar h_s`. The attentional state :math:`\tilde h_t = \tanh(W_c [c_t;
    h_t])` gives the logits :math:`W_o \tilde h_t`.

    Args:
        src_vocab: source vocabulary size (id 0 is padding).
        tgt_vocab: target vocabulary size.
        embed_dim: token embedding size, both sides (default 64).
        hidden_size: H of both GRUs (default 128).
        bos: the decoder's start id (default ``tgt_vocab - 1``).

    State: ``src_embed.weight``, ``encoder.*`` and ``decoder.*`` (GRU), ``tgt_embed.weight``,
    ``attention.*`` (in_proj_weight, out_proj.*), ``combine.*``, ``out.*``.
    """

    def __init__(self, src_vocab, tgt_vocab, embed_dim=64, hidden_size=128, bos=None):
        super().__init__()
        self._setup(src_vocab, tgt_vocab, bos)
        self.embed_dim = check_positive_int("GRUSeq2Seq", "embed_dim", embed_dim)
        self.hidden_size = h = check_positive_int("GRUSeq2Seq", "hidden_size", hidden_size)
        self.src_embed = Embedding(self.src_vocab, self.embed_dim, padding_idx=0)
        self.encoder = GRU(self.embed_dim, h)
        self.tgt_embed = Embedding(self.tgt_vocab, self.embed_dim)
        self.decoder = GRU(self.embed_dim, h)
        self.attention = MultiheadAttention(h, 1)
        self.combine = Dense(2 * h, h)
        self.tanh = Tanh()
        self.out = Dense(h, self.tgt_vocab)
        self._enc = self._dec = None

    def config(self):
        return {"src_vocab": self.src_vocab, "tgt_vocab": self.tgt_vocab, "embed_dim": self.embed_dim,
                "hidden_size": self.hidden_size, "bos": self.bos}

    def encode(self, src, training=False):
        src = self._ids(src, self.src_vocab, "src")
        last = np.maximum((src != 0).sum(axis=1), 1) - 1  # the last non-padding position
        states = self.encoder.forward(self.src_embed.forward(src, training), training)
        rows = np.arange(len(src))
        self._enc = dict(states=states, last=last, rows=rows, h0=np.ascontiguousarray(states[rows, last]),
                         padding=src == 0)
        return states

    def decode(self, tgt_in, training=False):
        if self._enc is None:
            raise RuntimeError(f"{self.describe()}: decode called before encode")
        e = self._enc
        tgt_in = self._ids(tgt_in, self.tgt_vocab, "tgt_in")
        dec = self.decoder.forward(self.tgt_embed.forward(tgt_in, training), training, h0=e["h0"])
        ctx = self.attention.forward(dec, e["states"], e["states"], key_padding_mask=e["padding"],
                                     training=training)
        mixed = self.tanh.forward(self.combine.forward(np.concatenate([ctx, dec], axis=2), training), training)
        self._dec = True
        return self.out.forward(mixed, training)

    def _decode_backward(self, dlogits):
        self.check_forwarded(self._dec)
        g = self.combine.backward(self.tanh.backward(self.out.backward(dlogits)))
        h = self.hidden_size
        dq, dk, dv = self.attention.backward(np.ascontiguousarray(g[..., :h]))
        self.tgt_embed.backward(self.decoder.backward(g[..., h:] + dq))
        self._dstates = dk + dv
        self._dstates[self._enc["rows"], self._enc["last"]] += self.decoder.dh0

    def _encode_backward(self):
        self.src_embed.backward(self.encoder.backward(self._dstates))
        self._dstates = None


class TransformerSeq2Seq(_EncoderDecoder):
    r"""Transformer encoder-decoder (Vaswani et al., 2017) on token ids, batch-first.

    Source and target embeddings scaled by :math:`\sqrt{d_{model}}` plus the sinusoidal
    ``PositionalEncoding``; ``num_encoder_layers`` ``TransformerEncoderLayer``s (source padding
    masked), ``num_decoder_layers`` ``TransformerDecoderLayer``s with the causal mask on their
    self-attention, a final ``LayerNorm`` after each stack (as ``torch.nn.Transformer``) and a
    ``Dense`` to the target vocabulary.

    Args:
        src_vocab: source vocabulary size (id 0 is padding).
        tgt_vocab: target vocabulary size.
        d_model: model width (default 64).
        nhead: attention heads (default 4).
        num_encoder_layers: encoder layers (default 2).
        num_decoder_layers: decoder layers (default 2).
        dim_feedforward: feed-forward width (default 256).
        dropout: dropout of the layers and positional encodings (default 0.1).
        activation: "relu" or "gelu".
        norm_first: pre-norm layers (default False: post-norm, as torch).
        max_len: the longest sequence (default 512).
        bos: the decoder's start id (default ``tgt_vocab - 1``).

    State: ``src_embed.weight``, ``tgt_embed.weight``, ``encoder.layers.{i}.*``,
    ``encoder.norm.*``, ``decoder.layers.{i}.*``, ``decoder.norm.*`` (``torch.nn.Transformer``'s
    names under ``encoder.``/``decoder.``), ``out.*``.
    """

    def __init__(self, src_vocab, tgt_vocab, d_model=64, nhead=4, num_encoder_layers=2,
                 num_decoder_layers=2, dim_feedforward=256, dropout=0.1, activation="relu",
                 norm_first=False, max_len=512, bos=None):
        super().__init__()
        self._setup(src_vocab, tgt_vocab, bos)
        owner = "TransformerSeq2Seq"
        self.d_model = check_positive_int(owner, "d_model", d_model)
        self.nhead = check_positive_int(owner, "nhead", nhead)
        self.num_encoder_layers = check_positive_int(owner, "num_encoder_layers", num_encoder_layers)
        self.num_decoder_layers = check_positive_int(owner, "num_decoder_layers", num_decoder_layers)
        self.dim_feedforward = check_positive_int(owner, "dim_feedforward", dim_feedforward)
        self.max_len = check_positive_int(owner, "max_len", max_len)
        self.p, self.activation, self.norm_first = float(dropout), activation, bool(norm_first)
        block = dict(dim_feedforward=self.dim_feedforward, dropout=self.p, activation=activation,
                     norm_first=self.norm_first)
        self.src_embed = Embedding(self.src_vocab, self.d_model, padding_idx=0)
        self.tgt_embed = Embedding(self.tgt_vocab, self.d_model)
        self.src_position = PositionalEncoding(self.d_model, self.max_len, self.p)
        self.tgt_position = PositionalEncoding(self.d_model, self.max_len, self.p)
        self.encoder_layers = [TransformerEncoderLayer(self.d_model, self.nhead, **block)
                               for _ in range(self.num_encoder_layers)]
        self.decoder_layers = [TransformerDecoderLayer(self.d_model, self.nhead, **block)
                               for _ in range(self.num_decoder_layers)]
        self.encoder_norm = LayerNorm(self.d_model)
        self.decoder_norm = LayerNorm(self.d_model)
        self.out = Dense(self.d_model, self.tgt_vocab)
        self._enc = self._dec = None

    def config(self):
        return {"src_vocab": self.src_vocab, "tgt_vocab": self.tgt_vocab, "d_model": self.d_model,
                "nhead": self.nhead, "num_encoder_layers": self.num_encoder_layers,
                "num_decoder_layers": self.num_decoder_layers, "dim_feedforward": self.dim_feedforward,
                "dropout": self.p, "activation": self.activation, "norm_first": self.norm_first,
                "max_len": self.max_len, "bos": self.bos}

    def children(self):
        # the positional encodings have no state, but are children so astype reaches them
        return ([("src_embed", self.src_embed), ("tgt_embed", self.tgt_embed),
                 ("src_position", self.src_position), ("tgt_position", self.tgt_position)]
                + [(f"encoder.layers.{i}", layer) for i, layer in enumerate(self.encoder_layers)]
                + [("encoder.norm", self.encoder_norm)]
                + [(f"decoder.layers.{i}", layer) for i, layer in enumerate(self.decoder_layers)]
                + [("decoder.norm", self.decoder_norm), ("out", self.out)])

    def _embed(self, embedding, position, ids, training):
        x = embedding.forward(ids, training) * embedding.dtype.type(math.sqrt(self.d_model))
        return position.forward(x, training)

    def encode(self, src, training=False):
        src = self._ids(src, self.src_vocab, "src")
        if src.shape[1] > self.max_len:
            raise ValueError(f"{self.describe()}: source length {src.shape[1]} > max_len {self.max_len}")
        padding = src == 0
        x = self._embed(self.src_embed, self.src_position, src, training)
        kpm = padding if padding.any() else None
        for layer in self.encoder_layers:
            x = layer.forward(x, src_key_padding_mask=kpm, training=training)
        memory = self.encoder_norm.forward(x, training)
        self._enc = dict(memory=memory, padding=kpm)
        return memory

    def decode(self, tgt_in, training=False):
        if self._enc is None:
            raise RuntimeError(f"{self.describe()}: decode called before encode")
        tgt_in = self._ids(tgt_in, self.tgt_vocab, "tgt_in")
        mask = causal_mask(tgt_in.shape[1])
        x = self._embed(self.tgt_embed, self.tgt_position, tgt_in, training)
        for layer in self.decoder_layers:
            x = layer.forward(x, self._enc["memory"], tgt_mask=mask,
                              memory_key_padding_mask=self._enc["padding"], training=training)
        self._dec = True
        return self.out.forward(self.decoder_norm.forward(x, training), training)

    def _decode_backward(self, dlogits):
        self.check_forwarded(self._dec)
        g = self.decoder_norm.backward(self.out.backward(dlogits))
        dmemory = 0
        for layer in reversed(self.decoder_layers):
            g, dm = layer.backward(g)
            dmemory = dmemory + dm
        scale = g.dtype.type(math.sqrt(self.d_model))
        self.tgt_embed.backward(self.tgt_position.backward(g) * scale)
        self._dmemory = dmemory

    def _encode_backward(self):
        g = self.encoder_norm.backward(self._dmemory)
        for layer in reversed(self.encoder_layers):
            g = layer.backward(g)
        scale = g.dtype.type(math.sqrt(self.d_model))
        self.src_embed.backward(self.src_position.backward(g) * scale)
        self._dmemory = None
