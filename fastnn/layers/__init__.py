"""Layer classes; each module holds one family and is imported on first use.

| module      | layers                                                  |
|-------------|---------------------------------------------------------|
| dense       | Dense                                                   |
| conv        | Conv2D, Conv1D, ConvTranspose2D                         |
| pool        | MaxPool2D, AvgPool2D, MaxPool1D, AvgPool1D, Upsample2D, |
|             | AdaptiveAvgPool2D                                       |
| norm        | BatchNorm1D, BatchNorm2D, LayerNorm, LocalResponseNorm  |
| activation  | ReLU, LeakyReLU, Sigmoid, Tanh, Softmax, Identity,      |
|             | GELU, SiLU, ELU, Step                                   |
| dropout     | Dropout                                                 |
| shape       | Flatten, Reshape                                        |
| residual    | Residual                                                |
| embedding   | Embedding                                               |
| recurrent   | RNN, LSTM, GRU                                          |
| merge       | Add, Multiply, Concatenate (graph models)               |
| attention   | MultiheadAttention, causal_mask                         |
| transformer | TransformerEncoderLayer, TransformerDecoderLayer,       |
|             | PositionalEncoding                                      |
"""
import importlib

from .base import Layer, Parameter

_MODULE_OF = {
    "Dense": "dense",
    "Conv2D": "conv", "ConvTranspose2D": "conv", "Conv1D": "conv",
    "MaxPool2D": "pool", "AvgPool2D": "pool", "Upsample2D": "pool",
    "MaxPool1D": "pool", "AvgPool1D": "pool",
    "BatchNorm1D": "norm", "BatchNorm2D": "norm", "LocalResponseNorm": "norm",
    "ReLU": "activation", "LeakyReLU": "activation", "Sigmoid": "activation",
    "Tanh": "activation", "Softmax": "activation", "Identity": "activation",
    "GELU": "activation", "SiLU": "activation", "ELU": "activation",
    "LayerNorm": "norm", "AdaptiveAvgPool2D": "pool",
    "Step": "activation",
    "Dropout": "dropout",
    "Flatten": "shape", "Reshape": "shape",
    "Residual": "residual",
    "Embedding": "embedding",
    "RNN": "recurrent", "LSTM": "recurrent", "GRU": "recurrent",
    "Add": "merge", "Multiply": "merge", "Concatenate": "merge",
    "MultiheadAttention": "attention", "causal_mask": "attention",
    "TransformerEncoderLayer": "transformer", "TransformerDecoderLayer": "transformer",
    "PositionalEncoding": "transformer",
}

__all__ = ["Layer", "Parameter", "get", *_MODULE_OF]


def __getattr__(name):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'fastnn.layers' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def get(name):
    """The layer class called ``name`` (used by ``fastnn.load`` to rebuild architectures)."""
    if name not in _MODULE_OF:
        raise ValueError(f"unknown layer class {name!r}; known: {sorted(_MODULE_OF)}")
    return __getattr__(name)


def __dir__():
    return __all__
