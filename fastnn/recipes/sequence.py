"""``fastnn train rnn|lstm|word2vec``: sequence models on the small built-in corpora.

rnn / lstm: a character-level language model (Embedding -> RNN/LSTM -> Dense over characters)
on ``datasets.TINY_TEXT``, trained with ``fit`` and gradient-norm clipping; prints the loss per
character against uniform guessing and a greedy sample. word2vec: skip-gram with negative
sampling on ``datasets.grouped_word_corpus``; prints how many nearest neighbours share the
word's topic.
"""
import numpy as np

from .. import layers as L
from .. import optim
from . import _pictures
from .._random import seed as set_seed
from ..datasets import char_corpus, grouped_word_corpus
from ..model import Sequential, _atomic_write, _write_npz
from ..models.word2vec import Word2Vec


def _windows(ids, seq_len, stride):
    starts = np.arange(0, len(ids) - seq_len - 1, stride)
    x = np.stack([ids[s:s + seq_len] for s in starts])
    y = np.stack([ids[s + 1:s + seq_len + 1] for s in starts])
    return x, y


def _greedy_sample(model, chars, prefix, length):
    index = {ch: i for i, ch in enumerate(chars)}
    ids = [index[ch] for ch in prefix]
    for _ in range(length):
        # re-reads the whole prefix each time: simple, and fast enough for a short sample
        logits = model.predict(np.array([ids[-64:]], np.int64))[0, -1]
        ids.append(int(np.argmax(logits)))
    return "".join(chars[i] for i in ids)


def char_model(name, vocab):
    """The next-character model of ``fastnn train rnn|lstm``: Embedding-RNN/LSTM(128)-Dense."""
    cell = {"rnn": L.RNN, "lstm": L.LSTM}[name]
    return Sequential(L.Embedding(vocab, 32), cell(32, 128), L.Dense(128, vocab))


def _train_char_model(name, epochs, verbose, out, plots):
    chars, ids = char_corpus()
    x, y = _windows(ids, seq_len=32, stride=3)
    model = char_model(name, len(chars))
    history = model.fit(x, y, loss="cross_entropy", optimizer=optim.Adam(model.parameters(), lr=3e-3),
                        epochs=epochs or 20, batch_size=32, clip_norm=5.0, verbose=verbose)
    first, last = history.history["loss"][0], history.history["loss"][-1]
    print(f"{name}: loss per character {first:.3f} -> {last:.3f} "
          f"(uniform guessing: {np.log(len(chars)):.3f}) on {len(x)} windows of 32 characters")
    print(f"{name}: greedy sample: {_greedy_sample(model, chars, 'The ', 80)!r}")
    if out:
        model.save(out)
        print(f"saved checkpoint to {out}")
    _pictures.curves(plots, history, f"{name} character model")
    return {"first_epoch_loss": float(first), "final_loss": float(last),
            "uniform_loss": float(np.log(len(chars)))}


def _train_word2vec(epochs, seed, verbose, out, plots):
    vocab, group_of, sentences = grouped_word_corpus(seed=seed)
    model = Word2Vec(len(vocab), dim=16, window=2, negatives=5, lr=0.025, seed=seed)
    history = model.fit(sentences, epochs=epochs or 5, verbose=verbose)
    k = 5
    same = [np.mean([group_of[j] == group_of[i] for j, _ in model.most_similar(i, k)])
            for i in range(len(vocab))]
    purity = float(np.mean(same))
    chance = (np.bincount(group_of).mean() - 1) / (len(vocab) - 1)
    print(f"word2vec: loss {history['loss'][0]:.3f} -> {history['loss'][-1]:.3f}; top-{k} "
          f"neighbours in the word's own group: {purity:.1%} (chance {chance:.1%})")
    for word in ("cat", "apple", "train"):
        near = ", ".join(vocab[j] for j, _ in model.most_similar(vocab.index(word), 3))
        print(f"  {word} -> {near}")
    if out:
        arrays = {"embeddings": model.embeddings, "output_embeddings": model.w_out,
                  "vocab": np.array(vocab)}
        _atomic_write(out, lambda f: _write_npz(f, arrays))
        print(f"saved word vectors to {out}")
    _pictures.curves(plots, history, "word2vec (skip-gram, negative sampling)")
    return {"neighbour_purity": purity, "chance": float(chance)}


def train(name, epochs=None, seed=0, out=None, verbose=1, plots=None):
    set_seed(seed)
    if name in ("rnn", "lstm"):
        return _train_char_model(name, epochs, verbose, out, plots)
    if name == "word2vec":
        return _train_word2vec(epochs, seed, verbose, out, plots)
    raise ValueError(f"sequence recipes: unknown model {name!r}")
