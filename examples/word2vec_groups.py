"""word2vec on a corpus with known word groups: nearest neighbours recover the groups.

Sentences are drawn from one topic at a time (animals, fruit, vehicles, ...), so words of a topic
share contexts; skip-gram with negative sampling should place them together. Prints the
neighbours of a few words and the fraction of top-k neighbours inside the word's own group.

Quality bar: at least 80% of the top-5 neighbours in the word's own group (chance: 17%).

    python examples/word2vec_groups.py
"""
import time

import numpy as np

from fastnn.datasets import grouped_word_corpus as make_corpus
from fastnn.models.word2vec import Word2Vec


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
