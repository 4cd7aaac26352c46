"""The named architectures of the benchmark suite and the ``fastnn train`` command.

One place defines each network so the CLI, the benchmarks and the examples train the same thing.
Each builder returns ``(model, input_shape, loss_name)``; ``input_shape`` excludes the batch axis.
"""
from . import layers as L
from .model import Sequential


def mlp(in_features=784, hidden=256, classes=10):
    """Dense in-256-256-10 with ReLU, cross-entropy (the suite's ``mlp``)."""
    model = Sequential(L.Dense(in_features, hidden), L.ReLU(), L.Dense(hidden, hidden), L.ReLU(),
                       L.Dense(hidden, classes))
    return model, (in_features,), "cross_entropy"


def seed_mlp():
    """The lecture's 5x5-digit network: Dense 25-3-3-10 with Sigmoid hidden units."""
    model = Sequential(L.Dense(25, 3), L.Sigmoid(), L.Dense(3, 3), L.Sigmoid(), L.Dense(3, 10))
    return model, (25,), "cross_entropy"


def lenet5(size=28, classes=10):
    """Conv(1,6,5,p2)-ReLU-MaxPool2-Conv(6,16,5)-ReLU-MaxPool2-Dense 400-120-84-10 (28x28 input)."""
    flat = 16 * (((size // 2) - 4) // 2) ** 2
    model = Sequential(L.Conv2D(1, 6, 5, padding=2), L.ReLU(), L.MaxPool2D(2),
                       L.Conv2D(6, 16, 5), L.ReLU(), L.MaxPool2D(2), L.Flatten(),
                       L.Dense(flat, 120), L.ReLU(), L.Dense(120, 84), L.ReLU(), L.Dense(84, classes))
    return model, (1, size, size), "cross_entropy"


def _conv_bn_relu(cin, cout):
    return [L.Conv2D(cin, cout, 3, padding=1), L.BatchNorm2D(cout), L.ReLU()]


def vgg_bn(size=28, classes=10, widths=(32, 64)):
    """Two stages of 2x[Conv3x3-BN-ReLU] (32, 64 channels) each followed by MaxPool2, then Dense."""
    stack, cin = [], 1
    for width in widths:
        stack += _conv_bn_relu(cin, width) + _conv_bn_relu(width, width) + [L.MaxPool2D(2)]
        cin = width
    side = size // (2 ** len(widths))
    model = Sequential(*stack, L.Flatten(), L.Dense(cin * side * side, classes))
    return model, (1, size, size), "cross_entropy"


def autoencoder(in_features=784):
    """Dense 784-128-32-128-784, ReLU inside, Sigmoid output, MSE."""
    model = Sequential(L.Dense(in_features, 128), L.ReLU(), L.Dense(128, 32), L.ReLU(),
                       L.Dense(32, 128), L.ReLU(), L.Dense(128, in_features), L.Sigmoid())
    return model, (in_features,), "mse"


def dcgan_generator(latent=64):
    """ConvT(z,128,7)-BN-ReLU-ConvT(128,64,4,s2,p1)-BN-ReLU-ConvT(64,1,4,s2,p1)-Tanh: (z,1,1) -> 28x28."""
    model = Sequential(L.ConvTranspose2D(latent, 128, 7), L.BatchNorm2D(128), L.ReLU(),
                       L.ConvTranspose2D(128, 64, 4, stride=2, padding=1), L.BatchNorm2D(64), L.ReLU(),
                       L.ConvTranspose2D(64, 1, 4, stride=2, padding=1), L.Tanh())
    return model, (latent, 1, 1), "mse"


def dcgan_discriminator():
    """Conv(1,64,4,s2,p1)-LReLU-Conv(64,128,4,s2,p1)-BN-LReLU-Dense 6272-1, BCE with logits."""
    model = Sequential(L.Conv2D(1, 64, 4, stride=2, padding=1), L.LeakyReLU(0.2),
                       L.Conv2D(64, 128, 4, stride=2, padding=1), L.BatchNorm2D(128), L.LeakyReLU(0.2),
                       L.Flatten(), L.Dense(128 * 7 * 7, 1))
    return model, (1, 28, 28), "bce_with_logits"


def sequence_model(cell="lstm", vocab=64, embed=32, hidden=128, seq_len=32):
    """Embedding(64,32)-RNN/LSTM/GRU(32,128)-Dense(128,64): next-token logits at every step."""
    recurrent = {"rnn": L.RNN, "lstm": L.LSTM, "gru": L.GRU}[cell]
    model = Sequential(L.Embedding(vocab, embed), recurrent(embed, hidden, return_sequences=True),
                       L.Dense(hidden, vocab))
    return model, (seq_len,), "cross_entropy"


def transformer_encoder(vocab=64, d_model=128, nhead=4, num_layers=2, dim_feedforward=512, seq_len=64):
    """Embedding(64,128)-2x TransformerEncoderLayer(128, 4 heads, FF 512, post-norm, no
    dropout)-Dense(128,64): next-token logits at every step of T=64."""
    model = Sequential(L.Embedding(vocab, d_model),
                       *(L.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout=0.0)
                         for _ in range(num_layers)),
                       L.Dense(d_model, vocab))
    return model, (seq_len,), "cross_entropy"


def resnet(size=32, channels=3, classes=10, widths=(16, 32, 64), blocks=2):
    """A small CIFAR ResNet as a graph model: stem Conv3x3(3,16)-BN-ReLU, three stages of
    ``blocks`` basic blocks (16, 32, 64 channels; the 2nd and 3rd stages open with stride 2 and a
    1x1 projection), global average pool, Dense 64-10; 32x32x3 input. The blocks are those of
    ``fastnn train resnet`` (:func:`fastnn.recipes.vision.residual_block`)."""
    from .graph import Input, Model
    from .recipes.vision import residual_block

    inp = Input((channels, size, size), name="image")
    x = L.Conv2D(channels, widths[0], 3, padding=1, bias=False, name="stem_conv")(inp)
    x = L.ReLU(name="stem_relu")(L.BatchNorm2D(widths[0], name="stem_bn")(x))
    cin = widths[0]
    for s, width in enumerate(widths):
        for b in range(blocks):
            stride = 2 if s > 0 and b == 0 else 1
            x = residual_block(x, cin, width, stride, name=f"s{s + 1}b{b + 1}")
            cin = width
    x = L.Flatten(name="flatten")(L.AdaptiveAvgPool2D(1, name="pool")(x))
    out = L.Dense(cin, classes, name="fc")(x)
    return Model(inp, out, name="resnet"), (channels, size, size), "cross_entropy"


BUILDERS = {
    "mlp": mlp,
    "seed-mlp": seed_mlp,
    "lenet5": lenet5,
    "vgg-bn": vgg_bn,
    "ae": autoencoder,
    "dcgan-g": dcgan_generator,
    "dcgan-d": dcgan_discriminator,
    "rnn": lambda: sequence_model("rnn"),
    "lstm": lambda: sequence_model("lstm"),
    "transformer": transformer_encoder,
    "resnet": resnet,
}


def build(name):
    """``(model, input_shape, loss_name)`` for one of :data:`BUILDERS`."""
    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(BUILDERS)}")
    return BUILDERS[name]()
