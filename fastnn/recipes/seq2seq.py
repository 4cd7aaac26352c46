"""``fastnn train seq2seq|transformer``: encoder-decoders on generated translation tasks.

- ``seq2seq``: a GRU encoder-decoder with Luong attention (``fastnn.models.GRUSeq2Seq``) that
  translates dates written in words or mixed forms ("the twenty third of march nineteen ninety
  four", "mar 23 , 1 9 9 4") into ISO dates ("1994-03-23"); 20000 training dates, 2000
  held-out dates never seen in training.
- ``transformer``: a Transformer (``fastnn.models.TransformerSeq2Seq``: 2 encoder + 2 decoder
  layers, d_model 64, 4 heads) that reverses sequences of 10 symbols out of 10; 20000 training
  sequences, 2000 held-out ones.

Both train with teacher forcing (Adam, linear warm-up then cosine decay, gradient norm clipped
at 1) and report the exact-sequence accuracy of greedy decoding on the held-out pairs against
their bar: 98% for ``seq2seq``, 99% for ``transformer``.
"""
import time

import numpy as np

from .. import optim
from . import _pictures
from .._random import seed as set_seed
from ..datasets import DATE_TARGET_CHARS, date_source_vocab, date_translation, reversal_pairs
from ..models.seq2seq import GRUSeq2Seq, TransformerSeq2Seq

BARS = {"seq2seq": 0.98, "transformer": 0.99}


def dates_task(n_train=20000, n_test=2000, seed=0):
    """The date translation data: ``(vocab, (src, tgt), (src_test, tgt_test))``."""
    return date_translation(n_train, n_test, seed=seed)


def date_model():
    return GRUSeq2Seq(len(date_source_vocab()), len(DATE_TARGET_CHARS) + 1, embed_dim=64, hidden_size=128)


def reversal_task(n_train=20000, n_test=2000, length=10, symbols=10, seed=0):
    """``((src, tgt), (src_test, tgt_test))``: symbols 1..symbols, test sequences not in training."""
    src, tgt = reversal_pairs(n_train, length, symbols, seed=seed)
    test = reversal_pairs(n_test, length, symbols, seed=seed + 1, exclude=src)
    return (src, tgt), test


def reversal_model(symbols=10):
    # id 0 is never a symbol: it is the decoder's start token
    return TransformerSeq2Seq(symbols + 1, symbols + 1, d_model=64, nhead=4, num_encoder_layers=2,
                              num_decoder_layers=2, dim_feedforward=256, dropout=0.0, bos=0)


def run(name, epochs=None, n_train=20000, n_test=2000, seed=0, verbose=1):
    """Train one of the two models; returns ``(model, metrics)``."""
    set_seed(seed)
    t0 = time.perf_counter()
    if name == "seq2seq":
        _, (src, tgt), (src_t, tgt_t) = dates_task(n_train, n_test, seed)
        model, lr, epochs = date_model(), 3e-3, epochs or 4
    elif name == "transformer":
        (src, tgt), (src_t, tgt_t) = reversal_task(n_train, n_test, seed=seed)
        model, lr, epochs = reversal_model(), 2e-3, epochs or 5
    else:
        raise ValueError(f"seq2seq recipes: unknown model {name!r}; choose from seq2seq, transformer")
    history = model.fit(src, tgt, epochs=epochs, batch_size=64, schedule="cosine", warmup=200,
                        optimizer=optim.Adam(model.parameters(), lr=lr), verbose=verbose)
    accuracy = model.sequence_accuracy(src_t, tgt_t)
    metrics = {"test_sequence_accuracy": accuracy, "first_epoch_loss": history["loss"][0],
               "final_loss": history["loss"][-1], "bar": BARS[name], "bar_met": accuracy >= BARS[name],
               "seconds": time.perf_counter() - t0, "train_pairs": len(src), "test_pairs": len(src_t)}
    return model, metrics


def train(name, epochs=None, seed=0, out=None, verbose=1, plots=None):
    model, m = run(name, epochs=epochs, seed=seed, verbose=verbose)
    task = "dates in words -> ISO dates" if name == "seq2seq" else "reversing 10 symbols"
    print(f"{name}: {task}; exact-sequence accuracy of greedy decoding on {m['test_pairs']} held-out "
          f"pairs {m['test_sequence_accuracy']:.2%} (bar {m['bar']:.0%}: "
          f"{'met' if m['bar_met'] else 'MISSED'}); loss {m['first_epoch_loss']:.4f} -> "
          f"{m['final_loss']:.4f}; {m['seconds']:.0f} s")
    if out:
        model.save(out)
        print(f"saved checkpoint to {out} (fastnn.models.{type(model).__name__}.load)")
    title = "GRU seq2seq + attention, dates" if name == "seq2seq" else "Transformer, reversal"
    _pictures.curves(plots, model.history, title)
    return m
