"""Hypothesis strategies for property-testing layers: valid configurations with matching inputs.

Each configuration strategy draws a plain ``dict`` (constructor arguments plus ``input_shape``
and, where it is fixed by the arguments, ``output_shape``), so this module imports no layer and
works for your own layers too. ``arrays_for(shape)`` draws a matching float64 input.

    from hypothesis import given, strategies as st
    import fastnn as fnn
    from fastnn.testing import strategies as fst

    @given(cfg=fst.conv2d_configs(), data=st.data())
    def test_my_conv_gradients(cfg, data):
        layer = MyConv(cfg["in_ch"], cfg["out_ch"], cfg["kernel_size"],
                       stride=cfg["stride"], padding=cfg["padding"])
        x = data.draw(fst.arrays_for(cfg["input_shape"]))
        fnn.assert_gradcheck(layer, x)

Shapes are kept small (batch 1-3, channels 1-3, spatial sides up to ~7) because a gradient
check costs two forwards per checked entry.
"""
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

__all__ = [
    "arrays_for", "indices_for", "shapes", "batch_sizes",
    "dense_configs", "conv2d_configs", "grouped_conv_configs", "conv_transpose2d_configs",
    "pool2d_configs", "pool1d_configs",
    "upsample_configs", "batchnorm_configs", "lrn_configs", "dropout_configs", "activation_configs",
    "reshape_configs", "sequence_shapes", "recurrent_configs", "embedding_configs", "loss_cases",
    "conv2d_output_size", "conv_transpose2d_output_size",
]


# --- arrays -----------------------------------------------------------------------------------------
def arrays_for(shape, dtype=np.float64, bound=2.0, generic=True):
    """Arrays of ``shape`` and ``dtype`` with finite values in ``[-bound, bound]``.

    ``generic=True`` (default): values drawn from a hypothesis-chosen seed, uniform in the range.
    Such a point is almost surely away from kinks (ReLU at 0, max-pool ties) and degenerate
    statistics (a batch-norm channel with zero variance), which is what a gradient check wants.
    ``generic=False``: every element comes from hypothesis's float strategy, so zeros, repeated
    values and the bounds show up (and shrink) - the right choice for forward-behaviour tests.
    """
    shape = tuple(int(s) for s in shape)
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"arrays_for: dtype must be a float dtype, got {dtype}")
    if generic:
        return st.integers(0, 2**32 - 1).map(
            lambda s: np.random.default_rng(s).uniform(-bound, bound, size=shape).astype(dtype))
    elements = st.floats(-bound, bound, allow_nan=False, allow_infinity=False, width=dtype.itemsize * 8)
    return hnp.arrays(dtype, shape, elements=elements)


def indices_for(shape, high, dtype=np.int64):
    """Integer arrays of ``shape`` with values in ``[0, high)`` (class labels, embedding ids)."""
    return hnp.arrays(np.dtype(dtype), tuple(shape), elements=st.integers(0, int(high) - 1))


def batch_sizes(min_size=1, max_size=3):
    return st.integers(min_size, max_size)


def shapes(min_dims=1, max_dims=4, min_side=1, max_side=4):
    """Array shapes (tuples); the first axis is the batch."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


# --- output sizes (PyTorch's formulas, dilation 1) ----------------------------------------------------
def conv2d_output_size(size, kernel_size, stride, padding):
    """``floor((size + 2 padding - kernel) / stride) + 1`` (also max/avg pooling, ceil_mode off)."""
    return (size + 2 * padding - kernel_size) // stride + 1


def conv_transpose2d_output_size(size, kernel_size, stride, padding, output_padding):
    """``(size - 1) stride - 2 padding + kernel + output_padding``."""
    return (size - 1) * stride - 2 * padding + kernel_size + output_padding


# --- layer configurations -----------------------------------------------------------------------------
@st.composite
def dense_configs(draw, max_features=6, max_leading_dims=1):
    """``dict(in_features, out_features, bias, input_shape, output_shape)``; the input is
    ``(N, in)`` or, with ``max_leading_dims > 1``, ``(N, ..., in)`` (Dense acts on the last axis)."""
    in_features = draw(st.integers(1, max_features))
    out_features = draw(st.integers(1, max_features))
    leading = draw(st.lists(st.integers(1, 3), min_size=1, max_size=max_leading_dims))
    return dict(in_features=in_features, out_features=out_features, bias=draw(st.booleans()),
                input_shape=(*leading, in_features), output_shape=(*leading, out_features))


def _spatial(draw, kernel_size, stride, padding, max_extra=2):
    """A side length giving an output of 1 to ``max_extra + 1`` positions."""
    smallest = max(1, kernel_size - 2 * padding)
    return draw(st.integers(smallest, smallest + max_extra * stride + stride - 1))


@st.composite
def conv2d_configs(draw, max_channels=3, max_kernel=3, max_stride=2):
    """``dict(in_ch, out_ch, kernel_size, stride, padding, bias, input_shape, output_shape)`` with
    ``0 <= padding <= kernel_size // 2`` and a spatial size giving an output of at least 1x1."""
    k = draw(st.integers(1, max_kernel))
    s = draw(st.integers(1, max_stride))
    p = draw(st.integers(0, k // 2))
    in_ch, out_ch = draw(st.integers(1, max_channels)), draw(st.integers(1, max_channels))
    h, w = _spatial(draw, k, s, p), _spatial(draw, k, s, p)
    n = draw(batch_sizes())
    return dict(in_ch=in_ch, out_ch=out_ch, kernel_size=k, stride=s, padding=p, bias=draw(st.booleans()),
                input_shape=(n, in_ch, h, w),
                output_shape=(n, out_ch, conv2d_output_size(h, k, s, p), conv2d_output_size(w, k, s, p)))


@st.composite
def grouped_conv_configs(draw, dims=2, max_groups=3, max_per_group=2, max_kernel=3, max_stride=2,
                         max_dilation=2):
    """``dict(in_ch, out_ch, kernel_size, stride, padding, dilation, groups, bias, input_shape,
    output_shape)`` for Conv2D (``dims=2``, input (N, C, H, W)) or Conv1D (``dims=1``, (N, C, L))
    with dilation and groups (depthwise included); ``padding`` an int, ``"valid"`` or, with stride
    1, ``"same"`` (PyTorch's rule: total ``dilation*(k - 1)``, the odd one after)."""
    groups = draw(st.integers(1, max_groups))
    depthwise = draw(st.booleans())
    in_ch = groups * (1 if depthwise else draw(st.integers(1, max_per_group)))
    out_ch = groups * draw(st.integers(1, max_per_group))
    k = draw(st.integers(1, max_kernel))
    s = draw(st.integers(1, max_stride))
    d = draw(st.integers(1, max_dilation))
    padding = draw(st.sampled_from(["same", "valid", 0, 1, 2] if s == 1 else ["valid", 0, 1, 2]))
    span = d * (k - 1) + 1
    total = {"same": span - 1, "valid": 0}.get(padding, 2 * padding if isinstance(padding, int) else 0)
    sides = []
    for _ in range(dims):
        smallest = max(1, span - total)
        size = draw(st.integers(smallest, smallest + 2 * s + s - 1))
        sides.append((size, (size + total - span) // s + 1))
    n = draw(batch_sizes())
    return dict(in_ch=in_ch, out_ch=out_ch, kernel_size=k, stride=s, padding=padding, dilation=d,
                groups=groups, bias=draw(st.booleans()),
                input_shape=(n, in_ch, *(a for a, _ in sides)),
                output_shape=(n, out_ch, *(b for _, b in sides)))


@st.composite
def pool1d_configs(draw, max_kernel=4, max_stride=3, max_channels=3):
    """``dict(kernel_size, stride, padding, input_shape, output_shape)`` for MaxPool1D/AvgPool1D on
    (N, C, L): ``stride`` None (= kernel_size) or an int, ``padding <= kernel_size // 2``."""
    k = draw(st.integers(1, max_kernel))
    stride = draw(st.one_of(st.none(), st.integers(1, max_stride)))
    s = k if stride is None else stride
    p = draw(st.integers(0, k // 2))
    length = _spatial(draw, k, s, p)
    n, c = draw(batch_sizes()), draw(st.integers(1, max_channels))
    return dict(kernel_size=k, stride=stride, padding=p, input_shape=(n, c, length),
                output_shape=(n, c, conv2d_output_size(length, k, s, p)))


@st.composite
def conv_transpose2d_configs(draw, max_channels=3, max_kernel=3, max_stride=2, max_side=4):
    """``dict(in_ch, out_ch, kernel_size, stride, padding, output_padding, bias, input_shape,
    output_shape)`` with ``output_padding < stride``, ``padding <= kernel_size // 2`` and an output
    of at least 1x1 (as ``torch.nn.ConvTranspose2d`` requires)."""
    k = draw(st.integers(1, max_kernel))
    s = draw(st.integers(1, max_stride))
    p = draw(st.integers(0, k // 2))
    op = draw(st.integers(0, s - 1))
    n = draw(batch_sizes())
    in_ch, out_ch = draw(st.integers(1, max_channels)), draw(st.integers(1, max_channels))
    # smallest side whose output is >= 1
    smallest = 1
    while conv_transpose2d_output_size(smallest, k, s, p, op) < 1:
        smallest += 1
    h = draw(st.integers(smallest, max(smallest, max_side)))
    w = draw(st.integers(smallest, max(smallest, max_side)))
    return dict(in_ch=in_ch, out_ch=out_ch, kernel_size=k, stride=s, padding=p, output_padding=op,
                bias=draw(st.booleans()), input_shape=(n, in_ch, h, w),
                output_shape=(n, out_ch, conv_transpose2d_output_size(h, k, s, p, op),
                              conv_transpose2d_output_size(w, k, s, p, op)))


@st.composite
def pool2d_configs(draw, max_kernel=3, max_stride=3, max_channels=3):
    """``dict(kernel_size, stride, padding, input_shape, output_shape)`` for MaxPool2D/AvgPool2D:
    ``stride`` is None (= kernel_size) or an int, ``padding <= kernel_size // 2`` (PyTorch's rule)."""
    k = draw(st.integers(1, max_kernel))
    stride = draw(st.one_of(st.none(), st.integers(1, max_stride)))
    s = k if stride is None else stride
    p = draw(st.integers(0, k // 2))
    h, w = _spatial(draw, k, s, p), _spatial(draw, k, s, p)
    n, c = draw(batch_sizes()), draw(st.integers(1, max_channels))
    return dict(kernel_size=k, stride=stride, padding=p, input_shape=(n, c, h, w),
                output_shape=(n, c, conv2d_output_size(h, k, s, p), conv2d_output_size(w, k, s, p)))


@st.composite
def upsample_configs(draw, max_scale=3, max_side=4):
    """``dict(scale_factor, input_shape, output_shape)`` for nearest-neighbour Upsample2D."""
    scale = draw(st.integers(1, max_scale))
    n, c = draw(batch_sizes()), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    return dict(scale_factor=scale, input_shape=(n, c, h, w), output_shape=(n, c, h * scale, w * scale))


@st.composite
def lrn_configs(draw, max_size=6, max_channels=6):
    """``dict(size, alpha, beta, k, input_shape)`` for LocalResponseNorm: windows wider than the
    channel count included, (N, C, L) or (N, C, H, W) inputs."""
    size = draw(st.integers(1, max_size))
    n, c = draw(batch_sizes()), draw(st.integers(1, max_channels))
    spatial = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=2)))
    return dict(size=size, alpha=draw(st.sampled_from([1e-4, 0.1, 1.0])),
                beta=draw(st.sampled_from([0.75, 0.5, 1.5])), k=draw(st.sampled_from([1.0, 2.0])),
                input_shape=(n, c, *spatial))


@st.composite
def batchnorm_configs(draw, dims=None, max_features=4):
    """``dict(dims, num_features, eps, momentum, training, input_shape)``: ``dims`` 1 gives input
    ``(N, C)``, 2 gives ``(N, C, H, W)``; ``training`` draws both modes. A training batch has at
    least 2 values per channel (PyTorch refuses fewer)."""
    dims = draw(st.sampled_from([1, 2])) if dims is None else dims
    if dims not in (1, 2):
        raise ValueError(f"batchnorm_configs: dims must be 1, 2 or None, got {dims!r}")
    c = draw(st.integers(1, max_features))
    training = draw(st.booleans())
    if dims == 1:
        shape = (draw(st.integers(2, 5)), c)
    else:
        n, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
        if n * h * w < 2:
            n = 2
        shape = (n, c, h, w)
    return dict(dims=dims, num_features=c, eps=draw(st.sampled_from([1e-5, 1e-3])),
                momentum=draw(st.sampled_from([0.1, 0.5])), training=training, input_shape=shape)


@st.composite
def dropout_configs(draw):
    """``dict(p, training, input_shape)`` with ``0 <= p < 1``."""
    p = draw(st.sampled_from([0.0, 0.1, 0.5, 0.9]))
    return dict(p=p, training=draw(st.booleans()), input_shape=draw(shapes(2, 4, 1, 4)))


@st.composite
def activation_configs(draw, names=("ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax", "Identity",
                                     "GELU", "SiLU", "ELU")):
    """``dict(name, kwargs, input_shape)``: ``LeakyReLU`` gets a ``negative_slope``, ``Softmax`` an
    ``axis`` valid for the shape, ``GELU`` its ``approximate``, ``ELU`` an ``alpha``."""
    name = draw(st.sampled_from(list(names)))
    shape = draw(shapes(1, 4, 1, 4))
    kwargs = {}
    if name == "LeakyReLU":
        kwargs["negative_slope"] = draw(st.sampled_from([0.01, 0.2, 1.5]))
    elif name == "Softmax":
        kwargs["axis"] = draw(st.integers(-len(shape), len(shape) - 1))
    elif name == "GELU":
        kwargs["approximate"] = draw(st.sampled_from(["none", "tanh"]))
    elif name == "ELU":
        kwargs["alpha"] = draw(st.sampled_from([1.0, 0.3, 2.0]))
    return dict(name=name, kwargs=kwargs, input_shape=shape)


@st.composite
def layer_norm_configs(draw):
    """``dict(normalized_shape, eps, elementwise_affine, bias, input_shape)``: one or two
    trailing axes normalised, after one or two leading ones."""
    lead = draw(shapes(1, 2, 1, 3))
    norm = draw(shapes(1, 2, 1, 4))
    return dict(normalized_shape=norm, eps=draw(st.sampled_from([1e-5, 1e-2])),
                elementwise_affine=draw(st.booleans()), bias=draw(st.booleans()),
                input_shape=tuple(lead) + tuple(norm))


@st.composite
def adaptive_pool_configs(draw, max_side=6):
    """``dict(output_size, input_shape)``: output sizes below, equal to and above the input's
    (bins then overlap or repeat), an int or a pair."""
    n, c = draw(batch_sizes()), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    oh, ow = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    return dict(output_size=oh if draw(st.booleans()) else (oh, ow), input_shape=(n, c, h, w))


@st.composite
def reshape_configs(draw):
    """``dict(shape, input_shape, output_shape)``: ``shape`` (batch axis excluded) has the same
    number of entries per sample as the input, with one axis possibly given as -1."""
    input_shape = draw(shapes(2, 4, 1, 4))
    per_sample = int(np.prod(input_shape[1:]))
    divisors = [d for d in range(1, per_sample + 1) if per_sample % d == 0]
    first = draw(st.sampled_from(divisors))
    target = (first, per_sample // first)
    out = (input_shape[0], *target)
    if draw(st.booleans()):
        target = (first, -1) if draw(st.booleans()) else (-1, per_sample // first)
    return dict(shape=target, input_shape=input_shape, output_shape=out)


def sequence_shapes(max_batch=3, max_time=4, max_features=4):
    """Batch-first sequence shapes ``(N, T, F)``."""
    return st.tuples(st.integers(1, max_batch), st.integers(1, max_time), st.integers(1, max_features))


@st.composite
def recurrent_configs(draw, max_hidden=4):
    """``dict(input_size, hidden_size, return_sequences, num_layers, bidirectional, dropout,
    input_shape)`` for RNN/LSTM/GRU (mostly one layer, one direction: the fast path)."""
    n, t, f = draw(sequence_shapes())
    hidden = draw(st.integers(1, max_hidden))
    stacked = draw(st.integers(0, 3)) == 0
    return dict(input_size=f, hidden_size=hidden, return_sequences=draw(st.booleans()),
                num_layers=draw(st.integers(1, 2)) if stacked else 1,
                bidirectional=draw(st.booleans()) if stacked else False,
                dropout=draw(st.sampled_from([0.0, 0.4])) if stacked else 0.0,
                input_shape=(n, t, f))


@st.composite
def embedding_configs(draw):
    """``dict(num_embeddings, embedding_dim, input_shape)``; draw indices with ``indices_for``."""
    return dict(num_embeddings=draw(st.integers(1, 6)), embedding_dim=draw(st.integers(1, 4)),
                input_shape=(draw(st.integers(1, 3)), draw(st.integers(1, 4))))


# --- losses -------------------------------------------------------------------------------------------
@st.composite
def loss_cases(draw, name):
    """``dict(pred, target)`` of float64 arrays valid for the loss ``name``:
    ``"mse"``; ``"cross_entropy"`` (logits ``(N, ..., C)``, integer labels ``(N, ...)``, or one-hot
    probabilities with ``one_hot=True``); ``"bce"`` (probabilities in [0.05, 0.95]);
    ``"bce_with_logits"``; ``"kl_divergence_normal"`` (``pred`` = mu, ``target`` = logvar)."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if name == "cross_entropy":
        lead = draw(st.lists(st.integers(1, 3), min_size=1, max_size=2))
        c = draw(st.integers(1, 5))
        logits = rng.uniform(-3, 3, size=(*lead, c))
        labels = rng.integers(0, c, size=tuple(lead))
        if draw(st.booleans()):
            return dict(pred=logits, target=np.eye(c)[labels], one_hot=True)
        return dict(pred=logits, target=labels.astype(draw(st.sampled_from([np.int64, np.int32, np.uint8]))),
                    one_hot=False)
    shape = draw(shapes(1, 3, 1, 4))
    if name == "mse":
        return dict(pred=rng.uniform(-2, 2, shape), target=rng.uniform(-2, 2, shape))
    if name == "bce":
        return dict(pred=rng.uniform(0.05, 0.95, shape), target=rng.uniform(0, 1, shape).round(draw(st.sampled_from([0, 2]))))
    if name == "bce_with_logits":
        return dict(pred=rng.uniform(-4, 4, shape), target=rng.uniform(0, 1, shape).round(draw(st.sampled_from([0, 2]))))
    if name == "kl_divergence_normal":
        return dict(pred=rng.uniform(-2, 2, shape), target=rng.uniform(-2, 2, shape))
    raise ValueError(f"loss_cases: unknown loss {name!r}; known: mse, cross_entropy, bce, "
                     f"bce_with_logits, kl_divergence_normal")
