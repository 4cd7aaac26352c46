"""Slow, obviously-correct NumPy versions of every kernel in ``fastnn._core``: the test oracle.

Same names and signatures as the compiled kernels (see ``fastnn/_core/__init__.py``); outputs are
written into the arrays passed in. Clarity over speed: plain loops and einsum.
"""
import numpy as np

# ==== GEMM, dense and convolution (section owned by the Cython-core work) ====================

# ==== pooling, upsampling, batch norm, activations, losses, optimizers (numba work) ==========

# ==== recurrent cells and embedding (sequence-model work) =====================================
