"""What the float32 convolution-route tests share (test_conv_strided_implicit, test_conv_subpixel,
test_conv_implicit_dw): float32 normals, a tolerance scaled to the result, and the skip for
machines without the AVX-512 microkernel those routes run on."""
import numpy as np
import pytest

from fastnn._core import _conv

needs_microkernel = pytest.mark.skipif(not _conv._microkernel_available(),
                                       reason="the route needs the AVX-512 microkernel")


def rand(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def assert_close(actual, expected, tol=2e-5):
    scale = max(1.0, float(np.max(np.abs(expected))) if expected.size else 1.0)
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)
