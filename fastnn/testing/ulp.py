"""Errors in ulps: how far a float32 result is from the float64 value it approximates.

    from fastnn.testing.ulp import ulp_error, assert_ulp
    err = ulp_error(y32, np.tanh(x.astype(np.float64)))   # per element, float64 array
    assert_ulp(y32, np.tanh(x.astype(np.float64)), 4, inputs=x)

The unit of an element is the spacing of float32 numbers at the float64 value rounded to float32
(``np.spacing``): 2^(e - 23) in the binade [2^e, 2^(e+1)), and the smallest subnormal 2^-149 for
results below the smallest normal, so a tiny result is judged by its absolute error there. A
correctly rounded result is within 0.5 ulp. The error is per element, never relative to the
largest one (which hides a wrong small value behind a large one).

Special values: NaN vs NaN and equal infinities are exact (0); a NaN or infinity where the other
side has none, or an infinity of the other sign, is an infinite error. The sign of a zero is not
judged. A finite float64 value that rounds to a float32 infinity must be returned as that
infinity.
"""
import numpy as np

__all__ = ["ulp_error", "assert_ulp", "float32_sweep"]


def ulp_error(actual, expected):
    """Per-element ``|actual - expected| / ulp(float32(expected))`` as float64 (see module doc).

    ``actual`` is the float32 result, ``expected`` the float64 one (computed from the same inputs);
    they broadcast against each other."""
    actual = np.asarray(actual)
    if actual.dtype != np.float32:
        raise TypeError(f"ulp_error: actual must be float32, got {actual.dtype}")
    expected = np.asarray(expected, dtype=np.float64)
    actual, expected = np.broadcast_arrays(actual.astype(np.float64), expected)
    with np.errstate(over="ignore", invalid="ignore"):
        rounded = expected.astype(np.float32)
        unit = np.spacing(np.abs(rounded)).astype(np.float64)
        err = np.abs(actual - expected) / unit
    a_nan, e_nan = np.isnan(actual), np.isnan(expected)
    a_inf, r_inf = np.isinf(actual), np.isinf(rounded)
    err = np.where(a_nan | e_nan, np.where(a_nan & e_nan, 0.0, np.inf), err)
    both_inf = a_inf & r_inf & ~e_nan
    err = np.where(both_inf, np.where(actual == rounded, 0.0, np.inf), err)
    err = np.where((a_inf ^ r_inf) & ~(a_nan | e_nan), np.inf, err)
    return err


def assert_ulp(actual, expected, max_ulp, inputs=None, what="result"):
    """Raise AssertionError naming the worst elements when any ``ulp_error`` exceeds ``max_ulp``.

    ``inputs`` (same shape, optional): shown next to the worst elements."""
    err = ulp_error(actual, expected)
    bad = ~(err <= max_ulp)
    if not bad.any():
        return err
    actual_b, expected_b = np.broadcast_arrays(np.asarray(actual), np.asarray(expected))
    flat = np.flatnonzero(bad)
    worst = flat[np.argsort(-err.ravel()[flat], kind="stable")[:8]]
    rows = []
    for i in worst:
        source = "" if inputs is None else f"input {np.ravel(np.broadcast_to(inputs, err.shape))[i]!r}: "
        rows.append(f"  {source}got {actual_b.ravel()[i]!r}, want {expected_b.ravel()[i]!r} "
                    f"({err.ravel()[i]:.3g} ulp)")
    raise AssertionError(f"{what}: {flat.size} of {err.size} elements beyond {max_ulp} ulp "
                         f"(max {err.max():.3g}); worst:\n" + "\n".join(rows))


def float32_sweep(points=4000, specials=True, around=(), seed=0):
    """float32 test inputs over the whole range, both signs: ``points`` log-spaced magnitudes
    from 1e-38 to 104 (past exp's overflow at 88.7 and its subnormal results down to -104) and as
    many uniform ones in [-20, 20], the subnormals' ends, the smallest normal, 0 and -0; with
    ``specials`` also +-inf and NaN; and the 64 neighbours on each side of every value in
    ``around`` (an implementation's cutoffs) and of its negation."""
    mags = np.logspace(-38, np.log10(104.0), points)
    tiny = np.float32(np.finfo(np.float32).tiny)
    sub = np.array([2.0**-149, 2.0**-148, 3 * 2.0**-149, 2.0**-140, 2.0**-130,
                    float(tiny) - 2.0**-149, float(tiny), 1e-40, 1e-45], np.float32)
    parts = [mags.astype(np.float32), sub, np.array([0.0], np.float32),
             np.random.default_rng(seed).uniform(-20, 20, points).astype(np.float32)]
    steps = np.arange(-64, 65)
    for c in around:
        near = np.int64(np.float32(abs(c)).view(np.int32)) + steps
        near = near[(near >= 0) & (near <= 0x7F800000)]  # 0 up to inf, no NaN bit patterns
        parts.append(near.astype(np.int32).view(np.float32))
    x = np.concatenate(parts)
    x = np.concatenate([x, -x])  # -0 and the negative side
    if specials:
        x = np.concatenate([x, np.array([np.inf, -np.inf, np.nan], np.float32)])
    return x
