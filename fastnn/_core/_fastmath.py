"""Vectorisable float32 tanh and sigmoid for numba kernels (the recurrent cells, activations).

libm's tanhf/expf are scalar calls that stop LLVM from vectorising a loop; a rational
approximation is a chain of FMAs and one division, which it vectorises (AVX-512: 16 lanes).
float64 keeps libm, whose full precision the float64 gradient checks rely on.
"""
import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload


def _fast_tanh(v):
    """tanh: a rational minimax approximation (Eigen's) in float32, |error| < 4e-7, which LLVM
    vectorises (libm's tanhf is a scalar call, ~5x slower, and the gate math of a step is ~5
    transcendentals per hidden unit); float64 keeps libm's tanh (gradient checks need it)."""


@overload(_fast_tanh)
def _fast_tanh_impl(v):
    if v == types.float32:
        def tanh32(v):
            # clamp to [-c, c] without branches (keeps the loop vectorisable)
            c = np.float32(7.99881172180175781)
            x = np.float32(0.5) * (abs(v + c) - abs(v - c))
            x2 = x * x
            p = x2 * np.float32(-2.76076847742355e-16) + np.float32(2.00018790482477e-13)
            p = x2 * p + np.float32(-8.60467152213735e-11)
            p = x2 * p + np.float32(5.12229709037114e-08)
            p = x2 * p + np.float32(1.48572235717979e-05)
            p = x2 * p + np.float32(6.37261928875436e-04)
            p = x2 * p + np.float32(4.89352455891786e-03)
            q = x2 * np.float32(1.19825839466702e-06) + np.float32(1.18534705686654e-04)
            q = x2 * q + np.float32(2.26843463243900e-03)
            q = x2 * q + np.float32(4.89352518554385e-03)
            r = x * p / q
            # the clamp stops at 0.99999988; float32 tanh is exactly +-1 from |v| = 9 on (a
            # select, still vectorised; NaN fails the test and stays NaN)
            return np.float32(math.copysign(1.0, v)) if abs(v) >= np.float32(9.0) else r
        return tanh32
    return lambda v: math.tanh(v)


def _fast_sigmoid(v):
    """sigmoid(v) = 1 / (1 + exp(-v)) via e = exp(-|v|), so neither sign overflows and the tail
    keeps its relative precision (sigmoid(-20) = 2e-9): float32 on the vectorised exp with
    float32 constants only (a float64 literal turned the loop into float64 division at half
    the vector width), float64 on libm."""


@overload(_fast_sigmoid)
def _fast_sigmoid_impl(v):
    if v == types.float32:
        def sigmoid32(v):
            one = np.float32(1.0)
            e = _fast_exp(-abs(v))
            return (one if v >= np.float32(0.0) else e) / (one + e)
        return sigmoid32

    def sigmoid64(v):
        e = math.exp(-abs(v))
        return (1.0 if v >= 0 else e) / (1.0 + e)
    return sigmoid64


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose IEEE bits are the int32 ``bits`` (a bitcast, no conversion)."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return sig, codegen


def _fast_exp(v):
    """exp: in float32 Cephes' expf (range reduction by ln 2 in two parts, a degree-5
    polynomial, 2^n put in the exponent bits; |relative error| < 2e-7), which LLVM vectorises;
    0 below -87.33 (where float32 turns denormal), inf above 88.7228, NaN stays NaN. float64
    keeps libm."""


@overload(_fast_exp)
def _fast_exp_impl(v):
    if v == types.float32:
        def exp32(v):
            x = min(max(v, np.float32(-87.33)), np.float32(88.7228))
            n = np.floor(x * np.float32(1.44269504088896341) + np.float32(0.5))
            r = x - n * np.float32(0.693359375) + n * np.float32(2.12194440e-4)
            p = np.float32(1.9875691500e-4)
            p = p * r + np.float32(1.3981999507e-3)
            p = p * r + np.float32(8.3334519073e-3)
            p = p * r + np.float32(4.1665795894e-2)
            p = p * r + np.float32(1.6666665459e-1)
            p = p * r + np.float32(5.0000001201e-1)
            # 2^n as two halves: n reaches 128 just below the overflow threshold
            k = np.int32(n)
            h = k >> np.int32(1)
            y = (p * r * r + r + np.float32(1.0)) * _float32_from_bits((h + np.int32(127)) << np.int32(23)) \
                * _float32_from_bits((k - h + np.int32(127)) << np.int32(23))
            y = np.float32(0.0) if v < np.float32(-87.33) else y
            y = np.float32(np.inf) if v > np.float32(88.7228) else y
            return v if v != v else y
        return exp32
    return lambda v: math.exp(v)
