"""Testing helpers: hypothesis strategies and the gradient-check cases of every built-in layer.

    from fastnn.testing import strategies as fst      # configurations + inputs (see that module)
    from fastnn.testing import cases, LAYERS, LOSSES  # the built-in property checks

``cases(name)`` is a hypothesis strategy of ``Case`` objects for the built-in layer or loss
``name``: a valid configuration, a matching float64 input and a mode. ``case.check()`` builds the
object and runs ``fnn.gradcheck`` on it. ``tests/layers/test_properties.py`` and ``fastnn gradcheck``
both run these. ``hypothesis`` (a dependency of fastnn) is imported on first use only.
"""
import importlib

import numpy as np

__all__ = ["LAYERS", "LOSSES", "Case", "cases", "strategies"]

LAYERS = ("Dense", "Conv2D", "Conv1D", "ConvTranspose2D", "MaxPool2D", "AvgPool2D", "MaxPool1D",
          "AvgPool1D", "Upsample2D",
          "BatchNorm1D", "BatchNorm2D", "LocalResponseNorm", "Dropout", "Flatten", "Reshape", "ReLU",
          "LeakyReLU",
          "Sigmoid", "Tanh", "Softmax", "Identity", "Residual", "Embedding", "RNN", "LSTM", "GRU",
          "GELU", "SiLU", "ELU", "LayerNorm", "AdaptiveAvgPool2D", "MultiheadAttention",
          "TransformerEncoderLayer", "PositionalEncoding")
LOSSES = ("MSE", "CrossEntropy", "BCE", "BCEWithLogits", "KLDivergenceNormal")
_LOSS_KEY = {"MSE": "mse", "CrossEntropy": "cross_entropy", "BCE": "bce",
             "BCEWithLogits": "bce_with_logits", "KLDivergenceNormal": "kl_divergence_normal"}
_ACTIVATIONS = ("ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax", "Identity", "GELU", "SiLU", "ELU")

# per tensor, this many entries are checked (a seeded sample): keeps a case at tens of milliseconds
CASE_MAX_ENTRIES = 30


def __getattr__(name):
    if name == "strategies":
        return importlib.import_module(".strategies", __name__)
    raise AttributeError(f"module 'fastnn.testing' has no attribute {name!r}")


class Case:
    """One gradient check: layer or loss ``name`` built from ``config`` (constructor keywords),
    the input ``x`` (``pred`` for a loss), ``target`` for a loss, ``training`` mode, and
    ``state_seed`` used to randomise state that is constant by default (batch-norm affine
    parameters and running statistics) so the check is not trivially passed."""

    def __init__(self, name, config, x, training=True, target=None, state_seed=0):
        self.name, self.config, self.x = name, dict(config), x
        self.training, self.target, self.state_seed = training, target, state_seed

    @property
    def is_loss(self):
        return self.name in LOSSES

    def build(self):
        """A fresh float64 instance of the layer or loss."""
        if self.is_loss:
            from .. import losses
            return getattr(losses, self.name)(**self.config)
        from .. import layers as L
        cfg = self.config
        if self.name == "Residual":
            inner_cfg = cfg["inner"]
            inner = getattr(L, inner_cfg["class"])(*inner_cfg["args"], **inner_cfg["kwargs"])
            layer = L.Residual(inner)
        else:
            layer = getattr(L, self.name)(*cfg.get("args", ()), **cfg.get("kwargs", {}))
        layer.astype(np.float64)
        if self.name.startswith("BatchNorm"):
            rng = np.random.default_rng(self.state_seed)
            c = cfg["args"][0]
            layer.load_state_dict({"weight": rng.uniform(0.5, 1.5, c), "bias": rng.uniform(-1, 1, c),
                                   "running_mean": rng.uniform(-1, 1, c),
                                   "running_var": rng.uniform(0.5, 2.0, c)})
        if self.name == "LayerNorm" and layer.parameters():
            rng = np.random.default_rng(self.state_seed)
            layer.load_state_dict({k: rng.uniform(0.5, 1.5, v.shape)
                                   for k, v in layer.state_dict().items()})
        return layer

    def check(self, **kwargs):
        """``fnn.gradcheck`` of this case (keywords override the defaults)."""
        from .._gradcheck import gradcheck
        kwargs.setdefault("max_entries", CASE_MAX_ENTRIES)
        obj = self.build()
        if self.is_loss:
            return gradcheck(obj, self.x, target=self.target, **kwargs)
        return gradcheck(obj, self.x, training=self.training, **kwargs)

    def __repr__(self):
        shape = tuple(self.x.shape)
        if self.is_loss:
            return (f"Case({self.name}, {self.config}, pred {shape}, target "
                    f"{tuple(np.shape(self.target))} {np.asarray(self.target).dtype})")
        return f"Case({self.name}, {self.config}, input {shape}, training={self.training})"


def cases(name, training=None):
    """Hypothesis strategy of ``Case`` for the built-in layer or loss ``name``; ``training``
    fixes the mode (default: drawn)."""
    from hypothesis import strategies as st

    fst = importlib.import_module(".strategies", __name__)

    if name not in LAYERS and name not in LOSSES:
        raise ValueError(f"cases: unknown layer or loss {name!r}; known: {LAYERS + LOSSES}")
    mode = st.booleans() if training is None else st.just(bool(training))

    @st.composite
    def draw_case(draw):
        is_training = draw(mode)
        seed = draw(st.integers(0, 2**16))
        if name in LOSSES:
            lc = draw(fst.loss_cases(_LOSS_KEY[name]))
            reduction = draw(st.sampled_from(["mean", "sum"]))  # scalar losses: "none" has its own tests
            return Case(name, {"reduction": reduction}, lc["pred"], training=is_training, target=lc["target"])
        config, shape = _layer_config(draw, name, st, fst)
        if name == "Embedding":
            x = draw(fst.indices_for(shape, config["args"][0]))
        else:
            x = draw(fst.arrays_for(shape))
        drawn_mode = config.pop("training", None)   # batch norm / dropout configs draw a mode
        if training is None and drawn_mode is not None:
            is_training = drawn_mode
        return Case(name, config, x, training=is_training, state_seed=seed)

    return draw_case()


def _layer_config(draw, name, st, fst):
    """(constructor config, input shape) for layer ``name``."""
    if name == "Dense":
        c = draw(fst.dense_configs(max_leading_dims=2))
        return dict(args=(c["in_features"], c["out_features"]), kwargs=dict(bias=c["bias"])), c["input_shape"]
    if name == "Conv2D" and draw(st.booleans()):
        c = draw(fst.conv2d_configs())
        return dict(args=(c["in_ch"], c["out_ch"], c["kernel_size"]),
                    kwargs=dict(stride=c["stride"], padding=c["padding"], bias=c["bias"])), c["input_shape"]
    if name in ("Conv2D", "Conv1D"):   # dilation, groups (depthwise), "same"/"valid"
        c = draw(fst.grouped_conv_configs(dims=2 if name == "Conv2D" else 1))
        return dict(args=(c["in_ch"], c["out_ch"], c["kernel_size"]),
                    kwargs=dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"],
                                groups=c["groups"], bias=c["bias"])), c["input_shape"]
    if name in ("MaxPool1D", "AvgPool1D"):
        c = draw(fst.pool1d_configs())
        return dict(args=(c["kernel_size"],), kwargs=dict(stride=c["stride"], padding=c["padding"])), c["input_shape"]
    if name == "ConvTranspose2D":
        c = draw(fst.conv_transpose2d_configs())
        return dict(args=(c["in_ch"], c["out_ch"], c["kernel_size"]),
                    kwargs=dict(stride=c["stride"], padding=c["padding"], output_padding=c["output_padding"],
                                bias=c["bias"])), c["input_shape"]
    if name in ("MaxPool2D", "AvgPool2D"):
        c = draw(fst.pool2d_configs())
        return dict(args=(c["kernel_size"],), kwargs=dict(stride=c["stride"], padding=c["padding"])), c["input_shape"]
    if name == "Upsample2D":
        c = draw(fst.upsample_configs())
        return dict(kwargs=dict(scale_factor=c["scale_factor"])), c["input_shape"]
    if name in ("BatchNorm1D", "BatchNorm2D"):
        c = draw(fst.batchnorm_configs(dims=1 if name == "BatchNorm1D" else 2))
        return dict(args=(c["num_features"],), kwargs=dict(eps=c["eps"], momentum=c["momentum"]),
                    training=c["training"]), c["input_shape"]
    if name == "LocalResponseNorm":
        c = draw(fst.lrn_configs())
        return dict(args=(c["size"],), kwargs=dict(alpha=c["alpha"], beta=c["beta"], k=c["k"])), c["input_shape"]
    if name == "Dropout":
        c = draw(fst.dropout_configs())
        return dict(kwargs=dict(p=c["p"]), training=c["training"]), c["input_shape"]
    if name == "Flatten":
        return dict(), draw(fst.shapes(2, 4, 1, 4))
    if name == "Reshape":
        c = draw(fst.reshape_configs())
        return dict(args=(c["shape"],)), c["input_shape"]
    if name in _ACTIVATIONS:
        c = draw(fst.activation_configs(names=(name,)))
        return dict(kwargs=c["kwargs"]), c["input_shape"]
    if name == "Residual":
        if draw(st.booleans()):
            f = draw(st.integers(1, 4))
            inner = {"class": "Dense", "args": (f, f), "kwargs": {}}
            return dict(inner=inner), (draw(fst.batch_sizes()), f)
        ch, side = draw(st.integers(1, 3)), draw(st.integers(1, 4))
        inner = {"class": "Conv2D", "args": (ch, ch, 3), "kwargs": {"padding": 1}}
        return dict(inner=inner), (draw(fst.batch_sizes()), ch, side, side)
    if name == "Embedding":
        c = draw(fst.embedding_configs())
        # (padding_idx is no gradient by definition: its row's gradient is zero, tested against torch)
        return dict(args=(c["num_embeddings"], c["embedding_dim"])), c["input_shape"]
    if name == "LayerNorm":
        c = draw(fst.layer_norm_configs())
        return dict(args=(c["normalized_shape"],),
                    kwargs=dict(eps=c["eps"], elementwise_affine=c["elementwise_affine"],
                                bias=c["bias"])), c["input_shape"]
    if name in ("MultiheadAttention", "TransformerEncoderLayer", "PositionalEncoding"):
        heads = draw(st.integers(1, 2))
        d = heads * draw(st.integers(1, 3))
        shape = (draw(fst.batch_sizes()), draw(st.integers(1, 4)), d)
        dropout = draw(st.sampled_from([0.0, 0.3]))
        if name == "PositionalEncoding":
            return dict(args=(d,), kwargs=dict(max_len=8, dropout=dropout)), shape
        if name == "MultiheadAttention":
            return dict(args=(d, heads), kwargs=dict(dropout=dropout, bias=draw(st.booleans()))), shape
        return dict(args=(d, heads), kwargs=dict(dim_feedforward=draw(st.integers(1, 6)), dropout=dropout,
                                                 activation=draw(st.sampled_from(["relu", "gelu"])),
                                                 norm_first=draw(st.booleans()))), shape
    if name == "AdaptiveAvgPool2D":
        c = draw(fst.adaptive_pool_configs())
        return dict(args=(c["output_size"],)), c["input_shape"]
    if name in ("RNN", "LSTM", "GRU"):
        c = draw(fst.recurrent_configs())
        return dict(args=(c["input_size"], c["hidden_size"]),
                    kwargs=dict(return_sequences=c["return_sequences"], num_layers=c["num_layers"],
                                bidirectional=c["bidirectional"], dropout=c["dropout"])), c["input_shape"]
    raise ValueError(f"no configuration strategy for {name!r}")
