"""fastnn's compiled core: the only place that loops over elements.

Every kernel below exists for float32 and float64, takes C-contiguous arrays of one dtype, and
writes into outputs the caller allocated, so a layer reuses its buffers from step to step. The
functions exported here are thin Python wrappers that validate ranks, shapes, dtypes and
contiguity (raising ``TypeError``/``ValueError`` that name the kernel and the shapes) before any
compiled code runs. ``fastnn._core.reference`` holds a plain NumPy version of each, with the same
signature: the test oracle.

Conventions: images NCHW; ``stride``/``padding``/``kernel_size`` are ``(h, w)`` pairs (an int is
accepted); "dX :=" overwrites, "dW +=" accumulates (parameter gradients accumulate across
backward calls, as in PyTorch); an optional gradient output given as ``None`` is skipped.

GEMM and dense layers (Cython + BLAS, ``_blas.pyx``)
    gemm(a, b, out, trans_a=False, trans_b=False, alpha=1.0, beta=0.0)
        out := alpha * op(a) @ op(b) + beta * out, all 2-D
    dense_forward(x, weight, bias, out, activation="none", negative_slope=0.01)
        out := act(x @ weight.T + bias); x (M, K), weight (N, K), bias (N,) or None, out (M, N);
        activation in ACTIVATIONS; the bias and activation are fused into the GEMM epilogue
    dense_backward(x, weight, dy, dx, dweight, dbias, accumulate=True, relu=False)
        dx := dy @ weight; dweight += dy.T @ x; dbias += dy.sum(0); accumulate=False: dweight
        and dbias := (what a layer uses on gradients zero_grad marked zero); relu: dx then
        through the backward of the ReLU whose output is x (in the GEMM's epilogue)

Convolution (Cython, ``_conv.pyx``)
    im2col(x, kernel_size, stride, padding, out)
        x (N, C, H, W) -> out (N, C*KH*KW, OH*OW); rows ordered (c, kh, kw); zero padding
    col2im(col, kernel_size, stride, padding, out)
        the adjoint of im2col: out (N, C, H, W) := sum of the columns back onto the image
    conv2d_forward(x, weight, bias, out, stride, padding)
        x (N, C, H, W), weight (O, C, KH, KW), bias (O,) or None, out (N, O, OH, OW),
        OH = (H + 2*ph - KH) // sh + 1 (cross-correlation, as torch.nn.functional.conv2d)
    conv2d_backward(x, weight, dy, dx, dweight, dbias, stride, padding, relu=False,
                    negative_slope=None)
        dx := grad wrt x; dweight += grad wrt weight; dbias += dy.sum((0, 2, 3)); relu: dx
        then through the backward of the (leaky) ReLU whose output is x
    conv_transpose2d_forward(x, weight, bias, out, stride, padding)
        x (N, Cin, H, W), weight (Cin, Cout, KH, KW), out (N, Cout, OH, OW) with
        OH = (H - 1)*sh - 2*ph + KH + oph; the output padding oph (0 <= oph < max(sh, 1)) is
        implied by out.shape (as torch.nn.functional.conv_transpose2d)
    conv_transpose2d_backward(x, weight, dy, dx, dweight, dbias, stride, padding)

General convolution: dilation, groups, asymmetric padding (numba, ``conv_general.py``)
    conv2d_general_forward(x, weight, bias, out, stride, padding, dilation, groups, route=None)
        weight (O, C/G, KH, KW); output channel o reads the C/G channels of its group
        o // (O/G); padding an int, an (h, w) pair or (top, bottom, left, right);
        OH = (H + top + bottom - dh*(KH - 1) - 1) // sh + 1 (as torch's conv2d with dilation
        and groups)
    conv2d_general_backward(x, weight, dy, dx, dweight, dbias, stride, padding, dilation, groups,
                            route=None)
    conv2d_route(in_channels, out_channels, groups)   "depthwise" (groups == C: a direct
        sliding window per plane) or "im2col" (per-sample, per-group im2col + BLAS GEMM)

Pooling and upsampling (numba, ``pool.py``; the 2x2 max pool and max pool backward Cython,
``_basic.pyx``)
    maxpool2d_forward(x, kernel_size, stride, padding, out, argmax)
        padding counts as -inf; argmax int64, shape of out: flat index h*W + w into x's plane
        (first maximum wins on ties, as PyTorch)
    maxpool2d_backward(dy, argmax, dx)                    dx := scatter-add of dy at argmax
    avgpool2d_forward(x, kernel_size, stride, padding, out)   count_include_pad=True (PyTorch)
    avgpool2d_backward(dy, kernel_size, stride, padding, dx)
    upsample_nearest2d_forward(x, scale, out)             out (N, C, H*s, W*s), s an int >= 1
    upsample_nearest2d_backward(dy, scale, dx)
    (pooling's stride may be None: it then equals kernel_size)

Batch normalisation (numba, ``norm.py``); x is (N, C, L): a (N, C) input is viewed as (N, C, 1)
    batchnorm_forward_train(x, weight, bias, running_mean, running_var, momentum, eps,
                            out, save_mean, save_invstd, relu=False, residual=None)
        statistics over (N, L) in one sweep; out := (x - mean) * invstd * weight + bias
        (residual: then + residual, a shortcut's sum; relu: then max(out, 0), the ReLU after a
        BatchNorm fused into its pass);
        running_mean := (1-m)*running_mean + m*mean; running_var := (1-m)*running_var
        + m*var*n/(n-1) (unbiased, n = N*L); save_invstd := 1/sqrt(var_biased + eps)
    batchnorm_forward_eval(x, weight, bias, running_mean, running_var, eps, out, relu=False)
    batchnorm_backward(dy, x, weight, mean, invstd, dx, dweight, dbias, batch_stats=True,
                       relu_out=None, dresidual=None)
        batch_stats=True: the training-mode gradient through the batch statistics;
        batch_stats=False: mean/invstd are constants (inference mode); relu_out (the output of
        a relu=True forward): dy is taken through that ReLU first (0 where relu_out <= 0);
        dresidual := that dy too (the residual's gradient of a residual= forward), same pass
    x may be any (N, C, ...) shape; weight/bias None mean 1/0; running_mean/running_var None
    skip the update; dx/dweight/dbias None are skipped; training with one value per channel
    raises (the variance is undefined), as PyTorch does

Local response normalisation (numba, ``lrn.py``), across channels, as torch's
    lrn_forward(x, size, alpha, beta, k, out, scale)
        scale := k + alpha/size * sum of x**2 over channels c - size//2 .. c + (size-1)//2;
        out := x * scale**-beta; x (N, C, ...) with 3 or more dimensions
    lrn_backward(x, out, scale, dy, size, alpha, beta, dx)

Activations (numba, ``activation.py``; relu Cython, ``_basic.pyx``); elementwise ones take any shape
    relu_forward(x, out)                      relu_backward(x, dy, dx)       (0 where x <= 0)
    leaky_relu_forward(x, negative_slope, out) leaky_relu_backward(x, dy, negative_slope, dx)
    sigmoid_forward(x, out)  (stable both signs)  sigmoid_backward(y, dy, dx)  dx := dy*y*(1-y)
    tanh_forward(x, out)                      tanh_backward(y, dy, dx)       dx := dy*(1-y*y)
    softmax_forward(x, out)                   softmax_backward(y, dy, dx)    x (..., C), last axis
    log_softmax_forward(x, out)               x (M, C)
    add_relu_forward(a, b, out, negative_slope=None)     out := relu(a + b) (a residual sum and
        the ReLU after it in one pass; leaky with negative_slope >= 0) (``merge.py``)
    add_relu_backward(y, dy, dx, dx2=None, negative_slope=None)   dx (and dx2) := dy through
        that ReLU, from its output y: the gradient of both summands in one pass

Losses (numba, ``loss.py``; the integer-label one Cython, ``_basic.pyx``), mean over the M rows
    softmax_cross_entropy_forward(logits, target, probs) -> float
        logits (M, C), target int64 (M,) in [0, C), probs (M, C) := softmax(logits)
    softmax_cross_entropy_backward(probs, target, scale, dlogits)
        dlogits := scale * (probs - onehot(target)) / M
    soft_cross_entropy_forward(logits, target_probs, probs) -> float
    soft_cross_entropy_backward(probs, target_probs, scale, dlogits)
        dlogits := scale * (probs * target_probs.sum(1) - target_probs) / M

Optimizer updates (numba, ``optim.py``; Adam Cython, ``_basic.pyx``), one pass over each parameter, PyTorch's rules;
param/grad/state arrays share one shape; scalars are Python floats/ints
    sgd_update(param, grad, momentum_buf, lr, momentum, dampening, nesterov, weight_decay, first_step)
        momentum_buf may be None when momentum == 0
    adagrad_update(param, grad, state_sum, lr, lr_decay, weight_decay, eps, step)
    rmsprop_update(param, grad, square_avg, lr, alpha, eps, weight_decay)
    adam_update(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step, decoupled)
        decoupled=False: Adam (L2 added to the gradient); True: AdamW (param *= 1 - lr*wd)

Recurrent sequences (Cython, ``_recurrent.pyx``), embedding and word2vec (numba, ``recurrent.py``);
time-major (T, N, .),
xw (T, N, G*H) := x @ w_ih.T + b_ih is computed by the caller (one GEMM), gates in PyTorch order,
hs and cs (T+1, N, H) with hs[0] = h0 and cs[0] = c0 filled in by the caller
    embedding_forward(indices, weight, out)      indices int64 (M,); out (M, D) := weight[indices]
    embedding_backward(indices, dy, dweight)     dweight[indices[m]] += dy[m] (repeats add up)
    rnn_forward(xw, w_hh, b_hh, hs)              hs[t+1] := tanh(xw[t] + hs[t] @ w_hh.T + b_hh)
    rnn_backward(w_hh, hs, dhs, dpre, dh0)       dpre := dL/d(pre-activations), dh0 := dL/dh0
    lstm_forward(xw, w_hh, b_hh, hs, cs, gates)  gates (T, N, 4H) := activated i, f, g, o
    lstm_backward(w_hh, cs, gates, dhs, dpre, dh0, dc0)
    gru_forward(xw, w_hh, b_hh, hs, gates, hn)   gates r, z, n; hn := h_t @ W_hn.T + b_hn
    gru_backward(w_hh, hs, gates, hn, dhs, dpre_x, dpre_h, dh0)
        dpre_x := dL/dxw; dpre_h := dL/d(h @ w_hh.T + b_hh) (n block times r)
    sgns_step(w_in, w_out, centers, contexts, negatives, lr) -> float
        skip-gram negative-sampling SGD in place, touching only the rows used; summed loss

Newer families (numba, one module each)
    gelu_forward/backward, silu_forward/backward, elu_forward/backward (``smooth.py``)
        elementwise, computed in float64 and rounded once
    layer_norm_forward(x, weight, bias, eps, out, mean, invstd), layer_norm_backward(...)
        rows (M, D) of any (..., *normalized_shape) (``layer_norm.py``)
    adaptive_avgpool2d_forward(x, out), adaptive_avgpool2d_backward(dy, dx) (``pool.py``)
        PyTorch's adaptive bins
    masked_softmax_forward(scores, scale, mask, out), masked_softmax_backward(p, dp, scale, ds)
        attention's scaled, masked row softmax (B, L, S) and its backward (``attention.py``,
        compiled: its rows in ``kernels/attention.h``)
    attention_forward(q, k, v, num_heads, scale, mask, p, ctx, drop=None, p_used=None)
    attention_backward(q, k, v, num_heads, scale, p, p_used, drop, dctx, dq, dk, dv)
        scaled dot-product attention per batch and head on (N*L, E) rows (column blocks of a
        packed projection read in place) and its gradients (``attention.py``)

The kernels of ``_basic.pyx`` (wrappers in ``basic.py``) are those of a plain dense or conv
model's training step: compiled at install, such a step imports no numba and compiles nothing.
Importing ``fastnn._core`` loads nothing heavy: each family's module (and numba) is imported on
first use of one of its kernels.
"""
import importlib

ACTIVATIONS = ("none", "relu", "leaky_relu", "sigmoid", "tanh")

_FAMILIES = {
    "_blas": ("gemm", "dense_forward", "dense_backward"),
    "basic": ("relu_forward", "relu_backward", "maxpool2d_forward", "maxpool2d_backward",
              "softmax_cross_entropy_forward", "softmax_cross_entropy_backward", "adam_update"),
    "_conv": ("im2col", "col2im", "conv2d_forward", "conv2d_backward",
                  "conv_transpose2d_forward", "conv_transpose2d_backward"),
    "conv_general": ("conv2d_general_forward", "conv2d_general_backward", "conv2d_route"),
    "pool": ("avgpool2d_forward",
             "avgpool2d_backward", "upsample_nearest2d_forward", "upsample_nearest2d_backward",
             "adaptive_avgpool2d_forward", "adaptive_avgpool2d_backward"),
    "norm": ("batchnorm_forward_train", "batchnorm_forward_eval", "batchnorm_backward"),
    "lrn": ("lrn_forward", "lrn_backward"),
    "merge": ("add_relu_forward", "add_relu_backward"),
    "activation": ("leaky_relu_forward", "leaky_relu_backward",
                   "sigmoid_forward", "sigmoid_backward", "tanh_forward", "tanh_backward",
                   "softmax_forward", "softmax_backward", "log_softmax_forward"),
    "smooth": ("gelu_forward", "gelu_backward", "silu_forward", "silu_backward", "elu_forward",
               "elu_backward"),
    "layer_norm": ("layer_norm_forward", "layer_norm_backward"),
    "attention": ("masked_softmax_forward", "masked_softmax_backward", "attention_forward",
                  "attention_backward"),
    "loss": ("soft_cross_entropy_forward", "soft_cross_entropy_backward"),
    "optim": ("sgd_update", "adagrad_update", "rmsprop_update"),
    "_recurrent": ("rnn_forward", "rnn_backward", "lstm_forward", "lstm_backward",
                   "gru_forward", "gru_backward"),
    "recurrent": ("embedding_forward", "embedding_backward", "sgns_step"),
}
_KERNEL_MODULE = {name: family for family, names in _FAMILIES.items() for name in names}

__all__ = sorted(_KERNEL_MODULE) + ["ACTIVATIONS"]

# Reachable here for fastnn's own layers, so that nothing outside _core imports its private
# modules, but not the contract above (no reference.py version, not in __all__): the recurrent
# layers' whole-layer calls (validated as the kernels are) and the shared argument checks.
# name -> (module, its name there)
_PRIVATE = {name: ("_recurrent", name) for name in (
    "rnn_forward_full", "lstm_forward_full", "gru_forward_full", "rnn_backward_full",
    "lstm_backward_full", "gru_backward_full", "embedded_projection", "embedded_input_grads")}
_PRIVATE.update({name: ("_checks", name) for name in ("FLOAT_DTYPES", "check_pair",
                                                         "conv_out_size")})
_PRIVATE["lookup_matches"] = ("recurrent", "_lookup_matches")
_PRIVATE["conv2d_family"] = ("conv_plan", "conv2d_family")
_PRIVATE["dense_epilogue_activations"] = ("isa", "dense_epilogue_activations")


def __getattr__(name):
    family, attr = _KERNEL_MODULE.get(name), name
    if family is None:
        family, attr = _PRIVATE.get(name, (None, None))
        if family is None:
            raise AttributeError(f"module 'fastnn._core' has no attribute {name!r}")
    module = importlib.import_module(f".{family}", __name__)
    value = getattr(module, attr)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def compiled(name):
    """True while the kernel ``name`` here is its family's own (not a stand-in set on this
    module, as the benchmarks' and tests' reference.py swaps do)."""
    own = getattr(importlib.import_module(f".{_KERNEL_MODULE[name]}", __name__), name)
    return globals().get(name, own) is own


def __dir__():
    return __all__
