"""Training recipes behind ``fastnn train MODEL``: one module per family, imported on use.

Each family module defines ``train(name, epochs=None, seed=0, out=None, verbose=1, plots=None)``
that trains on bundled or generated data (no network), prints its quality, saves a checkpoint
to ``out`` when given, and returns the metrics it printed.
"""
import importlib

RECIPES = {
    "mlp": "digits", "cnn": "digits", "sae": "digits",
    "resnet": "vision", "fcn": "vision",
    "rnn": "sequence", "lstm": "sequence", "word2vec": "sequence",
    "seq2seq": "seq2seq", "transformer": "seq2seq",
    "ae": "generative", "vae": "generative", "gan": "generative", "dcgan": "generative", "wgan": "generative",
}


def train(name, **kwargs):
    if name not in RECIPES:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(RECIPES)}")
    module = importlib.import_module(f".{RECIPES[name]}", __name__)
    return module.train(name, **kwargs)
