"""What the float32 convolution-route tests share (test_conv_strided_implicit, test_conv_subpixel,
test_conv_implicit_dw): float32 normals, a tolerance scaled to the result, and the skip for
ISA levels without the convolution kernels those routes run on (the baseline)."""
import itertools

import numpy as np
import pytest

from fastnn._core import _conv

needs_microkernel = pytest.mark.skipif(not _conv._conv_kernels_available(),
                                       reason="the route runs on the AVX2/AVX-512 convolution "
                                              "kernels (FASTNN_MAX_ISA=baseline, or the CPU)")


def rand(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def assert_close(actual, expected, tol=2e-5):
    scale = max(1.0, float(np.max(np.abs(expected))) if expected.size else 1.0)
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


def conv_cases(strides, sizes):
    """(stride, kernel, padding, h, w) for the strides, kernels 1..5 (some below the stride),
    paddings 0..K-1 and images (h, w) (ragged, H != W) where both output sizes are >= 1."""
    out = []
    for s, k in itertools.product(strides, range(1, 6)):
        for p in range(k):
            for h, w in sizes:
                if (h + 2 * p - k) // s + 1 >= 1 and (w + 2 * p - k) // s + 1 >= 1:
                    out.append((s, k, p, h, w))
    return out
