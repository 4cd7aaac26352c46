"""Slow, obviously-correct NumPy versions of every kernel in ``fastnn._core``: the test oracle.

Same names and signatures as the compiled kernels (see ``fastnn/_core/__init__.py``); outputs are
written into the arrays passed in. Clarity over speed: plain loops and einsum.
"""
import numpy as np

# ==== GEMM, dense and convolution (section owned by the Cython-core work) ====================

def _conv_pair(v):
    return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))


def gemm(a, b, out, trans_a=False, trans_b=False, alpha=1.0, beta=0.0):
    """out := alpha * op(a) @ op(b) + beta * out (beta == 0 ignores out, as BLAS)."""
    prod = (a.T if trans_a else a) @ (b.T if trans_b else b)
    out[...] = alpha * prod if beta == 0 else alpha * prod + beta * out
    return out


def _activate(v, activation, negative_slope):
    if activation == "none":
        return v
    if activation == "relu":
        return np.maximum(v, 0)
    if activation == "leaky_relu":
        return np.where(v > 0, v, negative_slope * v)
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-v))
    if activation == "tanh":
        return np.tanh(v)
    raise ValueError(f"dense_forward: unknown activation {activation!r}")


def dense_forward(x, weight, bias, out, activation="none", negative_slope=0.01):
    """out := act(x @ weight.T + bias)."""
    v = x @ weight.T
    if bias is not None:
        v = v + bias
    out[...] = _activate(v, activation, negative_slope)
    return out


def dense_backward(x, weight, dy, dx, dweight, dbias, accumulate=True, relu=False):
    """dx := dy @ weight; dweight += dy.T @ x; dbias += dy.sum(0) (:= with accumulate=False);
    ``relu``: dx then through the backward of the ReLU whose output is x."""
    if dx is not None:
        dx[...] = dy @ weight
        if relu:
            relu_backward(x, dx, dx)
    if dweight is not None:
        dweight[...] = (dweight if accumulate else 0) + dy.T @ x
    if dbias is not None:
        dbias[...] = (dbias if accumulate else 0) + dy.sum(0)
    return dx


def _padded(x, ph, pw):
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def im2col(x, kernel_size, stride, padding, out):
    """out[n, (c, i, j), oh*OW + ow] := xpad[n, c, oh*sh + i, ow*sw + j]."""
    (kh, kw), (sh, sw), (ph, pw) = _conv_pair(kernel_size), _conv_pair(stride), _conv_pair(padding)
    n, c, h, w = x.shape
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    xp = _padded(x, ph, pw)
    col = out.reshape(n, c, kh, kw, oh, ow)
    for i in range(kh):
        for j in range(kw):
            col[:, :, i, j] = xp[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
    return out


def col2im(col, kernel_size, stride, padding, out):
    """out := the adjoint of im2col applied to col (overlapping windows add up)."""
    (kh, kw), (sh, sw), (ph, pw) = _conv_pair(kernel_size), _conv_pair(stride), _conv_pair(padding)
    n, c, h, w = out.shape
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=out.dtype)
    cols = col.reshape(n, c, kh, kw, oh, ow)
    for i in range(kh):
        for j in range(kw):
            xp[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw] += cols[:, :, i, j]
    out[...] = xp[:, :, ph:ph + h, pw:pw + w]
    return out


def conv2d_forward(x, weight, bias, out, stride, padding, relu=False, negative_slope=None):
    """out[n, o] := bias[o] + sum_{c, i, j} weight[o, c, i, j] * xpad[n, c, oh*sh + i, ow*sw + j]
    (then relu_forward, or leaky_relu_forward with negative_slope, when relu)."""
    (sh, sw), (ph, pw) = _conv_pair(stride), _conv_pair(padding)
    _, _, kh, kw = weight.shape
    oh, ow = out.shape[2:]
    xp = _padded(x, ph, pw)
    acc = np.zeros(out.shape, dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            window = xp[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
            acc += np.einsum("nchw,oc->nohw", window, weight[:, :, i, j])
    if bias is not None:
        acc += bias[None, :, None, None]
    out[...] = acc
    if relu and negative_slope is not None:
        leaky_relu_forward(out, negative_slope, out)
    elif relu:
        relu_forward(out, out)
    return out


def conv2d_backward(x, weight, dy, dx, dweight, dbias, stride, padding, relu=False,
                    negative_slope=None):
    """dx := d(sum dy * conv(x))/dx; dweight += the same wrt weight; dbias += dy.sum((0, 2, 3));
    ``relu``: dx then through the backward of the (leaky) ReLU whose output is x."""
    (sh, sw), (ph, pw) = _conv_pair(stride), _conv_pair(padding)
    _, _, kh, kw = weight.shape
    n, c, h, w = x.shape
    oh, ow = dy.shape[2:]
    xp = _padded(x, ph, pw)
    dxp = np.zeros(xp.shape, dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i, i + sh * (oh - 1) + 1, sh)
            cols = slice(j, j + sw * (ow - 1) + 1, sw)
            if dweight is not None:
                dweight[:, :, i, j] += np.einsum("nohw,nchw->oc", dy, xp[:, :, rows, cols])
            dxp[:, :, rows, cols] += np.einsum("nohw,oc->nchw", dy, weight[:, :, i, j])
    if dx is not None:
        dx[...] = dxp[:, :, ph:ph + h, pw:pw + w]
        if relu and negative_slope is None:
            relu_backward(x, dx, dx)
        elif relu:
            leaky_relu_backward(x, dx, negative_slope, dx)
    if dbias is not None:
        dbias += dy.sum((0, 2, 3))
    return dx


def conv_transpose2d_forward(x, weight, bias, out, stride, padding):
    """out := crop_p(sum_{ci} x[n, ci, h, w] * weight[ci, :, i, j] scattered at (h*sh + i, w*sw + j)) + bias."""
    (sh, sw), (ph, pw) = _conv_pair(stride), _conv_pair(padding)
    _, _, kh, kw = weight.shape
    n, _, h, w = x.shape
    oh, ow = out.shape[2:]
    full = np.zeros((n, weight.shape[1], ph + oh + sh * h + kh, pw + ow + sw * w + kw), dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            full[:, :, i:i + sh * (h - 1) + 1:sh, j:j + sw * (w - 1) + 1:sw] += np.einsum(
                "nchw,co->nohw", x, weight[:, :, i, j])
    acc = full[:, :, ph:ph + oh, pw:pw + ow]
    if bias is not None:
        acc = acc + bias[None, :, None, None]
    out[...] = acc
    return out


def conv_transpose2d_backward(x, weight, dy, dx, dweight, dbias, stride, padding):
    """Gradients of conv_transpose2d_forward: dx :=, dweight +=, dbias += dy.sum((0, 2, 3))."""
    (sh, sw), (ph, pw) = _conv_pair(stride), _conv_pair(padding)
    _, _, kh, kw = weight.shape
    n, _, h, w = x.shape
    oh, ow = dy.shape[2:]
    full = np.zeros((n, dy.shape[1], ph + oh + sh * h + kh, pw + ow + sw * w + kw), dtype=np.float64)
    full[:, :, ph:ph + oh, pw:pw + ow] = dy
    dxa = np.zeros(x.shape, dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            window = full[:, :, i:i + sh * (h - 1) + 1:sh, j:j + sw * (w - 1) + 1:sw]
            dxa += np.einsum("nohw,co->nchw", window, weight[:, :, i, j])
            if dweight is not None:
                dweight[:, :, i, j] += np.einsum("nchw,nohw->co", x, window)
    if dx is not None:
        dx[...] = dxa
    if dbias is not None:
        dbias += dy.sum((0, 2, 3))
    return dx


def _general_pads(padding):
    if np.isscalar(padding):
        return (int(padding),) * 4
    if len(padding) == 2:
        return int(padding[0]), int(padding[0]), int(padding[1]), int(padding[1])
    return tuple(int(p) for p in padding)


def _general_taps(x, weight, stride, padding, dilation, groups):
    """xpad (float64) and, for each tap (i, j), the slices of xpad it reads."""
    (sh, sw), (dh, dw) = _conv_pair(stride), _conv_pair(dilation)
    pt, pb, pl, pr = _general_pads(padding)
    _, _, kh, kw = weight.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    taps = [(i, j, slice(i * dh, i * dh + sh * (oh - 1) + 1, sh),
             slice(j * dw, j * dw + sw * (ow - 1) + 1, sw)) for i in range(kh) for j in range(kw)]
    return xp, (pt, pl), taps


def conv2d_general_forward(x, weight, bias, out, stride, padding, dilation, groups, route=None):
    """out[n, g*O/G + o] := bias + sum_{c, i, j} weight[g*O/G + o, c, i, j] *
    xpad[n, g*C/G + c, oh*sh + i*dh, ow*sw + j*dw]; padding (top, bottom, left, right) or a pair."""
    n, c = x.shape[:2]
    o = weight.shape[0]
    xp, _, taps = _general_taps(x, weight, stride, padding, dilation, groups)
    wg = weight.astype(np.float64).reshape(groups, o // groups, c // groups, *weight.shape[2:])
    acc = np.zeros((n, groups, o // groups) + out.shape[2:])
    for i, j, rows, cols in taps:
        window = xp[:, :, rows, cols].reshape(n, groups, c // groups, *out.shape[2:])
        acc += np.einsum("ngchw,goc->ngohw", window, wg[:, :, :, i, j])
    acc = acc.reshape(out.shape)
    if bias is not None:
        acc += bias[None, :, None, None]
    out[...] = acc
    return out


def conv2d_route(in_channels, out_channels, groups):
    """The compiled kernels' route (the reference has one path for every route)."""
    from .conv_general import conv2d_route as route

    return route(in_channels, out_channels, groups)


def conv2d_general_backward(x, weight, dy, dx, dweight, dbias, stride, padding, dilation, groups,
                            route=None):
    """dx := grad wrt x; dweight += grad wrt weight; dbias += dy.sum((0, 2, 3))."""
    n, c, h, w = x.shape
    o = weight.shape[0]
    xp, (pt, pl), taps = _general_taps(x, weight, stride, padding, dilation, groups)
    wg = weight.astype(np.float64).reshape(groups, o // groups, c // groups, *weight.shape[2:])
    dyg = dy.astype(np.float64).reshape(n, groups, o // groups, *dy.shape[2:])
    dxp = np.zeros(xp.shape)
    for i, j, rows, cols in taps:
        window = xp[:, :, rows, cols].reshape(n, groups, c // groups, *dy.shape[2:])
        if dweight is not None:
            dweight[:, :, i, j] += np.einsum("ngohw,ngchw->goc", dyg, window).reshape(o, c // groups)
        dxp[:, :, rows, cols] += np.einsum("ngohw,goc->ngchw", dyg, wg[:, :, :, i, j]).reshape(
            n, c, *dy.shape[2:])
    if dx is not None:
        dx[...] = dxp[:, :, pt:pt + h, pl:pl + w]
    if dbias is not None:
        dbias += dy.sum((0, 2, 3))
    return dx


# ==== pooling, upsampling, batch norm, activations, losses, optimizers (numba work) ==========
# Computed in float64 and written into the caller's arrays (cast to their dtype).


def _pair(v):
    return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))


def maxpool2d_forward(x, kernel_size, stride, padding, out, argmax):
    (kh, kw), (sh, sw), (ph, pw) = _pair(kernel_size), _pair(stride), _pair(padding)
    n, c, h, w = x.shape
    oh, ow = out.shape[2:]
    padded = np.full((n, c, h + 2 * ph, w + 2 * pw), -np.inf)
    padded[:, :, ph:ph + h, pw:pw + w] = x
    for i in range(oh):
        for j in range(ow):
            window = padded[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw].reshape(n, c, kh * kw)
            k = np.argmax(window, axis=2)  # the first maximum, as PyTorch
            out[:, :, i, j] = np.take_along_axis(window, k[..., None], axis=2)[..., 0]
            argmax[:, :, i, j] = (i * sh - ph + k // kw) * w + (j * sw - pw + k % kw)


def maxpool2d_backward(dy, argmax, dx):
    n, c, h, w = dx.shape
    acc = np.zeros((n * c, h * w))
    flat_dy, flat_idx = dy.reshape(n * c, -1), argmax.reshape(n * c, -1)
    for p in range(n * c):
        np.add.at(acc[p], flat_idx[p], flat_dy[p])
    dx[...] = acc.reshape(dx.shape)


def avgpool2d_forward(x, kernel_size, stride, padding, out):
    (kh, kw), (sh, sw), (ph, pw) = _pair(kernel_size), _pair(stride), _pair(padding)
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            out[:, :, i, j] = padded[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw].sum((2, 3)) / (kh * kw)


def avgpool2d_backward(dy, kernel_size, stride, padding, dx):
    (kh, kw), (sh, sw), (ph, pw) = _pair(kernel_size), _pair(stride), _pair(padding)
    n, c, h, w = dx.shape
    padded = np.zeros((n, c, h + 2 * ph, w + 2 * pw))
    for i in range(dy.shape[2]):
        for j in range(dy.shape[3]):
            padded[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw] += dy[:, :, i:i + 1, j:j + 1] / (kh * kw)
    dx[...] = padded[:, :, ph:ph + h, pw:pw + w]


def upsample_nearest2d_forward(x, scale, out):
    out[...] = x.repeat(scale, axis=2).repeat(scale, axis=3)


def upsample_nearest2d_backward(dy, scale, dx):
    n, c, h, w = dx.shape
    dx[...] = dy.astype(np.float64).reshape(n, c, h, scale, w, scale).sum((3, 5))


def _ncl(a):
    return a.reshape(a.shape[0], a.shape[1], -1).astype(np.float64)


def batchnorm_forward_train(x, weight, bias, running_mean, running_var, momentum, eps,
                            out, save_mean, save_invstd, relu=False, negative_slope=None,
                            residual=None):
    x3 = _ncl(x)
    count = x3.shape[0] * x3.shape[2]
    mean = x3.mean((0, 2))
    var = x3.var((0, 2))  # biased: normalises the batch
    invstd = 1.0 / np.sqrt(var + eps)
    y = (x3 - mean[:, None]) * invstd[:, None] * weight[:, None] + bias[:, None]
    out[...] = y.reshape(out.shape)
    if residual is not None:
        np.add(out, residual, out=out)
    if relu and negative_slope is not None:
        leaky_relu_forward(out, negative_slope, out)
    elif relu:
        relu_forward(out, out)
    save_mean[...] = mean
    save_invstd[...] = invstd
    if running_mean is not None:
        running_mean[...] = (1 - momentum) * running_mean + momentum * mean
    if running_var is not None:
        running_var[...] = (1 - momentum) * running_var + momentum * var * count / (count - 1)


def batchnorm_forward_eval(x, weight, bias, running_mean, running_var, eps, out, relu=False,
                           negative_slope=None):
    x3 = _ncl(x)
    invstd = 1.0 / np.sqrt(running_var.astype(np.float64) + eps)
    y = (x3 - running_mean[:, None]) * invstd[:, None] * weight[:, None] + bias[:, None]
    out[...] = y.reshape(out.shape)
    if relu and negative_slope is not None:
        leaky_relu_forward(out, negative_slope, out)
    elif relu:
        relu_forward(out, out)


def batchnorm_backward(dy, x, weight, mean, invstd, dx, dweight, dbias, batch_stats=True,
                       relu_out=None, negative_slope=None, dresidual=None, dy2=None):
    if dy2 is not None:  # dy overwritten with the sum, as the kernel's
        np.add(dy, dy2, out=dy)
    if relu_out is not None and negative_slope is not None:
        dy = np.where(relu_out > 0, dy, dy * negative_slope)
    elif relu_out is not None:
        dy = np.where(relu_out <= 0, 0, dy)
    if dresidual is not None:
        dresidual[...] = dy
    x3, dy3 = _ncl(x), _ncl(dy)
    count = x3.shape[0] * x3.shape[2]
    xhat = (x3 - mean[:, None]) * invstd[:, None]
    sum_dy = dy3.sum((0, 2))
    sum_dy_xhat = (dy3 * xhat).sum((0, 2))
    if dx is not None:
        if batch_stats:
            g = (dy3 - sum_dy[:, None] / count - xhat * sum_dy_xhat[:, None] / count)
        else:
            g = dy3
        dx[...] = (g * (weight * invstd)[:, None]).reshape(dx.shape)
    if dweight is not None:
        dweight += sum_dy_xhat
    if dbias is not None:
        dbias += sum_dy


def _lrn_window_sums(sq, size):
    """sum of sq over channels c - size//2 .. c + (size-1)//2 (zero outside), sq (N, C, L)"""
    padded = np.pad(sq, ((0, 0), (size // 2, (size - 1) // 2), (0, 0)))
    cum = np.concatenate([np.zeros_like(padded[:, :1]), np.cumsum(padded, axis=1)], axis=1)
    return cum[:, size:] - cum[:, :-size]


def lrn_forward(x, size, alpha, beta, k, out, scale):
    x3 = _ncl(x)
    s = k + alpha / size * _lrn_window_sums(x3 * x3, size)
    scale[...] = s.reshape(scale.shape)
    out[...] = (x3 * s ** -beta).reshape(out.shape)


def lrn_backward(x, out, scale, dy, size, alpha, beta, dx):
    x3, y3, s3, dy3 = _ncl(x), _ncl(out), _ncl(scale), _ncl(dy)
    t = dy3 * y3 / s3
    # the adjoint of the window sum: channel j collects c in j - (size-1)//2 .. j + size//2
    padded = np.pad(t, ((0, 0), ((size - 1) // 2, size // 2), (0, 0)))
    cum = np.concatenate([np.zeros_like(padded[:, :1]), np.cumsum(padded, axis=1)], axis=1)
    back = cum[:, size:] - cum[:, :-size]
    dx[...] = (dy3 * s3 ** -beta - 2 * alpha * beta / size * x3 * back).reshape(dx.shape)


def relu_forward(x, out):
    out[...] = np.where(x <= 0, 0, x)


def relu_backward(x, dy, dx):
    dx[...] = np.where(x <= 0, 0, dy)


def leaky_relu_forward(x, negative_slope, out):
    out[...] = np.where(x > 0, x, negative_slope * x.astype(np.float64))


def leaky_relu_backward(x, dy, negative_slope, dx):
    dx[...] = np.where(x > 0, dy, negative_slope * dy.astype(np.float64))


def add_relu_forward(a, b, out, negative_slope=None):
    with np.errstate(invalid="ignore"):  # inf - inf is NaN, as in the kernel
        v = np.add(a, b)  # rounded to the dtype before the activation, as the kernel
    if negative_slope is None:
        relu_forward(v, out)
    else:
        leaky_relu_forward(v, negative_slope, out)


def add_relu_backward(y, dy, dx, dx2=None, negative_slope=None):
    if negative_slope is None:
        relu_backward(y, dy, dx)
    else:
        leaky_relu_backward(y, dy, negative_slope, dx)
    if dx2 is not None:
        dx2[...] = dx


def sigmoid_forward(x, out):
    x = x.astype(np.float64)
    e = np.exp(-np.abs(x))
    out[...] = np.where(x >= 0, 1.0, e) / (1.0 + e)


def sigmoid_backward(y, dy, dx):
    y = y.astype(np.float64)
    dx[...] = dy * y * (1.0 - y)


def tanh_forward(x, out):
    out[...] = np.tanh(x.astype(np.float64))


def tanh_backward(y, dy, dx):
    y = y.astype(np.float64)
    dx[...] = dy * (1.0 - y * y)


def _log_softmax(x):
    """(x - max) - log1p(sum of exp(x - max) over the other entries): the maximum's own term
    (exactly 1) left out of the sum, so its log-probability keeps its relative precision when the
    others' exponentials are tiny (log of 1 + tiny rounds tiny away)."""
    x = x.astype(np.float64)
    top = np.argmax(x, axis=-1)[..., None]
    shifted = x - np.take_along_axis(x, top, axis=-1)
    e = np.exp(shifted)
    np.put_along_axis(e, top, 0.0, axis=-1)
    return shifted - np.log1p(e.sum(axis=-1, keepdims=True))


def softmax_forward(x, out):
    out[...] = np.exp(_log_softmax(x))


def softmax_backward(y, dy, dx):
    y = y.astype(np.float64)
    dx[...] = y * (dy - (dy * y).sum(axis=-1, keepdims=True))


def log_softmax_forward(x, out):
    out[...] = _log_softmax(x)


def softmax_cross_entropy_forward(logits, target, probs, row_loss=None):
    logp = _log_softmax(logits)
    probs[...] = np.exp(logp)
    rows = -logp[np.arange(len(target)), target]
    if row_loss is not None:
        row_loss[...] = rows
    return float(rows.mean())


def softmax_cross_entropy_backward(probs, target, scale, dlogits):
    g = probs.astype(np.float64)
    g[np.arange(len(target)), target] -= 1.0
    dlogits[...] = scale * g / len(target)


def soft_cross_entropy_forward(logits, target_probs, probs, row_loss=None):
    logp = _log_softmax(logits)
    probs[...] = np.exp(logp)
    rows = -(target_probs * logp).sum(axis=1)
    if row_loss is not None:
        row_loss[...] = rows
    return float(rows.mean())


def soft_cross_entropy_backward(probs, target_probs, scale, dlogits):
    t = target_probs.astype(np.float64)
    g = probs * t.sum(axis=1, keepdims=True) - t
    dlogits[...] = scale * g / len(t)


# The optimizer rules step by step as torch.optim's single-tensor code writes them.

def sgd_update(param, grad, momentum_buf, lr, momentum, dampening, nesterov, weight_decay, first_step):
    d_p = grad.astype(np.float64)
    if weight_decay != 0:
        d_p = d_p + weight_decay * param
    if momentum != 0:
        if first_step:
            buf = d_p.copy()
        else:
            buf = momentum * momentum_buf + (1 - dampening) * d_p
        momentum_buf[...] = buf
        d_p = d_p + momentum * buf if nesterov else buf
    param[...] = param - lr * d_p


def adagrad_update(param, grad, state_sum, lr, lr_decay, weight_decay, eps, step):
    g = grad.astype(np.float64)
    if weight_decay != 0:
        g = g + weight_decay * param
    clr = lr / (1 + (step - 1) * lr_decay)
    new_sum = state_sum + g * g
    state_sum[...] = new_sum
    param[...] = param - clr * g / (np.sqrt(new_sum) + eps)


def rmsprop_update(param, grad, square_avg, lr, alpha, eps, weight_decay):
    g = grad.astype(np.float64)
    if weight_decay != 0:
        g = g + weight_decay * param
    avg = alpha * square_avg + (1 - alpha) * g * g
    square_avg[...] = avg
    param[...] = param - lr * g / (np.sqrt(avg) + eps)


def adam_update(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step, decoupled):
    g = grad.astype(np.float64)
    p = param.astype(np.float64)
    if weight_decay != 0:
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
    m = exp_avg + (1 - beta1) * (g - exp_avg)  # torch's lerp_
    v = beta2 * exp_avg_sq + (1 - beta2) * g * g
    exp_avg[...] = m
    exp_avg_sq[...] = v
    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    step_size = lr / bias_correction1
    denom = np.sqrt(v) / np.sqrt(bias_correction2) + eps
    param[...] = p - step_size * m / denom

# ==== recurrent cells and embedding (sequence-model work) =====================================

def embedding_forward(indices, weight, out):
    """out[m] := weight[indices[m]]."""
    out[...] = weight[indices]
    return out


def embedding_backward(indices, dy, dweight):
    """dweight[indices[m]] += dy[m], repeated indices adding up."""
    np.add.at(dweight, indices, dy)
    return dweight


def _ref_sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def rnn_forward(xw, w_hh, b_hh, hs):
    """Time-major: hs[t+1] := tanh(xw[t] + hs[t] @ w_hh.T + b_hh); hs[0] is h0."""
    for t in range(xw.shape[0]):
        hs[t + 1] = np.tanh(xw[t] + hs[t] @ w_hh.T + b_hh)
    return hs


def rnn_backward(w_hh, hs, dhs, dpre, dh0):
    dh_next = np.zeros_like(hs[0])
    for t in reversed(range(dhs.shape[0])):
        dpre[t] = (dhs[t] + dh_next) * (1 - hs[t + 1] ** 2)
        dh_next = dpre[t] @ w_hh
    dh0[...] = dh_next
    return dpre


def lstm_forward(xw, w_hh, b_hh, hs, cs, gates):
    """PyTorch's LSTM, time-major: gates i, f, g, o; c_{t+1} = f*c_t + i*g; h_{t+1} = o*tanh(c_{t+1})."""
    for t in range(xw.shape[0]):
        i, f, g, o = np.split(xw[t] + hs[t] @ w_hh.T + b_hh, 4, axis=1)
        i, f, g, o = _ref_sigmoid(i), _ref_sigmoid(f), np.tanh(g), _ref_sigmoid(o)
        cs[t + 1] = f * cs[t] + i * g
        hs[t + 1] = o * np.tanh(cs[t + 1])
        gates[t] = np.concatenate([i, f, g, o], axis=1)
    return hs


def lstm_backward(w_hh, cs, gates, dhs, dpre, dh0, dc0):
    dh_next, dc_next = np.zeros_like(cs[0]), np.zeros_like(cs[0])
    for t in reversed(range(dhs.shape[0])):
        i, f, g, o = np.split(gates[t], 4, axis=1)
        tc = np.tanh(cs[t + 1])
        dh = dhs[t] + dh_next
        dc = dc_next + dh * o * (1 - tc ** 2)
        dpre[t] = np.concatenate([dc * g * i * (1 - i), dc * cs[t] * f * (1 - f),
                                  dc * i * (1 - g ** 2), dh * tc * o * (1 - o)], axis=1)
        dh_next = dpre[t] @ w_hh
        dc_next = dc * f
    dh0[...], dc0[...] = dh_next, dc_next
    return dpre


def gru_forward(xw, w_hh, b_hh, hs, gates, hn):
    """PyTorch's GRU, time-major: r, z, n; n = tanh(x_n + r*(h @ W_hn.T + b_hn)); h' = (1-z)*n + z*h."""
    for t in range(xw.shape[0]):
        xr, xz, xn = np.split(xw[t], 3, axis=1)
        hr, hz, hn_t = np.split(hs[t] @ w_hh.T + b_hh, 3, axis=1)
        r, z = _ref_sigmoid(xr + hr), _ref_sigmoid(xz + hz)
        n = np.tanh(xn + r * hn_t)
        hs[t + 1] = (1 - z) * n + z * hs[t]
        gates[t] = np.concatenate([r, z, n], axis=1)
        hn[t] = hn_t
    return hs


def gru_backward(w_hh, hs, gates, hn, dhs, dpre_x, dpre_h, dh0):
    dh_next = np.zeros_like(hs[0])
    for t in reversed(range(dhs.shape[0])):
        r, z, n = np.split(gates[t], 3, axis=1)
        dh = dhs[t] + dh_next
        dn = dh * (1 - z) * (1 - n ** 2)
        dz = dh * (hs[t] - n) * z * (1 - z)
        dr = dn * hn[t] * r * (1 - r)
        dpre_x[t] = np.concatenate([dr, dz, dn], axis=1)
        dpre_h[t] = np.concatenate([dr, dz, dn * r], axis=1)
        dh_next = dh * z + dpre_h[t] @ w_hh
    dh0[...] = dh_next
    return dpre_x


def sgns_step(w_in, w_out, centers, contexts, negatives, lr):
    """Skip-gram negative sampling, plain SGD pair by pair (in place); returns the summed loss."""
    total = 0.0
    for c, o_true, negs in zip(centers, contexts, negatives):
        u = w_in[c].copy()
        grad_u = np.zeros_like(u)
        for k, o in enumerate([o_true, *negs]):
            label = 1.0 if k == 0 else 0.0
            s = _ref_sigmoid(float(u @ w_out[o]))
            total -= np.log(max(s if label else 1 - s, 1e-12))
            grad_u += lr * (s - label) * w_out[o]
            w_out[o] -= lr * (s - label) * u
        w_in[c] -= grad_u
    return float(total)


def masked_softmax_forward(scores, scale, mask, out):
    z = scale * scores.astype(np.float64)
    if mask is not None:
        b, m = scores.shape[0], mask.shape[0]
        z = z + np.repeat(mask.astype(np.float64), b // m, axis=0)
    with np.errstate(invalid="ignore"):
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        out[...] = e / e.sum(axis=-1, keepdims=True)


def masked_softmax_backward(p, dp, scale, ds):
    p64, dp64 = p.astype(np.float64), dp.astype(np.float64)
    ds[...] = scale * p64 * (dp64 - (dp64 * p64).sum(axis=-1, keepdims=True))


def _head_blocks(a, n, t, num_heads):
    """(N*T, E) -> (N, H, T, d) float64, each head's columns."""
    return a.astype(np.float64).reshape(n, t, num_heads, -1).transpose(0, 2, 1, 3)


def attention_forward(q, k, v, num_heads, scale, mask, p, ctx, drop=None, p_used=None):
    b, l, s = p.shape
    n = b // num_heads
    qh, kh, vh = (_head_blocks(a, n, t, num_heads) for a, t in ((q, l), (k, s), (v, s)))
    masked_softmax_forward((qh @ kh.transpose(0, 1, 3, 2)).reshape(b, l, s), scale, mask, p)
    used = p
    if drop is not None:
        p_used[...] = p * drop
        used = p_used
    c = used.astype(np.float64).reshape(n, num_heads, l, s) @ vh
    ctx[...] = c.transpose(0, 2, 1, 3).reshape(n * l, -1)


def attention_backward(q, k, v, num_heads, scale, p, p_used, drop, dctx, dq, dk, dv):
    b, l, s = p.shape
    n = b // num_heads
    qh, kh, vh = (_head_blocks(a, n, t, num_heads) for a, t in ((q, l), (k, s), (v, s)))
    dc = _head_blocks(dctx, n, l, num_heads)
    used = (p if p_used is None else p_used).astype(np.float64).reshape(n, num_heads, l, s)
    dp = dc @ vh.transpose(0, 1, 3, 2)
    if drop is not None:
        dp = dp * drop.reshape(dp.shape)
    ds = np.empty(p.shape)
    masked_softmax_backward(p.astype(np.float64), dp.reshape(p.shape), scale, ds)
    ds = ds.reshape(n, num_heads, l, s)
    for out, g, t in ((dq, ds @ kh, l), (dk, ds.transpose(0, 1, 3, 2) @ qh, s),
                      (dv, used.transpose(0, 1, 3, 2) @ dc, s)):
        out[...] = g.transpose(0, 2, 1, 3).reshape(n * t, -1)


def _bins(size, out):
    """PyTorch's adaptive pooling bins of a ``size`` axis pooled to ``out``: [start, end) pairs."""
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def adaptive_avgpool2d_forward(x, out):
    h, w = x.shape[2:]
    oh, ow = out.shape[2:]
    for i, (h0, h1) in enumerate(_bins(h, oh)):
        for j, (w0, w1) in enumerate(_bins(w, ow)):
            out[:, :, i, j] = x[:, :, h0:h1, w0:w1].astype(np.float64).mean(axis=(2, 3))


def adaptive_avgpool2d_backward(dy, dx):
    h, w = dx.shape[2:]
    oh, ow = dy.shape[2:]
    acc = np.zeros(dx.shape)
    for i, (h0, h1) in enumerate(_bins(h, oh)):
        for j, (w0, w1) in enumerate(_bins(w, ow)):
            acc[:, :, h0:h1, w0:w1] += dy[:, :, i:i + 1, j:j + 1] / ((h1 - h0) * (w1 - w0))
    dx[...] = acc


def _gelu64(x, approximate):
    from scipy.special import erf
    x = x.astype(np.float64)
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def gelu_forward(x, out, approximate="none"):
    out[...] = _gelu64(x, approximate)


def gelu_backward(x, dy, dx, approximate="none"):
    x64 = x.astype(np.float64)
    if approximate == "tanh":
        k = np.sqrt(2 / np.pi)
        t = np.tanh(k * (x64 + 0.044715 * x64 ** 3))
        g = 0.5 * (1 + t) + 0.5 * x64 * (1 - t * t) * k * (1 + 3 * 0.044715 * x64 ** 2)
    else:
        from scipy.special import erf
        g = 0.5 * (1 + erf(x64 / np.sqrt(2))) + x64 * np.exp(-0.5 * x64 ** 2) / np.sqrt(2 * np.pi)
    dx[...] = dy * g


def silu_forward(x, out):
    x64 = x.astype(np.float64)
    out[...] = x64 / (1 + np.exp(-x64))


def silu_backward(x, dy, dx):
    x64 = x.astype(np.float64)
    s = 1 / (1 + np.exp(-x64))
    dx[...] = dy * (s + x64 * s * (1 - s))


def elu_forward(x, alpha, out):
    x64 = x.astype(np.float64)
    out[...] = np.where(x64 > 0, x64, alpha * (np.exp(x64) - 1))


def elu_backward(x, dy, alpha, dx):
    x64 = x.astype(np.float64)
    dx[...] = dy * np.where(x64 > 0, 1.0, alpha * np.exp(x64))


def layer_norm_forward(x, weight, bias, eps, out, mean, invstd, residual=None):
    if residual is not None:  # the residual sum, written over x as the compiled kernel does
        np.add(x, residual, out=x)
    x64 = x.astype(np.float64)
    mean[...] = x64.mean(axis=1)
    invstd[...] = 1 / np.sqrt(x64.var(axis=1) + eps)
    y = (x64 - mean[:, None]) * invstd[:, None]
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    out[...] = y


def layer_norm_backward(x, dy, weight, mean, invstd, dx, dweight, dbias):
    xhat = (x.astype(np.float64) - mean[:, None]) * invstd[:, None]
    dy64 = dy.astype(np.float64)
    g = dy64 * weight if weight is not None else dy64
    if dx is not None:
        dx[...] = invstd[:, None] * (g - g.mean(axis=1, keepdims=True)
                                     - xhat * (g * xhat).mean(axis=1, keepdims=True))
    if dweight is not None:
        dweight += (dy64 * xhat).sum(axis=0).astype(dweight.dtype)
    if dbias is not None:
        dbias += dy64.sum(axis=0).astype(dbias.dtype)
