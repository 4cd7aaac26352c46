"""fnn.metrics.kl_divergence and js_divergence between discrete distributions."""
import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy

import fastnn as fnn


def test_kl_and_js_match_scipy_along_any_axis():
    rng = np.random.default_rng(0)
    p, q = rng.dirichlet(np.ones(6), 4), rng.dirichlet(np.ones(6), 4)
    np.testing.assert_allclose(fnn.metrics.kl_divergence(p, q), entropy(p, q, axis=-1), rtol=1e-12)
    np.testing.assert_allclose(fnn.metrics.kl_divergence(p.T, q.T, axis=0), entropy(p, q, axis=-1), rtol=1e-12)
    # scipy's jensenshannon is the distance: the square root of the divergence
    np.testing.assert_allclose(fnn.metrics.js_divergence(p, q), jensenshannon(p, q, axis=-1) ** 2, rtol=1e-10)
    assert isinstance(fnn.metrics.kl_divergence(p[0], q[0]), float)


def test_kl_is_asymmetric_js_is_symmetric_and_bounded():
    p, q = np.array([0.5, 0.5, 0.0]), np.array([0.1, 0.6, 0.3])
    kl = fnn.metrics.kl_divergence
    js = fnn.metrics.js_divergence
    assert kl(p, q) != pytest.approx(kl(q, p))
    assert kl(q, p) == np.inf            # q puts mass where p has none
    assert kl(p, p) == 0 and js(p, p) == 0
    assert js(p, q) == pytest.approx(js(q, p), rel=1e-15)
    assert js([1, 0], [0, 1]) == pytest.approx(np.log(2))   # disjoint supports: the maximum
    assert 0 < js(p, q) < np.log(2)


def test_divergences_reject_negative_probabilities_and_bad_shapes():
    with pytest.raises(ValueError, match="kl_divergence: probabilities must be >= 0"):
        fnn.metrics.kl_divergence([0.5, -0.5], [0.5, 0.5])
    with pytest.raises(ValueError, match="js_divergence: p .* and q .* do not broadcast"):
        fnn.metrics.js_divergence(np.ones(3) / 3, np.ones(4) / 4)
