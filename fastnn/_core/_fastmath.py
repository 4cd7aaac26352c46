"""Accurate float32 exp, tanh and sigmoid that LLVM vectorises, for the numba kernels.

libm's expf/tanhf are scalar calls that stop LLVM from vectorising a loop. These are chains of
multiply-adds, one division and selects (AVX-512: 16 lanes), within ~1-2.5 ulp of the exact
value over the whole float32 range: tiny and subnormal inputs and results, saturation, +-inf,
NaN (propagates). They are the algorithms of ``kernels/vecmath.h`` (the C kernels' versions), see there.
float64 keeps libm, whose full precision the float64 gradient checks rely on.

numba compiles them with the calling kernel's options (its fastmath flags are handed down; and
_fast_tanh is inlined at numba IR level, ``inline="always"``: as a call, LLVM kept it out of
line and the loop scalar), so a caller takes ``error_model="numpy"`` (a Python
ZeroDivisionError check around a division keeps the loop scalar) and no ``fastmath``
reassociation: it destroys the exact two-part range reduction and the two-sum. Contraction into
FMAs only makes them more accurate (and faster): such kernels take ``fastmath=SAFE_FASTMATH``.
"""
import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

SAFE_FASTMATH = {"contract"}  # the fastmath flags a kernel calling these functions may use

_ONE = np.float32(1.0)
_MINUS_TWO = np.float32(-2.0)
_HALF = np.float32(0.5)
_ZERO = np.float32(0.0)
_INF = np.float32(np.inf)
_EXP_LO = np.float32(-104.0)  # exp rounds to 0 below (< 2^-150)
_EXP_HI = np.float32(89.0)  # exp > FLT_MAX above
_LOG2E = np.float32(1.44269504088896341)
_LN2_HI = np.float32(0.693359375)  # 9 bits: k * hi exact for |k| < 2^15
_LN2_LO = np.float32(-2.12194440e-4)  # ln 2 - hi
_P0, _P1, _P2 = np.float32(1.9875691500e-4), np.float32(1.3981999507e-3), np.float32(8.3334519073e-3)
_P3, _P4, _P5 = np.float32(4.1665795894e-2), np.float32(1.6666665459e-1), np.float32(5.0000001201e-1)
_TANH_CUT = np.float32(0.625)  # the polynomial below, the exp formula above
_Q0, _Q1, _Q2 = np.float32(-5.70498872745e-3), np.float32(2.06390887954e-2), np.float32(-5.37397155531e-2)
_Q3, _Q4 = np.float32(1.33314422036e-1), np.float32(-3.33332819422e-1)


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose IEEE bits are the int32 ``bits`` (a bitcast, no conversion)."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return sig, codegen


def _fast_exp(v):
    """exp(v). float32: k = round(v / ln 2), r = v - k ln 2 in two parts (k * hi and the
    subtraction exact, |r| <= ln 2 / 2), exp(r) = 1 + r + r^2 P(r) (Cephes' minimax P), times
    2^k as two factors (the first product exact, the second rounds once: subnormal results
    come out right); v clamped to [-104, 89], beyond which the result is 0 or inf anyway.
    float64: libm."""


@overload(_fast_exp)
def _fast_exp_impl(v):
    return lambda v: _exp_scaled(v, 0)


def _exp_scaled(v, s):
    """exp(v) * 2^s for an int s in [0, 100], rounded once (a sum of exponentials scaled so
    that its subnormal terms keep their bits); float64: libm and ldexp."""


@overload(_exp_scaled)
def _exp_scaled_impl(v, s):
    if v == types.float32:
        def exp32(v, s):
            lo = _EXP_LO - np.float32(s) * _LN2_HI  # below, the result rounds to 0
            x = lo if v < lo else v
            x = _EXP_HI if x > _EXP_HI else x
            x = _ZERO if x != x else x  # NaN: a defined k below; the result is NaN again
            kf = np.floor(x * _LOG2E + _HALF)
            r = x - kf * _LN2_HI
            r = r - kf * _LN2_LO
            p = _P0 * r + _P1
            p = p * r + _P2
            p = p * r + _P3
            p = p * r + _P4
            p = p * r + _P5
            y = (p * (r * r) + r) + _ONE
            k = np.int32(kf) + np.int32(s)
            h = k >> np.int32(1)
            y = y * _float32_from_bits((h + np.int32(127)) << np.int32(23)) \
                * _float32_from_bits((k - h + np.int32(127)) << np.int32(23))
            return v if v != v else y
        return exp32
    return lambda v, s: math.ldexp(math.exp(v), s)


def _fast_tanh(v):
    """tanh(v). float32: v + v^3 Q(v^2) (Cephes) for |v| < 0.625, else sign(v) (1 - 2e / (1 + e))
    with e = exp(-2|v|), exactly +-1 from where 2e rounds away against 1. float64: libm."""


@overload(_fast_tanh, inline="always")
def _fast_tanh_impl(v):
    if v == types.float32:
        def tanh32(v):
            a = abs(v)
            z = v * v
            q = _Q0 * z + _Q1
            q = q * z + _Q2
            q = q * z + _Q3
            q = q * z + _Q4
            small = v + (v * z) * q
            e = _fast_exp(_MINUS_TWO * a)
            big = _ONE - (e + e) / (_ONE + e)
            mag = abs(small) if a < _TANH_CUT else big  # NaN takes big, which is NaN
            return np.copysign(mag, v)  # also tanh(-0) = -0, which small rounds to +0
        return tanh32
    return lambda v: math.tanh(v)


def _fast_sigmoid(v):
    """sigmoid(v) = 1 / (1 + exp(-v)) via e = exp(-|v|), so neither sign overflows and the tail
    keeps its relative precision down to the subnormals: 1 / (1 + e) for v >= 0, e / (1 + e)
    below. float32 on _fast_exp with float32 constants only (a float64 literal turns the loop
    into float64 division at half the vector width), float64 on libm."""


@overload(_fast_sigmoid)
def _fast_sigmoid_impl(v):
    if v == types.float32:
        def sigmoid32(v):
            e = _fast_exp(-abs(v))
            return (_ONE if v >= _ZERO else e) / (_ONE + e)
        return sigmoid32

    def sigmoid64(v):
        e = math.exp(-abs(v))
        return (1.0 if v >= 0 else e) / (1.0 + e)
    return sigmoid64


def _exp_diff(a, b, s):
    """exp(a - b) * 2^s (an int s in [0, 100]) as if a - b were not rounded (softmax's
    exp(x - max)): float32 forms the rounding error of the difference exactly (two-sum) and
    corrects the exponential by it to first order; a difference that rounds loses up to
    |a - b| * 2^-24 relative, 64 ulp at 88. float64: libm on the difference."""


@overload(_exp_diff)
def _exp_diff_impl(a, b, s):
    if a == types.float32 and b == types.float32:
        def exp_diff32(a, b, s):
            d = a - b
            t = d - a
            err = (a - (d - t)) + (-b - t)
            err = err if err == err else _ZERO  # NaN for an infinite or NaN d: no correction
            e = _exp_scaled(d, s)
            return e + e * err if e < _INF else e  # inf * 0 would be NaN
        return exp_diff32
    return lambda a, b, s: math.ldexp(math.exp(a - b), s)
