"""word2vec: skip-gram with negative sampling (Mikolov et al., 2013)."""
import numpy as np

from .. import _core


class Word2Vec:
    r"""Skip-gram word vectors trained with negative sampling.

    For every centre word c and every context word o within ``window`` positions of it, with k
    negatives n_1..n_k drawn from the unigram distribution raised to 3/4:

        loss = -log s(u_c . v_o) - sum_i log s(-u_c . v_{n_i}),   s = sigmoid

    where u are rows of the input table ``W_in`` (the embeddings) and v rows of the output table
    ``W_out``. Plain SGD, pair by pair, in a compiled kernel (``fastnn._core.sgns_step``) that
    touches only the rows used; the learning rate decays linearly to ``lr * 1e-4``.

    Args:
        vocab_size: number of word ids (ids lie in ``[0, vocab_size)``).
        dim: vector length.  window: context radius.  negatives: k.  lr: initial step size.
        seed: makes initialisation, shuffling and negative sampling reproducible.
        dtype: float32 (default) or float64.

    State:
        ``embeddings`` = W_in (vocab_size, dim), U(-0.5/dim, 0.5/dim); ``output_embeddings`` =
        W_out (vocab_size, dim), zeros (as the reference implementation).

    Example::

        w2v = Word2Vec(vocab_size=1000, dim=50, window=2, negatives=5, seed=0)
        history = w2v.fit([[1, 5, 7, 2], [5, 9, 1]], epochs=5)
        w2v.most_similar(5, k=3)        # [(id, cosine), ...]
    """

    def __init__(self, vocab_size, dim, window=2, negatives=5, lr=0.025, seed=None, dtype=np.float32):
        for name, v, low in (("vocab_size", vocab_size, 2), ("dim", dim, 1), ("window", window, 1),
                             ("negatives", negatives, 0)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise ValueError(f"Word2Vec: {name} must be an int >= {low}, got {v!r}")
        if not (isinstance(lr, (int, float, np.floating)) and lr > 0):
            raise ValueError(f"Word2Vec: lr must be a positive number, got {lr!r}")
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"Word2Vec: dtype must be float32 or float64, got {dtype}")
        self.vocab_size, self.dim = int(vocab_size), int(dim)
        self.window, self.negatives, self.lr = int(window), int(negatives), float(lr)
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self.w_in = self._rng.uniform(-0.5 / dim, 0.5 / dim, (self.vocab_size, self.dim)).astype(dtype)
        self.w_out = np.zeros((self.vocab_size, self.dim), dtype=dtype)

    def __repr__(self):
        return (f"Word2Vec(vocab_size={self.vocab_size}, dim={self.dim}, window={self.window}, "
                f"negatives={self.negatives}, lr={self.lr})")

    @property
    def embeddings(self):
        """The word vectors W_in (vocab_size, dim)."""
        return self.w_in

    @property
    def output_embeddings(self):
        return self.w_out

    # --- data ----------------------------------------------------------------------------------
    def _sentences(self, corpus):
        if isinstance(corpus, np.ndarray) and corpus.ndim == 1:
            corpus = [corpus]
        sentences = []
        for i, s in enumerate(corpus):
            a = np.asarray(s)
            if a.size == 0:
                continue
            if a.ndim != 1 or a.dtype.kind not in "iu":
                raise TypeError(f"Word2Vec.fit: sentence {i} must be a 1-D sequence of integer ids, "
                                f"got dtype {a.dtype} with shape {a.shape}")
            if a.min() < 0 or a.max() >= self.vocab_size:
                raise ValueError(f"Word2Vec.fit: sentence {i} has ids in [{a.min()}, {a.max()}], "
                                 f"outside [0, {self.vocab_size})")
            sentences.append(a.astype(np.int64))
        if not sentences:
            raise ValueError("Word2Vec.fit: the corpus holds no words")
        return sentences

    def _pairs(self, sentences):
        """All (centre, context) pairs within the window, vectorised per offset."""
        centers, contexts = [], []
        for s in sentences:
            for off in range(1, self.window + 1):
                if off >= len(s):
                    break
                centers += [s[:-off], s[off:]]
                contexts += [s[off:], s[:-off]]
        if not centers:
            raise ValueError("Word2Vec.fit: no sentence has two or more words, so there are no pairs")
        return np.concatenate(centers), np.concatenate(contexts)

    @staticmethod
    def noise_distribution(counts):
        """Unigram counts raised to 3/4, normalised: the negative-sampling distribution."""
        p = np.asarray(counts, dtype=np.float64) ** 0.75
        return p / p.sum()

    # --- training ------------------------------------------------------------------------------
    def fit(self, corpus_token_ids, epochs=5, batch_pairs=8192, verbose=0):
        """Train on ``corpus_token_ids`` (a list of id sequences, or one 1-D id array).

        Returns ``{"loss": [mean loss per pair and epoch, ...]}``.
        """
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
            raise ValueError(f"Word2Vec.fit: epochs must be an int >= 1, got {epochs!r}")
        sentences = self._sentences(corpus_token_ids)
        centers, contexts = self._pairs(sentences)
        counts = np.bincount(np.concatenate(sentences), minlength=self.vocab_size)
        cumulative = np.cumsum(self.noise_distribution(counts))
        n_pairs = len(centers)
        total_steps = epochs * n_pairs
        history = {"loss": []}
        done = 0
        for epoch in range(epochs):
            order = self._rng.permutation(n_pairs)
            epoch_loss = 0.0
            for start in range(0, n_pairs, batch_pairs):
                idx = order[start:start + batch_pairs]
                u = self._rng.random((len(idx), self.negatives))
                negs = np.minimum(np.searchsorted(cumulative, u, side="right"), self.vocab_size - 1)
                lr = self.lr * max(1e-4, 1.0 - done / total_steps)
                epoch_loss += _core.sgns_step(self.w_in, self.w_out, np.ascontiguousarray(centers[idx]),
                                              np.ascontiguousarray(contexts[idx]),
                                              np.ascontiguousarray(negs, dtype=np.int64), lr)
                done += len(idx)
            history["loss"].append(epoch_loss / n_pairs)
            if verbose:
                print(f"epoch {epoch + 1}/{epochs}: loss {history['loss'][-1]:.4f} ({n_pairs} pairs)")
        return history

    # --- queries -------------------------------------------------------------------------------
    def _check_id(self, word_id):
        if isinstance(word_id, bool) or not isinstance(word_id, (int, np.integer)):
            raise TypeError(f"{self!r}: word id must be an int, got {type(word_id).__name__}")
        if not 0 <= word_id < self.vocab_size:
            raise ValueError(f"{self!r}: word id {word_id} outside [0, {self.vocab_size})")
        return int(word_id)

    def _unit(self):
        norms = np.linalg.norm(self.w_in, axis=1, keepdims=True)
        return self.w_in / np.maximum(norms, 1e-12)

    def similarity(self, a, b):
        """Cosine similarity of the vectors of ids ``a`` and ``b``."""
        unit = self._unit()
        return float(unit[self._check_id(a)] @ unit[self._check_id(b)])

    def most_similar(self, word_id, k=5):
        """The ``k`` ids closest to ``word_id`` by cosine similarity (itself excluded), as a list
        of ``(id, cosine)`` pairs, most similar first."""
        word_id = self._check_id(word_id)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"{self!r}: k must be an int >= 1, got {k!r}")
        unit = self._unit()
        sims = unit @ unit[word_id]
        sims[word_id] = -np.inf
        k = min(int(k), self.vocab_size - 1)
        top = np.argpartition(-sims, k - 1)[:k]
        top = top[np.argsort(-sims[top], kind="stable")]
        return [(int(i), float(sims[i])) for i in top]
