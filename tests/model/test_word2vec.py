"""word2vec (skip-gram, negative sampling): kernel against the reference, sparse updates,
neighbours recover generated word groups, determinism, bad input."""
import numpy as np
import pytest

from fastnn import _core
from fastnn._core import reference as ref
from fastnn.models.word2vec import Word2Vec


def grouped_corpus(n_groups=4, per_group=5, n_sentences=600, length=8, seed=0):
    rng = np.random.default_rng(seed)
    group_of = np.repeat(np.arange(n_groups), per_group)
    sentences = [rng.choice(np.flatnonzero(group_of == rng.integers(n_groups)), length)
                 for _ in range(n_sentences)]
    return group_of, sentences


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sgns_kernel_equals_reference(dtype):
    rng = np.random.default_rng(0)
    w_in = rng.standard_normal((9, 4)).astype(dtype)
    w_out = rng.standard_normal((9, 4)).astype(dtype)
    centers = rng.integers(0, 9, 30)
    contexts = rng.integers(0, 9, 30)
    negatives = rng.integers(0, 9, (30, 3))  # repeats and collisions with the context included
    a_in, a_out, b_in, b_out = w_in.copy(), w_out.copy(), w_in.copy(), w_out.copy()
    loss = _core.sgns_step(a_in, a_out, centers, contexts, negatives, 0.1)
    loss_ref = ref.sgns_step(b_in, b_out, centers, contexts, negatives, 0.1)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(loss, loss_ref, rtol=tol)
    np.testing.assert_allclose(a_in, b_in, rtol=tol, atol=tol)
    np.testing.assert_allclose(a_out, b_out, rtol=tol, atol=tol)


def test_sgns_step_is_a_descent_step_touching_only_used_rows():
    rng = np.random.default_rng(1)
    w_in = rng.standard_normal((10, 3))
    w_out = rng.standard_normal((10, 3))
    centers, contexts, negatives = np.array([2]), np.array([5]), np.array([[7, 8]])
    before_in, before_out = w_in.copy(), w_out.copy()
    loss0 = _core.sgns_step(w_in.copy(), w_out.copy(), centers, contexts, negatives, 0.0)
    _core.sgns_step(w_in, w_out, centers, contexts, negatives, 0.05)
    loss1 = ref.sgns_step(w_in.copy(), w_out.copy(), centers, contexts, negatives, 0.0)
    assert loss1 < loss0
    changed_in = np.flatnonzero((w_in != before_in).any(axis=1))
    changed_out = np.flatnonzero((w_out != before_out).any(axis=1))
    assert changed_in.tolist() == [2] and changed_out.tolist() == [5, 7, 8]


def test_neighbours_recover_groups_and_seed_is_deterministic():
    group_of, sentences = grouped_corpus()
    model = Word2Vec(len(group_of), dim=12, window=2, negatives=4, seed=3)
    history = model.fit(sentences, epochs=4)
    assert history["loss"][-1] < history["loss"][0]
    hits = [sum(group_of[j] == group_of[i] for j, _ in model.most_similar(i, 4))
            for i in range(len(group_of))]
    assert np.mean(hits) / 4 >= 0.9  # chance is 4/19
    near = model.most_similar(0, 3)
    assert len(near) == 3 and all(j != 0 for j, _ in near)
    assert near[0][1] >= near[1][1] >= near[2][1]
    assert np.isclose(model.similarity(0, near[0][0]), near[0][1])
    assert model.embeddings.shape == (20, 12) and model.embeddings is model.w_in

    again = Word2Vec(len(group_of), dim=12, window=2, negatives=4, seed=3)
    again.fit(sentences, epochs=4)
    np.testing.assert_array_equal(again.embeddings, model.embeddings)


def test_noise_distribution_is_unigram_to_three_quarters():
    p = Word2Vec.noise_distribution([16, 1, 0])
    np.testing.assert_allclose(p, np.array([8.0, 1.0, 0.0]) / 9.0)


def test_word2vec_bad_input():
    model = Word2Vec(5, 3, seed=0)
    with pytest.raises(ValueError, match=r"ids in \[0, 7\].*\[0, 5\)"):
        model.fit([[0, 7, 1]])
    with pytest.raises(TypeError, match="integer ids"):
        model.fit([[0.5, 1.0]])
    with pytest.raises(ValueError, match="no pairs"):
        model.fit([[1], [2]])
    with pytest.raises(ValueError, match="outside"):
        model.most_similar(5)
    with pytest.raises(ValueError, match="dim"):
        Word2Vec(5, 0)
    with pytest.raises(ValueError, match="sgns_step.*contexts"):
        _core.sgns_step(np.zeros((3, 2)), np.zeros((3, 2)), np.array([0]), np.array([3]),
                        np.zeros((1, 1), np.int64), 0.1)
