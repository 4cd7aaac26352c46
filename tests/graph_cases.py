"""Small graph models shared by the graph-model tests (tests/model) and their PyTorch parity
(tests/parity): a ResNet block with a 1x1 projection, two inputs and two outputs, shared weights."""
import fastnn as fnn
from fastnn import layers as L


def resnet_block(c_in=2, c=4, hw=6, classes=3):
    """conv-bn-relu-conv-bn on one path, a 1x1 projection on the other, Add, ReLU, a head."""
    inp = fnn.Input(shape=(c_in, hw, hw))
    a = L.Conv2D(c_in, c, 3, padding=1, name="conv1")(inp)
    a = L.ReLU()(L.BatchNorm2D(c, name="bn1")(a))
    a = L.BatchNorm2D(c, name="bn2")(L.Conv2D(c, c, 3, padding=1, name="conv2")(a))
    b = L.Conv2D(c_in, c, 1, name="proj")(inp)
    y = L.ReLU()(L.Add()([a, b]))
    out = L.Dense(c * hw * hw, classes, name="head")(L.Flatten()(y))
    return fnn.Model(inputs=inp, outputs=out)


def two_in_two_out():
    """An image and a vector in; a class score and a regression value out; fan-out of h."""
    img = fnn.Input(shape=(1, 5, 5), name="img")
    vec = fnn.Input(shape=(3,), name="vec")
    h = L.Flatten()(L.Conv2D(1, 2, 3, name="conv")(img))                # (18,)
    h = L.Concatenate(axis=1)([h, L.Dense(3, 4, name="embed")(vec)])     # (22,)
    cls = L.Dense(22, 4, name="cls")(L.Tanh()(h))
    reg = L.Dense(22, 1, name="reg")(L.Multiply()([h, h]))
    return fnn.Model([img, vec], [cls, reg])


def shared_dense():
    """A siamese pair: one Dense applied to both inputs, the difference of the codes scored."""
    a, b = fnn.Input(shape=(6,)), fnn.Input(shape=(6,))
    enc = L.Dense(6, 4, name="enc")
    act = L.Tanh(name="act")
    za, zb = act(enc(a)), L.Tanh(name="act_b")(enc(b))
    d = L.Add()([za, L.Dense(4, 4, bias=False, name="neg")(zb)])
    return fnn.Model([a, b], L.Dense(4, 1, name="score")(d))
