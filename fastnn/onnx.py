"""ONNX export: a ``Sequential``, graph ``Model`` or seq2seq model as an ONNX graph that computes ``model.predict``.

    import fastnn as fnn
    fnn.onnx.export(model, "model.onnx", X[:1])          # pip install ".[onnx]"

    import onnxruntime as ort                            # any ONNX runtime reads the file
    y = ort.InferenceSession("model.onnx").run(None, {"input": X})[0]

The graph has one input ``input`` and one output ``output`` (``input_0``, ``output_0``, ... for a
graph model with several); the batch axis is dynamic (named ``batch``), every other axis has the size it has in ``example_input``. Parameters are stored
as initializers named by the model's state-dict keys (``"0.weight"``). Layers map to ONNX
operators as follows (inference mode: dropout is the identity, batch norm uses the running
statistics):

    Dense            Gemm (2-D input) or MatMul + Add
    Conv2D, Conv1D   Conv (dilations, group, asymmetric pads)   ConvTranspose2D   ConvTranspose
    MaxPool1D, AvgPool1D  MaxPool, AveragePool over one axis
    MaxPool2D        MaxPool                  AvgPool2D         AveragePool (count_include_pad)
    Upsample2D       Resize (nearest, asymmetric, floor)
    BatchNorm1D/2D   BatchNormalization       Dropout, Identity Identity
    Flatten          Flatten(axis=1)          Reshape           Reshape([0, *shape])
    ReLU, LeakyReLU, Sigmoid, Tanh, Softmax, ELU   the operators of the same names
    GELU             Erf (exact) or Tanh (approximate="tanh") arithmetic; SiLU  x * Sigmoid(x)
    LayerNorm        LayerNormalization (opset >= 17)
    LocalResponseNorm  LRN (odd sizes: ONNX centres an even window differently)
    Step             Cast(Greater(x, 0))
    AdaptiveAvgPool2D  AveragePool, when the output size divides the input size
    Embedding        Gather (ids cast to int64)
    RNN, LSTM, GRU   RNN, LSTM, GRU on the time-major input (Transpose around them), one node
                     per layer of a stack, direction="bidirectional" for two directions; gates
                     reordered from PyTorch's (i, f, g, o) to ONNX's (i, o, f, c) and from
                     (r, z, n) to (z, r, h), GRU with linear_before_reset=1
    Residual         the inner layer's nodes, then Add
    MultiheadAttention  MatMul/Add projections, Reshape/Transpose to heads, MatMul, Mul (scale),
                     the masks a model applies (Where(mask, -inf, scores)), Softmax, MatMul,
                     the output projection; in a Sequential or graph model it is called without
                     masks, and so exported
    TransformerEncoderLayer, TransformerDecoderLayer  their sublayers' nodes (a decoder layer in
                     a graph model called on [tgt, memory]); PositionalEncoding  Add of the code
    Sequential       its layers' nodes (a nested Sequential is inlined)
    Model (graph)    its layers' nodes in topological order; Add, Multiply, Concatenate as Add,
                     Mul, Concat
    GRUSeq2Seq, TransformerSeq2Seq  the teacher-forced forward in inference mode, inputs
                     ``input_0`` (source ids) and ``input_1`` (decoder input ids), batch and
                     both lengths dynamic: the source padding mask Equal(src, 0), the causal
                     mask Greater(Range(T), Range(T)^T) from the decoder input's length, the
                     positional code Sliced to the length, the GRU decoder's initial state
                     GatherElements of the encoder state at each source's last token
    Word2Vec         Gather of the word vectors (``embeddings[ids]``)

The graph is built with ``onnx.helper`` and checked with ``onnx.checker`` before it is written.
"""
import contextlib
import math
import os

import numpy as np

__all__ = ["export", "SUPPORTED_LAYERS"]

MIN_OPSET = 13  # Squeeze with axes as an input, Softmax over one axis, Resize without roi

SUPPORTED_LAYERS = ("Dense", "Conv2D", "Conv1D", "MaxPool1D", "AvgPool1D", "ConvTranspose2D", "MaxPool2D", "AvgPool2D", "Upsample2D",
                    "AdaptiveAvgPool2D", "BatchNorm1D", "BatchNorm2D", "LayerNorm", "Dropout",
                    "Identity", "Flatten", "Reshape", "ReLU", "LeakyReLU", "Sigmoid", "Tanh",
                    "Softmax", "GELU", "SiLU", "ELU", "Step", "LocalResponseNorm", "Embedding",
                    "RNN", "LSTM", "GRU", "Residual", "MultiheadAttention", "TransformerEncoderLayer",
                    "TransformerDecoderLayer", "PositionalEncoding", "Sequential", "Model")


def _import_onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError as err:
        raise ImportError("fnn.onnx.export needs the onnx package: pip install 'fastnn[onnx]' "
                          "(or pip install onnx)") from err
    return onnx, helper, numpy_helper


class _Graph:
    """Nodes and initializers being collected, with unique value names."""

    def __init__(self, onnx, helper, numpy_helper, dtype):
        self.onnx, self.helper, self.numpy_helper = onnx, helper, numpy_helper
        self.dtype = np.dtype(dtype)
        self.opset = None
        self.dynamic_time = False  # the sequence axes are dynamic too (seq2seq models)
        self.nodes, self.initializers = [], []
        self._names = set()
        self._count = 0

    def name(self, hint):
        base = hint.replace("/", "_")
        name, k = base, 1
        while name in self._names:
            name, k = f"{base}_{k}", k + 1
        self._names.add(name)
        return name

    def const(self, hint, array):
        name = self.name(hint)
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def float_const(self, hint, array):
        return self.const(hint, np.asarray(array, dtype=self.dtype))

    def node(self, op, inputs, hint, n_outputs=1, **attrs):
        self._count += 1
        outputs = [self.name(f"{hint}_{op.lower()}" + (f"_{k}" if k else ""))
                   for k in range(n_outputs)]
        self.nodes.append(self.helper.make_node(op, list(inputs), outputs,
                                                name=f"{op}_{self._count}", **attrs))
        return outputs[0] if n_outputs == 1 else outputs


def _unsupported(layer, where):
    describe = getattr(layer, "describe", None)
    text = describe() if describe is not None else type(layer).__name__
    return NotImplementedError(
        f"fnn.onnx.export: {where} {text} (class {type(layer).__name__}) has no ONNX "
        f"conversion; supported layers: {', '.join(SUPPORTED_LAYERS)}")


def _pairs_attrs(layer):
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.padding
    return {"kernel_shape": [kh, kw], "strides": [sh, sw], "pads": [ph, pw, ph, pw]}


def _reorder(array, blocks, order):
    """Rows of ``array`` in ``blocks`` equal blocks, permuted to ``order`` (gate reordering)."""
    parts = np.split(np.asarray(array), blocks, axis=0)
    return np.concatenate([parts[i] for i in order], axis=0)


# PyTorch's gate order -> ONNX's: LSTM (i, f, g, o) -> (i, o, f, c); GRU (r, z, n) -> (z, r, h)
_GATE_ORDER = {"RNN": (1, (0,)), "LSTM": (4, (0, 3, 1, 2)), "GRU": (3, (1, 0, 2))}


def _convert(g, layer, x, x_value, prefix, where):
    """Append ``layer``'s nodes reading value ``x`` (whose example array is ``x_value``);
    returns the output value's name and the example output."""
    from .layers.base import Layer
    from .model import Sequential

    kind = type(layer).__name__
    hint = prefix.rstrip(".") or "layer"
    if isinstance(layer, Sequential):
        for i, sub in enumerate(layer.layers):
            x, x_value = _convert(g, sub, x, x_value, f"{prefix}{i}.", f"layer {prefix}{i}")
        return x, x_value
    if not isinstance(layer, Layer):
        raise _unsupported(layer, where)
    # the example output: the layer's own inference-mode forward
    y_value = layer.forward(x_value, training=False)
    if kind == "Residual":
        if type(layer).forward is not _layer_class("Residual").forward:
            raise _unsupported(layer, where)
        inner, _ = _convert(g, layer.inner, x, x_value, f"{prefix}inner.", f"{where} (inner)")
        return g.node("Add", [x, inner], hint), y_value
    known = _CONVERTERS.get(kind)
    # exact classes only: a subclass may compute something else
    if known is None or type(layer) is not _layer_class(kind):
        raise _unsupported(layer, where)
    return known(g, layer, x, x_value, prefix, hint), y_value


def _layer_class(name):
    from . import layers
    return layers.get(name)


def _dense(g, layer, x, x_value, prefix, hint):
    w = layer.weight.data
    if x_value.ndim == 2:
        inputs = [x, g.const(prefix + "weight", w)]
        if layer.bias is not None:
            inputs.append(g.const(prefix + "bias", layer.bias.data))
        return g.node("Gemm", inputs, hint, transB=1)
    y = g.node("MatMul", [x, g.const(prefix + "weight_t", np.ascontiguousarray(w.T))], hint)
    if layer.bias is not None:
        y = g.node("Add", [y, g.const(prefix + "bias", layer.bias.data)], hint)
    return y


def _conv(g, layer, x, x_value, prefix, hint):
    """Conv2D (dilation, groups, asymmetric "same" padding included) and Conv1D (one spatial axis)."""
    inputs = [x, g.const(prefix + "weight", layer.weight.data)]
    if layer.bias is not None:
        inputs.append(g.const(prefix + "bias", layer.bias.data))
    (kh, kw), (sh, sw), (dh, dw) = layer._kernel2, layer._stride2, layer._dilation2
    pt, pb, pl, pr = layer._pads
    if type(layer).__name__ == "Conv1D":
        attrs = dict(kernel_shape=[kw], strides=[sw], dilations=[dw], pads=[pl, pr])
    else:
        attrs = dict(kernel_shape=[kh, kw], strides=[sh, sw], dilations=[dh, dw],
                     pads=[pt, pl, pb, pr])
    return g.node("Conv", inputs, hint, group=int(layer.groups), **attrs)


def _pool1d(op):
    def convert(g, layer, x, x_value, prefix, hint):
        attrs = dict(kernel_shape=[layer.kernel_size[1]], strides=[layer.stride[1]],
                     pads=[layer.padding[1]] * 2)
        if op == "AveragePool":
            attrs["count_include_pad"] = 1
        return g.node(op, [x], hint, **attrs)
    return convert


def _conv_transpose(g, layer, x, x_value, prefix, hint):
    inputs = [x, g.const(prefix + "weight", layer.weight.data)]
    if layer.bias is not None:
        inputs.append(g.const(prefix + "bias", layer.bias.data))
    return g.node("ConvTranspose", inputs, hint, output_padding=list(layer.output_padding),
                  **_pairs_attrs(layer))


def _maxpool(g, layer, x, x_value, prefix, hint):
    return g.node("MaxPool", [x], hint, **_pairs_attrs(layer))


def _avgpool(g, layer, x, x_value, prefix, hint):
    return g.node("AveragePool", [x], hint, count_include_pad=1, **_pairs_attrs(layer))


def _upsample(g, layer, x, x_value, prefix, hint):
    s = float(layer.scale_factor)
    scales = g.const(prefix + "scales", np.array([1.0, 1.0, s, s], np.float32))
    return g.node("Resize", [x, "", scales], hint, mode="nearest",
                  coordinate_transformation_mode="asymmetric", nearest_mode="floor")


def _batchnorm(g, layer, x, x_value, prefix, hint):
    inputs = [x] + [g.const(prefix + name, getattr(layer, name) if name.startswith("running")
                            else getattr(layer, name).data)
                    for name in ("weight", "bias", "running_mean", "running_var")]
    return g.node("BatchNormalization", inputs, hint, epsilon=layer.eps)


def _identity(g, layer, x, x_value, prefix, hint):
    return g.node("Identity", [x], hint)


def _flatten(g, layer, x, x_value, prefix, hint):
    return g.node("Flatten", [x], hint, axis=1)


def _reshape(g, layer, x, x_value, prefix, hint):
    # 0 copies the (dynamic) batch axis; -1 is inferred, as in Reshape's own rule
    shape = g.const(prefix + "shape", np.array([0, *layer.shape], np.int64))
    return g.node("Reshape", [x, shape], hint)


def _simple(op):
    def convert(g, layer, x, x_value, prefix, hint):
        return g.node(op, [x], hint)
    return convert


def _leaky(g, layer, x, x_value, prefix, hint):
    return g.node("LeakyRelu", [x], hint, alpha=layer.negative_slope)


def _softmax(g, layer, x, x_value, prefix, hint):
    return g.node("Softmax", [x], hint, axis=layer.axis)


def _embedding(g, layer, x, x_value, prefix, hint):
    ids = x if x_value.dtype == np.int64 else g.node("Cast", [x], hint, to=g.onnx.TensorProto.INT64)
    return g.node("Gather", [g.const(prefix + "weight", layer.weight.data), ids], hint, axis=0)


def _recurrent(g, layer, x, x_value, prefix, hint, initial_h=None):
    """``initial_h`` (dirs, N, H): the first layer's initial state (a GRU decoder's h0)."""
    kind = type(layer).__name__
    blocks, order = _GATE_ORDER[kind]
    dirs = 2 if getattr(layer, "bidirectional", False) else 1
    attrs = {"hidden_size": layer.hidden_size,
             "direction": "bidirectional" if dirs == 2 else "forward"}
    if kind == "GRU":
        attrs["linear_before_reset"] = 1  # PyTorch's n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    params = dict(layer.named_parameters())
    keep_two = g.const(prefix + "shape_tn", np.array([0, 0, -1], np.int64))
    seq = g.node("Transpose", [x], hint, perm=[1, 0, 2])  # (T, N, F): ONNX's default layout
    y_h = None
    for k in range(getattr(layer, "num_layers", 1)):
        suffixes = [f"_l{k}"] + ([f"_l{k}_reverse"] if dirs == 2 else [])

        def stacked(name, suffixes=suffixes):
            return np.stack([_reorder(params[name + s].data, blocks, order) for s in suffixes])

        w, r = stacked("weight_ih"), stacked("weight_hh")
        b = np.concatenate([stacked("bias_ih"), stacked("bias_hh")], axis=1)
        inputs = [seq, g.const(f"{prefix}W_l{k}", w), g.const(f"{prefix}R_l{k}", r),
                  g.const(f"{prefix}B_l{k}", b)]
        if initial_h is not None and k == 0:
            inputs += ["", initial_h]  # no sequence_lens: every step runs, as fastnn's
        y, y_h = g.node(kind, inputs, hint, n_outputs=3 if kind == "LSTM" else 2, **attrs)[:2]
        # Y (T, dirs, N, H) -> (T, N, dirs*H): the next layer's input, directions concatenated
        seq = g.node("Reshape", [g.node("Transpose", [y], hint, perm=[0, 2, 1, 3]), keep_two], hint)
        # (between layers, dropout is the identity in inference)
    if layer.return_sequences:
        return g.node("Transpose", [seq], hint, perm=[1, 0, 2])
    # the last step: each direction's final state, Y_h (dirs, N, H) -> (N, dirs*H)
    keep_one = g.const(prefix + "shape_n", np.array([0, -1], np.int64))
    return g.node("Reshape", [g.node("Transpose", [y_h], hint, perm=[1, 0, 2]), keep_one], hint)


def _gelu(g, layer, x, x_value, prefix, hint):
    half = g.float_const(prefix + "half", 0.5)
    one = g.float_const(prefix + "one", 1.0)
    if layer.approximate == "tanh":  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        cube = g.node("Mul", [g.node("Mul", [x, x], hint), x], hint)
        inner = g.node("Add", [x, g.node("Mul", [cube, g.float_const(prefix + "c", 0.044715)], hint)], hint)
        t = g.node("Tanh", [g.node("Mul", [inner, g.float_const(prefix + "k", np.sqrt(2 / np.pi))], hint)], hint)
    else:  # 0.5 x (1 + erf(x / sqrt(2)))
        t = g.node("Erf", [g.node("Mul", [x, g.float_const(prefix + "k", 1 / np.sqrt(2))], hint)], hint)
    return g.node("Mul", [g.node("Mul", [x, half], hint), g.node("Add", [t, one], hint)], hint)


def _silu(g, layer, x, x_value, prefix, hint):
    return g.node("Mul", [x, g.node("Sigmoid", [x], hint)], hint)


def _elu(g, layer, x, x_value, prefix, hint):
    return g.node("Elu", [x], hint, alpha=layer.alpha)


def _layer_norm(g, layer, x, x_value, prefix, hint):
    if g.opset < 17:
        raise NotImplementedError(f"fnn.onnx.export: {layer.describe()} needs opset >= 17 "
                                  f"(LayerNormalization), got {g.opset}")
    shape = layer.normalized_shape
    scale = layer.weight.data if layer.weight is not None else np.ones(shape)
    bias = layer.bias.data if layer.bias is not None else np.zeros(shape)
    return g.node("LayerNormalization", [x, g.float_const(prefix + "weight", scale),
                                         g.float_const(prefix + "bias", bias)], hint,
                  axis=-len(shape), epsilon=layer.eps)


def _lrn(g, layer, x, x_value, prefix, hint):
    # torch's window is c - size//2 .. c + (size-1)//2, ONNX's c - (size-1)//2 .. c + size//2:
    # the same for an odd size
    if layer.size % 2 == 0:
        raise NotImplementedError(
            f"fnn.onnx.export: {layer.describe()}: ONNX's LRN centres an even window one channel "
            f"later than PyTorch's; exportable with an odd size")
    return g.node("LRN", [x], hint, size=layer.size, alpha=layer.alpha, beta=layer.beta,
                  bias=layer.k)


def _step(g, layer, x, x_value, prefix, hint):
    positive = g.node("Greater", [x, g.float_const(prefix + "zero", 0.0)], hint)
    return g.node("Cast", [positive], hint, to=g.helper.np_dtype_to_tensor_dtype(g.dtype))


def _adaptive_avgpool(g, layer, x, x_value, prefix, hint):
    sizes = x_value.shape[2:]
    out = [s if o is None else o for s, o in zip(sizes, layer.output_size)]
    if any(s % o for s, o in zip(sizes, out)):
        raise NotImplementedError(
            f"fnn.onnx.export: {layer.describe()} on a {sizes[0]}x{sizes[1]} input has windows of "
            f"unequal sizes (ONNX has no adaptive pooling); exportable when the output size "
            f"divides the input size")
    kernel = [s // o for s, o in zip(sizes, out)]
    return g.node("AveragePool", [x], hint, kernel_shape=kernel, strides=kernel)


def _attention(g, layer, q, k, v, q_value, kv_value, prefix, hint, key_padding=None,
               causal=False):
    """MultiheadAttention in inference (no dropout): projections, per-head scaled scores, the
    masks, softmax, the weighted values, the output projection. ``key_padding``: a bool value
    (N, S), True = a key to ignore; ``causal``: query i attends to keys j <= i only (computed
    from the sequence length, so the time axis may stay dynamic). A masked score becomes -inf
    (Where), as fastnn's additive -inf masks."""
    e, h, d = layer.embed_dim, layer.num_heads, layer.head_dim
    l = q_value.shape[1]
    w = layer.in_proj_weight.data
    b = layer.in_proj_bias.data if layer.in_proj_bias is not None else None

    def project(x, i, perm, name):
        y = g.node("MatMul", [x, g.const(f"{prefix}{name}_weight_t", np.ascontiguousarray(w[i * e:(i + 1) * e].T))], hint)
        if b is not None:
            y = g.node("Add", [y, g.const(f"{prefix}{name}_bias", b[i * e:(i + 1) * e])], hint)
        y = g.node("Reshape", [y, g.const(f"{prefix}{name}_heads", np.array([0, -1, h, d], np.int64))], hint)
        return g.node("Transpose", [y], hint, perm=perm)

    qh = project(q, 0, [0, 2, 1, 3], "q")            # (N, H, L, d)
    kt = project(k, 1, [0, 2, 3, 1], "k")            # (N, H, d, S)
    vh = project(v, 2, [0, 2, 1, 3], "v")            # (N, H, S, d)
    scores = g.node("Mul", [g.node("MatMul", [qh, kt], hint), g.float_const(prefix + "scale", 1 / np.sqrt(d))], hint)
    if causal:
        scores = g.node("Where", [_causal_blocked(g, q, prefix, hint), g.float_const(prefix + "neg_inf", -np.inf),
                                  scores], hint)
    if key_padding is not None:  # (N, S) -> (N, 1, 1, S): every head and query of the sample
        pad = g.node("Unsqueeze", [key_padding, g.const(prefix + "pad_axes", np.array([1, 2], np.int64))], hint)
        scores = g.node("Where", [pad, g.float_const(prefix + "pad_inf", -np.inf), scores], hint)
    ctx = g.node("MatMul", [g.node("Softmax", [scores], hint, axis=-1), vh], hint)
    ctx = g.node("Transpose", [ctx], hint, perm=[0, 2, 1, 3])
    ctx = g.node("Reshape", [ctx, g.const(prefix + "merge", np.array([0, -1, e], np.int64))], hint)
    out, _ = _convert(g, layer.out_proj, ctx, np.zeros((1, l, e), q_value.dtype), prefix + "out_proj.", "out_proj")
    return out


def _causal_blocked(g, x, prefix, hint):
    """Bool (T, T), True above the diagonal (key after query), T = x's axis 1 at run time:
    causal_mask(T)'s -inf entries."""
    t = g.node("Gather", [g.node("Shape", [x], hint), g.const(prefix + "time_axis", np.array(1, np.int64))],
               hint, axis=0)
    steps = g.node("Range", [g.const(prefix + "zero", np.array(0, np.int64)), t,
                             g.const(prefix + "one", np.array(1, np.int64))], hint)
    rows = g.node("Unsqueeze", [steps, g.const(prefix + "col_axis", np.array([1], np.int64))], hint)
    cols = g.node("Unsqueeze", [steps, g.const(prefix + "row_axis", np.array([0], np.int64))], hint)
    return g.node("Greater", [cols, rows], hint)


def _mha(g, layer, x, x_value, prefix, hint):
    return _attention(g, layer, x, x, x, x_value, x_value, prefix, hint)


def _sub(g, layer, x, x_value, prefix, name):
    """A sublayer's nodes and its example output."""
    return _convert(g, getattr(layer, name), x, x_value, f"{prefix}{name}.", f"{prefix}{name}")


def _residual_norm(g, layer, x, x_value, delta, delta_value, prefix, norm):
    s, s_value = g.node("Add", [x, delta], prefix.rstrip(".")), x_value + delta_value
    return _sub(g, layer, s, s_value, prefix, norm)


def _feedforward(g, layer, x, x_value, prefix):
    y, y_value = _sub(g, layer, x, x_value, prefix, "linear1")
    y, y_value = _sub(g, layer, y, y_value, prefix, "activation")
    return _sub(g, layer, y, y_value, prefix, "linear2")


def _block(g, layer, x, x_value, prefix, attend, norm, post_norm):
    """x + attend(...) with the layer norm after (post-norm) or before (norm_first)."""
    if post_norm:
        a, a_value = attend(x, x_value)
        return _residual_norm(g, layer, x, x_value, a, a_value, prefix, norm)
    n, n_value = _sub(g, layer, x, x_value, prefix, norm)
    a, a_value = attend(n, n_value)
    return g.node("Add", [x, a], prefix.rstrip(".")), x_value + a_value


def _self_attend(g, layer, prefix, key_padding=None, causal=False):
    def attend(x, x_value):
        sa = layer.self_attn
        return (_attention(g, sa, x, x, x, x_value, x_value, prefix + "self_attn.", prefix + "self_attn",
                           key_padding, causal),
                sa.forward(x_value, training=False))  # the example value: its shape only
    return attend


def _ff_attend(g, layer, prefix):
    return lambda x, x_value: _feedforward(g, layer, x, x_value, prefix)


def _encoder(g, layer, x, x_value, prefix, hint, key_padding=None):
    post = not layer.norm_first
    x, x_value = _block(g, layer, x, x_value, prefix, _self_attend(g, layer, prefix, key_padding),
                        "norm1", post)
    x, _ = _block(g, layer, x, x_value, prefix, _ff_attend(g, layer, prefix), "norm2", post)
    return x


def _decoder(g, layer, names, values, prefix, causal=False, memory_padding=None):
    """A TransformerDecoderLayer on [tgt, memory] (in a graph model: no masks; in a
    TransformerSeq2Seq: the causal mask and the source's padding)."""
    (x, mem), (x_value, mem_value) = names, values
    post = not layer.norm_first

    def cross(q, q_value):
        ca = layer.multihead_attn
        return (_attention(g, ca, q, mem, mem, q_value, mem_value, prefix + "multihead_attn.",
                           prefix + "multihead_attn", memory_padding),
                ca.forward(q_value, mem_value, mem_value, training=False))

    x, x_value = _block(g, layer, x, x_value, prefix, _self_attend(g, layer, prefix, causal=causal),
                        "norm1", post)
    x, x_value = _block(g, layer, x, x_value, prefix, cross, "norm2", post)
    x, _ = _block(g, layer, x, x_value, prefix, _ff_attend(g, layer, prefix), "norm3", post)
    return x


def _positional(g, layer, x, x_value, prefix, hint):
    if not g.dynamic_time:
        pe = layer.table()[None, : x_value.shape[1]]
        return g.node("Add", [x, g.float_const(prefix + "pe", pe)], hint)
    # the whole table (1, max_len, d), its first T rows taken at run time
    t = g.node("Slice", [g.node("Shape", [x], hint), g.const(prefix + "t_start", np.array([1], np.int64)),
                         g.const(prefix + "t_end", np.array([2], np.int64))], hint)
    pe = g.node("Slice", [g.float_const(prefix + "pe", layer.table()[None]),
                          g.const(prefix + "zero", np.array([0], np.int64)), t,
                          g.const(prefix + "axis", np.array([1], np.int64))], hint)
    return g.node("Add", [x, pe], hint)


_CONVERTERS = {
    "Dense": _dense, "Conv2D": _conv, "Conv1D": _conv, "ConvTranspose2D": _conv_transpose,
    "MaxPool1D": _pool1d("MaxPool"), "AvgPool1D": _pool1d("AveragePool"),
    "MaxPool2D": _maxpool, "AvgPool2D": _avgpool, "Upsample2D": _upsample,
    "BatchNorm1D": _batchnorm, "BatchNorm2D": _batchnorm,
    "Dropout": _identity, "Identity": _identity, "Flatten": _flatten, "Reshape": _reshape,
    "ReLU": _simple("Relu"), "Sigmoid": _simple("Sigmoid"), "Tanh": _simple("Tanh"),
    "LeakyReLU": _leaky, "Softmax": _softmax, "Embedding": _embedding,
    "RNN": _recurrent, "LSTM": _recurrent, "GRU": _recurrent,
    "GELU": _gelu, "SiLU": _silu, "ELU": _elu, "LayerNorm": _layer_norm,
    "AdaptiveAvgPool2D": _adaptive_avgpool, "LocalResponseNorm": _lrn, "Step": _step,
    "MultiheadAttention": _mha, "TransformerEncoderLayer": _encoder,
    "PositionalEncoding": _positional,
}


def _tensor_type(onnx, dtype):
    from onnx import helper
    try:
        return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    except (KeyError, TypeError, ValueError):
        raise TypeError(f"fnn.onnx.export: no ONNX type for dtype {dtype}") from None


def _example(where, x, dtype):
    x = np.asarray(x)
    if x.ndim < 1 or len(x) == 0:
        raise ValueError(f"fnn.onnx.export: {where} must have shape (N, ...) with N >= 1, "
                         f"got {x.shape}")
    if x.dtype.kind == "f":
        return x.astype(dtype, copy=False)
    if x.dtype.kind not in "iu":
        raise TypeError(f"fnn.onnx.export: {where} must be a float or integer array, got "
                        f"dtype {x.dtype}")
    return x


def _merge(g, layer, names, values, hint):
    """A graph model's merge layer (Add, Multiply, Concatenate) on its input values."""
    kind = type(layer).__name__
    if kind == "Concatenate":
        axis = layer.axis if layer.axis >= 0 else layer.axis + values[0].ndim
        return g.node("Concat", names, hint, axis=axis)
    op = "Add" if kind == "Add" else "Mul"
    out = names[0]
    for name in names[1:]:
        out = g.node(op, [out, name], hint)
    return out


# layers a graph model may call on a list of tensors
_LIST_LAYERS = ("Add", "Multiply", "Concatenate", "TransformerDecoderLayer", "MultiheadAttention")


def _convert_graph(g, model, xs):
    """The nodes of a graph ``fnn.Model`` in its topological order; returns the output names
    and example values."""
    names = {id(t): ("input" if len(xs) == 1 else f"input_{i}") for i, t in enumerate(model._inputs)}
    values = {id(t): x for t, x in zip(model._inputs, xs)}
    for node in model._nodes:
        layer = node.layer
        args = [names[id(t)] for t in node.inputs]
        vals = [values[id(t)] for t in node.inputs]
        where = f"layer {layer.name!r}"
        if node.as_list:
            kind = type(layer).__name__
            if kind not in _LIST_LAYERS or type(layer) is not _layer_class(kind):
                raise _unsupported(layer, where)
            value = layer.forward(vals, training=False)
            if kind == "TransformerDecoderLayer":
                out = _decoder(g, layer, args, vals, f"{layer.name}.")
            elif kind == "MultiheadAttention":
                q, k, v = (args + args[-1:] * 2)[:3]
                qv, kv = vals[0], vals[1] if len(vals) > 1 else vals[0]
                out = _attention(g, layer, q, k, v, qv, kv, f"{layer.name}.", layer.name)
            else:
                out = _merge(g, layer, args, vals, layer.name)
        else:
            out, value = _convert(g, layer, args[0], vals[0], f"{layer.name}.", where)
        names[id(node.output)], values[id(node.output)] = out, value
    return ([names[id(t)] for t in model._outputs], [values[id(t)] for t in model._outputs])


def _ids64(g, x, value, hint):
    return x if value.dtype == np.int64 else g.node("Cast", [x], hint, to=g.onnx.TensorProto.INT64)


def _padding(g, src, hint):
    """Bool (N, S): True at the source's padding id 0 (the models' key_padding_mask)."""
    return g.node("Equal", [src, g.const("pad_id", np.array(0, np.int64))], hint)


def _convert_gru_seq2seq(g, model, names, values):
    """GRUSeq2Seq.forward([src, tgt_in], training=False): the encoder GRU over the embedded
    source, the decoder GRU from the encoder state at each source's last non-padding token,
    attention over the encoder states (padding masked), Tanh(combine([ctx; dec])), out."""
    (src, tgt), (src_value, tgt_value) = names, values
    src, tgt = _ids64(g, src, src_value, "src"), _ids64(g, tgt, tgt_value, "tgt")
    src_value, tgt_value = src_value.astype(np.int64), tgt_value.astype(np.int64)
    pad = _padding(g, src, "src")
    # last = max(#non-padding, 1) - 1, as encode's
    count = g.node("ReduceSum", [g.node("Cast", [g.node("Not", [pad], "src")], "src", to=g.onnx.TensorProto.INT64),
                                 g.const("sum_axis", np.array([1], np.int64))], "src", keepdims=0)
    one = g.const("one", np.array(1, np.int64))
    last = g.node("Sub", [g.node("Max", [count, one], "src"), one], "src")
    emb, emb_value = _convert(g, model.src_embed, src, src_value, "src_embed.", "src_embed")
    states, states_value = _convert(g, model.encoder, emb, emb_value, "encoder.", "encoder")   # (N, S, H)
    h = model.hidden_size
    index = g.node("Expand", [g.node("Reshape", [last, g.const("last_shape", np.array([-1, 1, 1], np.int64))], "h0"),
                              g.const("h0_shape", np.array([1, 1, h], np.int64))], "h0")
    h0 = g.node("GatherElements", [states, index], "h0", axis=1)                                # (N, 1, H)
    h0 = g.node("Transpose", [h0], "h0", perm=[1, 0, 2])                                        # (1, N, H)
    temb, temb_value = _convert(g, model.tgt_embed, tgt, tgt_value, "tgt_embed.", "tgt_embed")
    rows = np.arange(len(src_value))
    last_value = np.maximum((src_value != 0).sum(axis=1), 1) - 1
    h0_value = np.ascontiguousarray(states_value[rows, last_value])
    dec_value = model.decoder.forward(temb_value, training=False, h0=h0_value)
    dec = _recurrent(g, model.decoder, temb, temb_value, "decoder.", "decoder", initial_h=h0)
    ctx = _attention(g, model.attention, dec, states, states, dec_value, states_value, "attention.",
                     "attention", key_padding=pad)
    mixed = g.node("Concat", [ctx, dec], "combine", axis=2)
    mixed_value = np.concatenate([dec_value, dec_value], axis=2)  # the shape of [ctx; dec]
    mixed, mixed_value = _convert(g, model.combine, mixed, mixed_value, "combine.", "combine")
    mixed, mixed_value = _convert(g, model.tanh, mixed, mixed_value, "tanh.", "tanh")
    return _convert(g, model.out, mixed, mixed_value, "out.", "out")[0]


def _convert_transformer_seq2seq(g, model, names, values):
    """TransformerSeq2Seq.forward([src, tgt_in], training=False): scaled embeddings plus the
    positional code, the encoder layers (source padding masked), its LayerNorm, the decoder
    layers (the causal mask on self-attention, the source padding on cross-attention), its
    LayerNorm, out."""
    (src, tgt), (src_value, tgt_value) = names, values
    src, tgt = _ids64(g, src, src_value, "src"), _ids64(g, tgt, tgt_value, "tgt")
    src_value, tgt_value = src_value.astype(np.int64), tgt_value.astype(np.int64)
    pad = _padding(g, src, "src")
    scale = g.float_const("embed_scale", np.asarray(math.sqrt(model.d_model), dtype=g.dtype))

    def embed(ids, ids_value, embedding, position, name):
        x, x_value = _convert(g, embedding, ids, ids_value, f"{name}_embed.", f"{name}_embed")
        x = g.node("Mul", [x, scale], f"{name}_embed")
        return _convert(g, position, x, x_value, f"{name}_position.", f"{name}_position")

    x, x_value = embed(src, src_value, model.src_embed, model.src_position, "src")
    for i, layer in enumerate(model.encoder_layers):
        prefix = f"encoder.layers.{i}."
        x = _encoder(g, layer, x, x_value, prefix, prefix.rstrip("."), key_padding=pad)
    memory, memory_value = _convert(g, model.encoder_norm, x, x_value, "encoder.norm.", "encoder.norm")
    y, y_value = embed(tgt, tgt_value, model.tgt_embed, model.tgt_position, "tgt")
    for i, layer in enumerate(model.decoder_layers):
        y = _decoder(g, layer, [y, memory], [y_value, memory_value], f"decoder.layers.{i}.",
                     causal=True, memory_padding=pad)
    y, y_value = _convert(g, model.decoder_norm, y, y_value, "decoder.norm.", "decoder.norm")
    return _convert(g, model.out, y, y_value, "out.", "out")[0]


def _seq2seq_kind(model):
    from .models.seq2seq import GRUSeq2Seq, TransformerSeq2Seq
    for cls, convert in ((GRUSeq2Seq, _convert_gru_seq2seq),
                         (TransformerSeq2Seq, _convert_transformer_seq2seq)):
        if type(model) is cls:
            return convert
    return None


def _is_word2vec(model):
    from .models.word2vec import Word2Vec
    return type(model) is Word2Vec


def export(model, path, example_input, opset=17):
    """Write ``model`` as an ONNX file that computes ``model.predict``.

    Args:
        model: a ``fastnn.Sequential``, a graph ``fastnn.Model`` (its merge layers become Add,
            Mul and Concat) or a single layer, of the built-in layers listed in this module's
            docstring; a ``fastnn.models.GRUSeq2Seq`` or ``TransformerSeq2Seq``; a
            ``fastnn.models.Word2Vec``. Anything else raises ``NotImplementedError`` naming
            the layer.
        path: the ``.onnx`` file to write.
        example_input: an array of the input's shape and dtype (``(1, 1, 28, 28)`` float32, or
            integer ids ``(1, T)`` for a model that starts with an Embedding), or a list of them
            for a graph model with several inputs, ``[src, tgt_in]`` (ids) for a seq2seq model,
            ids for a Word2Vec; the batch axis becomes dynamic, the others keep these sizes
            (but a seq2seq model's sequence axes, which stay dynamic).
        opset: the ONNX operator set version (at least 13).

    The graph's inputs are named ``input`` (``input_0``, ``input_1``, ... for several), its
    outputs ``output`` (``output_0``, ...). Returns the ``onnx.ModelProto`` that was written
    (already checked by ``onnx.checker``).

    A seq2seq model exports its teacher-forced forward in inference mode,
    ``model.forward([src, tgt_in], training=False)``: inputs ``input_0`` = source ids
    (N, src_len) and ``input_1`` = decoder input ids (N, tgt_len) (``[bos] + tgt[:, :-1]``
    when scoring a known target; the tokens decoded so far when decoding), output the logits
    (N, tgt_len, tgt_vocab); batch, src_len and tgt_len are dynamic, so greedy decoding runs
    the graph once per step with the decoded prefix and takes the last position's argmax, as
    ``greedy_decode``. The source padding (id 0) and the decoder's causal mask are computed
    in the graph. A Word2Vec exports its word vectors: ``output = embeddings[input]``.
    """
    onnx, helper, numpy_helper = _import_onnx()
    from .graph import Model
    from .layers.base import Layer

    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)):
        raise TypeError(f"fnn.onnx.export: opset must be an int, got {opset!r}")
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise ValueError(f"fnn.onnx.export: opset must be in [{MIN_OPSET}, {newest}] (the onnx "
                         f"package installed knows up to {newest}), got {opset}")
    word2vec = _is_word2vec(model)
    if not isinstance(model, Layer) and not word2vec:
        raise TypeError(f"fnn.onnx.export: model must be a fastnn Sequential, Model, layer, "
                        f"seq2seq model or Word2Vec, got {type(model).__name__}")
    seq2seq = None if word2vec else _seq2seq_kind(model)
    dtype = np.dtype(model.embeddings.dtype if word2vec else model.dtype)
    graph_model = isinstance(model, Model)
    n_inputs = model.n_inputs if graph_model else 2 if seq2seq else 1
    if n_inputs > 1:
        what = "[src, tgt_in] (token ids)" if seq2seq else f"a list of {n_inputs} arrays"
        if not isinstance(example_input, (list, tuple)) or len(example_input) != n_inputs:
            raise ValueError(f"fnn.onnx.export: the model has {n_inputs} inputs; example_input "
                             f"must be {what}")
        xs = [_example(f"example_input[{i}]", x, dtype) for i, x in enumerate(example_input)]
    else:
        if graph_model and isinstance(example_input, (list, tuple)) and len(example_input) == 1:
            example_input = example_input[0]
        xs = [_example("example_input", example_input, dtype)]
    if (seq2seq or word2vec) and any(x.dtype.kind not in "iu" for x in xs):
        raise TypeError(f"fnn.onnx.export: {type(model).__name__} takes integer token ids, got "
                        f"{', '.join(str(x.dtype) for x in xs)}")
    in_names = ["input"] if n_inputs == 1 else [f"input_{i}" for i in range(n_inputs)]
    g = _Graph(onnx, helper, numpy_helper, dtype)
    g.opset = int(opset)
    g.dynamic_time = seq2seq is not None
    g._names.update(in_names)
    lock = getattr(model, "_lock", None)
    with lock if lock is not None else contextlib.nullcontext():
        if word2vec:
            table = g.const("embeddings", model.embeddings)
            outs = [g.node("Gather", [table, _ids64(g, "input", xs[0], "ids")], "embeddings", axis=0)]
            ys = [model.embeddings[xs[0]]]
        elif seq2seq is not None:
            ys = [model.forward(xs, training=False)]   # checks the ids, gives the output's type
            outs = [seq2seq(g, model, in_names, xs)]
        elif graph_model:
            outs, ys = _convert_graph(g, model, xs)
        else:
            out, y = _convert(g, model, "input", xs[0], "", "the model")
            outs, ys = [out], [y]
    out_names = ["output"] if len(outs) == 1 else [f"output_{i}" for i in range(len(outs))]
    if len(outs) == 1 and g.nodes and outs[0] in g.nodes[-1].output and outs[0] not in in_names:
        last = g.nodes[-1]  # the last node writes "output" itself
        last.output[list(last.output).index(outs[0])] = "output"
    else:
        for out, name in zip(outs, out_names):
            g.nodes.append(helper.make_node("Identity", [out], [name], name=f"Identity_{name}"))
    in_dims = [["batch", *x.shape[1:]] for x in xs]
    out_dims = [["batch", *np.shape(y)[1:]] for y in ys]
    if seq2seq is not None:
        in_dims, out_dims = [["batch", "src_len"], ["batch", "tgt_len"]], [["batch", "tgt_len", ys[0].shape[2]]]
    inputs = [helper.make_tensor_value_info(name, _tensor_type(onnx, x.dtype), dims)
              for name, x, dims in zip(in_names, xs, in_dims)]
    outputs = [helper.make_tensor_value_info(name, _tensor_type(onnx, y.dtype), dims)
               for name, y, dims in zip(out_names, ys, out_dims)]
    graph = helper.make_graph(g.nodes, "fastnn", inputs, outputs, initializer=g.initializers)
    opsets = [helper.make_opsetid("", int(opset))]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="fastnn",
                              ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, os.fspath(path))
    return proto
