"""Every layer against torch.nn: the same state_dict gives the same outputs, input gradients and
parameter gradients in float32 (skipped when torch is not installed)."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
nn = torch.nn

import fastnn as fnn  # noqa: E402
from fastnn import layers as L  # noqa: E402
from fastnn.testing import strategies as fst  # noqa: E402

from conftest import scaled_examples  # noqa: E402  (max_examples that follow the profile)

TOL = dict(rtol=1e-4, atol=1e-4)


class TorchResidual(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return x + self.inner(x)


class TorchReshape(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.shape = shape

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)


def load_from_torch(ours, theirs):
    """Copy torch's state_dict (num_batches_tracked included, as a user would) into ours."""
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})


def compare(ours, theirs, x, training, seed=0):
    """Forward and backward with the same input and upstream gradient; compare everything."""
    load_from_torch(ours, theirs)
    theirs.train(training)
    r = np.random.default_rng(seed)
    x = x.astype(np.float32)
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    y = ours.forward(x, training=training)
    np.testing.assert_allclose(y, yt.detach().numpy(), **TOL)
    dy = r.standard_normal(y.shape).astype(np.float32)
    yt.backward(torch.tensor(dy))
    dx = ours.backward(dy)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **TOL)
    grads = {name: p.grad for name, p in theirs.named_parameters()}
    ours_named = dict(ours.named_parameters())
    assert sorted(ours_named) == sorted(grads)
    for name, p in ours_named.items():
        np.testing.assert_allclose(p.grad, grads[name].numpy(), **TOL, err_msg=name)
    for key, value in theirs.state_dict().items():           # running statistics after the step
        if not key.endswith("num_batches_tracked"):
            np.testing.assert_allclose(ours.state_dict()[key], value.numpy(), **TOL, err_msg=key)


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


CASES = [
    ("dense", lambda: L.Dense(7, 5), lambda: nn.Linear(7, 5), (4, 7)),
    ("dense-3d-nobias", lambda: L.Dense(7, 5, bias=False), lambda: nn.Linear(7, 5, bias=False), (2, 3, 7)),
    ("conv", lambda: L.Conv2D(3, 4, 3), lambda: nn.Conv2d(3, 4, 3), (2, 3, 7, 6)),
    ("conv-s2-p1", lambda: L.Conv2D(2, 3, (3, 2), stride=(2, 1), padding=(1, 0)),
     lambda: nn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 0)), (2, 2, 7, 5)),
    ("conv-dilated", lambda: L.Conv2D(3, 4, 3, padding=2, dilation=2),
     lambda: nn.Conv2d(3, 4, 3, padding=2, dilation=2), (2, 3, 9, 8)),
    ("conv-groups", lambda: L.Conv2D(4, 6, (3, 2), stride=(1, 2), padding=1, groups=2),
     lambda: nn.Conv2d(4, 6, (3, 2), stride=(1, 2), padding=1, groups=2), (2, 4, 7, 6)),
    ("conv-depthwise", lambda: L.Conv2D(4, 4, 3, padding=1, groups=4),
     lambda: nn.Conv2d(4, 4, 3, padding=1, groups=4), (2, 4, 7, 6)),
    ("conv-depthwise-x2-s2", lambda: L.Conv2D(3, 6, 3, stride=2, dilation=(1, 2), groups=3, bias=False),
     lambda: nn.Conv2d(3, 6, 3, stride=2, dilation=(1, 2), groups=3, bias=False), (2, 3, 9, 10)),
    ("conv-same-even", lambda: L.Conv2D(2, 3, (4, 2), padding="same", dilation=(1, 3)),
     lambda: nn.Conv2d(2, 3, (4, 2), padding="same", dilation=(1, 3)), (2, 2, 6, 7)),
    ("conv-same-odd", lambda: L.Conv2D(2, 3, 3, padding="same"),
     lambda: nn.Conv2d(2, 3, 3, padding="same"), (2, 2, 6, 7)),
    ("conv-valid", lambda: L.Conv2D(2, 3, 3, padding="valid", groups=1),
     lambda: nn.Conv2d(2, 3, 3, padding="valid"), (2, 2, 6, 7)),
    ("conv1d", lambda: L.Conv1D(3, 4, 3, padding=1), lambda: nn.Conv1d(3, 4, 3, padding=1), (2, 3, 11)),
    ("conv1d-s2-d2-groups", lambda: L.Conv1D(4, 6, 3, stride=2, padding=2, dilation=2, groups=2),
     lambda: nn.Conv1d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2), (2, 4, 13)),
    ("conv1d-depthwise-same", lambda: L.Conv1D(3, 3, 4, padding="same", groups=3, bias=False),
     lambda: nn.Conv1d(3, 3, 4, padding="same", groups=3, bias=False), (2, 3, 10)),
    ("maxpool1d", lambda: L.MaxPool1D(2), lambda: nn.MaxPool1d(2), (2, 3, 9)),
    ("maxpool1d-s2-p1", lambda: L.MaxPool1D(3, stride=2, padding=1), lambda: nn.MaxPool1d(3, 2, 1), (2, 2, 10)),
    ("avgpool1d", lambda: L.AvgPool1D(3), lambda: nn.AvgPool1d(3), (2, 3, 10)),
    ("avgpool1d-s1-p1", lambda: L.AvgPool1D(3, stride=1, padding=1), lambda: nn.AvgPool1d(3, 1, 1), (2, 2, 7)),
    ("convT", lambda: L.ConvTranspose2D(4, 3, 3), lambda: nn.ConvTranspose2d(4, 3, 3), (2, 4, 3, 3)),
    ("convT-s2-p1", lambda: L.ConvTranspose2D(4, 2, 4, stride=2, padding=1),
     lambda: nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1), (2, 4, 5, 5)),
    ("convT-op", lambda: L.ConvTranspose2D(3, 2, 3, stride=2, padding=1, output_padding=1, bias=False),
     lambda: nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1, bias=False), (1, 3, 4, 3)),
    ("maxpool", lambda: L.MaxPool2D(2), lambda: nn.MaxPool2d(2), (2, 3, 6, 7)),
    ("maxpool-p1", lambda: L.MaxPool2D(3, stride=2, padding=1), lambda: nn.MaxPool2d(3, 2, 1), (2, 2, 7, 8)),
    ("avgpool-p1", lambda: L.AvgPool2D(3, stride=2, padding=1), lambda: nn.AvgPool2d(3, 2, 1), (2, 2, 7, 8)),
    ("upsample", lambda: L.Upsample2D(2), lambda: nn.Upsample(scale_factor=2, mode="nearest"), (2, 3, 3, 4)),
    ("bn1d", lambda: L.BatchNorm1D(5), lambda: nn.BatchNorm1d(5), (8, 5)),
    ("bn1d-3d", lambda: L.BatchNorm1D(3, momentum=0.3), lambda: nn.BatchNorm1d(3, momentum=0.3), (4, 3, 6)),
    ("bn2d", lambda: L.BatchNorm2D(3, eps=1e-3), lambda: nn.BatchNorm2d(3, eps=1e-3), (4, 3, 5, 5)),
    ("lrn", lambda: L.LocalResponseNorm(3, alpha=0.5, beta=0.75, k=1.5),
     lambda: nn.LocalResponseNorm(3, alpha=0.5, beta=0.75, k=1.5), (2, 6, 3, 4)),
    ("lrn-alexnet", lambda: L.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0),
     lambda: nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0), (2, 8, 5, 5)),
    ("lrn-3d-even", lambda: L.LocalResponseNorm(4, alpha=1.0), lambda: nn.LocalResponseNorm(4, alpha=1.0), (3, 5, 7)),
    ("relu", L.ReLU, nn.ReLU, (4, 9)),
    ("leaky", lambda: L.LeakyReLU(0.2), lambda: nn.LeakyReLU(0.2), (4, 9)),
    ("gelu", lambda: L.GELU(), lambda: nn.GELU(), (4, 9)),
    ("gelu-tanh", lambda: L.GELU("tanh"), lambda: nn.GELU("tanh"), (3, 2, 5)),
    ("silu", lambda: L.SiLU(), lambda: nn.SiLU(), (4, 9)),
    ("elu", lambda: L.ELU(0.5), lambda: nn.ELU(0.5), (4, 9)),
    ("layernorm", lambda: L.LayerNorm(6), lambda: nn.LayerNorm(6), (4, 3, 6)),
    ("layernorm-2d", lambda: L.LayerNorm((3, 4), eps=1e-3), lambda: nn.LayerNorm((3, 4), eps=1e-3), (5, 3, 4)),
    ("layernorm-nobias", lambda: L.LayerNorm(5, bias=False), lambda: nn.LayerNorm(5, bias=False), (4, 5)),
    ("layernorm-noaffine", lambda: L.LayerNorm(5, elementwise_affine=False),
     lambda: nn.LayerNorm(5, elementwise_affine=False), (4, 5)),
    ("adaptive-avg", lambda: L.AdaptiveAvgPool2D((3, 2)), lambda: nn.AdaptiveAvgPool2d((3, 2)), (2, 3, 7, 5)),
    ("adaptive-avg-up", lambda: L.AdaptiveAvgPool2D(4), lambda: nn.AdaptiveAvgPool2d(4), (2, 1, 3, 2)),
    ("global-avg", lambda: L.AdaptiveAvgPool2D(1), lambda: nn.AdaptiveAvgPool2d(1), (2, 4, 5, 5)),
    ("sigmoid", L.Sigmoid, nn.Sigmoid, (4, 9)),
    ("tanh", L.Tanh, nn.Tanh, (4, 9)),
    ("softmax", L.Softmax, lambda: nn.Softmax(dim=-1), (4, 9)),
    ("softmax-axis1", lambda: L.Softmax(axis=1), lambda: nn.Softmax(dim=1), (2, 4, 3, 3)),
    ("identity", L.Identity, nn.Identity, (4, 9)),
    ("dropout-p0", lambda: L.Dropout(0.0), lambda: nn.Dropout(0.0), (4, 9)),
    ("flatten", L.Flatten, nn.Flatten, (2, 3, 4, 5)),
    ("reshape", lambda: L.Reshape((4, -1)), lambda: TorchReshape((4, -1)), (2, 12)),
    ("residual", lambda: L.Residual(L.Dense(6, 6)), lambda: TorchResidual(nn.Linear(6, 6)), (3, 6)),
    ("residual-bn", lambda: L.Residual(L.BatchNorm2D(2)), lambda: TorchResidual(nn.BatchNorm2d(2)), (3, 2, 3, 3)),
]


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name, make_ours, make_theirs, shape", CASES, ids=[c[0] for c in CASES])
def test_matches_torch(name, make_ours, make_theirs, shape, training):
    torch.manual_seed(0)
    theirs = make_theirs()
    if any(k.startswith(("running", "inner.running")) for k in theirs.state_dict()):
        with torch.no_grad():   # non-trivial statistics and affine parameters
            for key, value in theirs.state_dict().items():
                if value.dtype.is_floating_point:
                    value.copy_(torch.rand(value.shape) + (0.5 if "var" in key or "weight" in key else -0.5))
    compare(make_ours(), theirs, randn(*shape), training)


def test_dropout_matches_torch_in_inference_and_in_expectation():
    x = randn(300, 200)
    drop, tdrop = L.Dropout(0.4), nn.Dropout(0.4)
    tdrop.eval()
    np.testing.assert_array_equal(drop.forward(x, training=False), tdrop(torch.tensor(x)).numpy())
    tdrop.train()
    ours, theirs = drop.forward(x), tdrop(torch.tensor(x)).numpy()
    for y in (ours, theirs):   # same keep rate, same scaling of the kept entries
        kept = y != 0
        assert abs(kept.mean() - 0.6) < 0.01
        np.testing.assert_allclose(y[kept], x[kept] / 0.6, rtol=1e-5)


@settings(max_examples=scaled_examples(10))
@given(cin=st.integers(1, 3), cout=st.integers(1, 3), k=st.integers(1, 4), s=st.integers(1, 3),
       p=st.integers(0, 2), size=st.integers(4, 7), transposed=st.booleans())
def test_conv_configurations_match_torch(cin, cout, k, s, p, size, transposed):
    p = min(p, k - 1)
    torch.manual_seed(1)
    if transposed:
        op = s - 1
        compare(L.ConvTranspose2D(cin, cout, k, stride=s, padding=p, output_padding=op),
                nn.ConvTranspose2d(cin, cout, k, stride=s, padding=p, output_padding=op),
                randn(2, cin, size, size), True)
    else:
        compare(L.Conv2D(cin, cout, k, stride=s, padding=p), nn.Conv2d(cin, cout, k, stride=s, padding=p),
                randn(2, cin, size, size), True)


@settings(max_examples=scaled_examples(12))
@given(cfg=fst.grouped_conv_configs(dims=2), one_d=st.booleans(), seed=st.integers(0, 2**16))
def test_grouped_dilated_conv_configurations_match_torch(cfg, one_d, seed):
    """Conv2D and Conv1D with dilation, groups (depthwise included) and "same"/"valid" padding."""
    torch.manual_seed(1)
    args = (cfg["in_ch"], cfg["out_ch"], cfg["kernel_size"])
    kwargs = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"],
                  groups=cfg["groups"], bias=cfg["bias"])
    shape = cfg["input_shape"]
    if one_d:
        compare(L.Conv1D(*args, **kwargs), nn.Conv1d(*args, **kwargs), randn(*shape[:3], seed=seed), True)
    else:
        compare(L.Conv2D(*args, **kwargs), nn.Conv2d(*args, **kwargs), randn(*shape, seed=seed), True)


@settings(max_examples=scaled_examples(8))
@given(cfg=fst.pool1d_configs(), seed=st.integers(0, 2**16))
def test_pool1d_configurations_match_torch(cfg, seed):
    x = randn(*cfg["input_shape"], seed=seed)
    args = (cfg["kernel_size"], cfg["stride"], cfg["padding"])
    compare(L.MaxPool1D(*args), nn.MaxPool1d(*args), x, True)
    compare(L.AvgPool1D(*args), nn.AvgPool1d(*args), x, True)


@pytest.mark.parametrize("ours, theirs", [
    (lambda: L.Dense(50, 8), lambda: nn.Linear(50, 8)),
    (lambda: L.Conv2D(4, 6, 3), lambda: nn.Conv2d(4, 6, 3)),
    (lambda: L.Conv2D(8, 6, 3, groups=2), lambda: nn.Conv2d(8, 6, 3, groups=2)),
    (lambda: L.Conv1D(4, 6, 5), lambda: nn.Conv1d(4, 6, 5)),
    (lambda: L.ConvTranspose2D(6, 2, 4), lambda: nn.ConvTranspose2d(6, 2, 4)),
])
def test_default_initialisation_has_torchs_bounds(ours, theirs):
    """Same fan rule as PyTorch: both draw U(-b, b) with the same b for weight and bias."""
    fnn.seed(0)
    torch.manual_seed(0)
    a, b = ours(), theirs()
    for name, p in a.named_parameters():
        t = getattr(b, name).detach().numpy()
        assert p.data.shape == t.shape
        bound = max(np.abs(t).max(), np.abs(p.data).max())
        fan_in = fnn.init.fan_in_and_fan_out(a.weight.data.shape)[0]
        assert bound <= 1 / math.sqrt(fan_in) + 1e-7
        assert np.abs(p.data).max() > 0.7 / math.sqrt(fan_in) and np.abs(t).max() > 0.7 / math.sqrt(fan_in)


@pytest.mark.parametrize("padding_idx", [0, 3, -1])
def test_embedding_padding_idx_matches_torch(padding_idx):
    """The padding row starts at zero and takes no gradient, as torch.nn.Embedding's."""
    torch.manual_seed(0)
    theirs = nn.Embedding(6, 4, padding_idx=padding_idx)
    ours = L.Embedding(6, 4, padding_idx=padding_idx)
    row = padding_idx % 6
    np.testing.assert_array_equal(ours.weight.data[row], 0)
    load_from_torch(ours, theirs)
    ids = np.array([[row, 1, row, 2], [5, row, 0, 3]])
    y = ours.forward(ids)
    yt = theirs(torch.tensor(ids))
    np.testing.assert_allclose(y, yt.detach().numpy(), **TOL)
    dy = np.random.default_rng(0).standard_normal(y.shape).astype(np.float32)
    yt.backward(torch.tensor(dy))
    ours.backward(dy)
    np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), **TOL)
    assert not ours.weight.grad[row].any()
