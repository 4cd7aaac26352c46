"""Compositions that are not one Sequential: word2vec, VAE, GANs, seq2seq encoder-decoders. Imported on first use."""
import importlib

_MODULE_OF = {
    "Word2Vec": "word2vec",
    "VAE": "vae",
    "GAN": "gan", "WGAN": "gan", "dcgan": "gan", "dcgan_init": "gan",
    "GRUSeq2Seq": "seq2seq", "TransformerSeq2Seq": "seq2seq",
}

__all__ = list(_MODULE_OF)


def __getattr__(name):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'fastnn.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
