"""word2vec on a corpus with known word groups: nearest neighbours recover the groups.

Sentences are drawn from one topic at a time (animals, fruit, vehicles, ...), so words of a topic
share contexts; skip-gram with negative sampling should place them together. Prints the
neighbours of a few words and the fraction of top-k neighbours inside the word's own group.

    python examples/word2vec_groups.py
"""
import time

import numpy as np

from fastnn.models.word2vec import Word2Vec

GROUPS = {
    "animals": ["cat", "dog", "horse", "cow", "sheep", "goat"],
    "fruit": ["apple", "pear", "plum", "grape", "melon", "cherry"],
    "vehicles": ["car", "bus", "train", "truck", "bike", "tram"],
    "colours": ["red", "blue", "green", "yellow", "purple", "orange"],
    "weather": ["rain", "snow", "wind", "storm", "fog", "sun"],
}


def make_corpus(n_sentences=1500, length=10, seed=0):
    rng = np.random.default_rng(seed)
    vocab = [w for words in GROUPS.values() for w in words]
    group_of = np.repeat(np.arange(len(GROUPS)), [len(w) for w in GROUPS.values()])
    members = [np.flatnonzero(group_of == g) for g in range(len(GROUPS))]
    sentences = []
    for _ in range(n_sentences):
        g = rng.integers(len(GROUPS))
        s = rng.choice(members[g], length)
        noise = rng.random(length) < 0.1  # a little cross-topic noise
        s[noise] = rng.integers(len(vocab), size=noise.sum())
        sentences.append(s)
    return vocab, group_of, sentences


def group_purity(model, group_of, k):
    hits = [sum(group_of[j] == group_of[i] for j, _ in model.most_similar(i, k)) for i in range(len(group_of))]
    return float(np.mean(hits)) / k


def main():
    vocab, group_of, sentences = make_corpus()
    model = Word2Vec(len(vocab), dim=16, window=2, negatives=5, lr=0.025, seed=0)
    t0 = time.perf_counter()
    history = model.fit(sentences, epochs=5)
    seconds = time.perf_counter() - t0
    print(f"trained {len(sentences)} sentences x 5 epochs in {seconds:.2f} s; "
          f"loss {history['loss'][0]:.3f} -> {history['loss'][-1]:.3f}")
    for word in ("cat", "apple", "train", "blue", "snow"):
        i = vocab.index(word)
        near = ", ".join(f"{vocab[j]} ({s:.2f})" for j, s in model.most_similar(i, 5))
        print(f"  {word:6s} -> {near}")
    purity = group_purity(model, group_of, k=5)
    print(f"top-5 neighbours in the word's own group: {purity:.1%} (chance {5 / (len(vocab) - 1):.1%})")
    return purity


if __name__ == "__main__":
    main()
