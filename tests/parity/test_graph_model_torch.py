"""Graph models against the equivalent torch.nn.Module: loaded with the module's state_dict, the
same outputs, input gradients and parameter gradients in float32 (skipped without torch)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn


from graph_cases import resnet_block, shared_dense, two_in_two_out  # noqa: E402

TOL = dict(rtol=1e-4, atol=1e-4)


class TorchResNetBlock(nn.Module):
    def __init__(self, c_in=2, c=4, hw=6, classes=3):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.proj = nn.Conv2d(c_in, c, 1)
        self.head = nn.Linear(c * hw * hw, classes)

    def forward(self, x):
        a = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return self.head(torch.relu(a + self.proj(x)).flatten(1))


class TorchTwoInTwoOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.embed = nn.Conv2d(1, 2, 3), nn.Linear(3, 4)
        self.cls, self.reg = nn.Linear(22, 4), nn.Linear(22, 1)

    def forward(self, img, vec):
        h = torch.cat([self.conv(img).flatten(1), self.embed(vec)], dim=1)
        return self.cls(torch.tanh(h)), self.reg(h * h)


class TorchSiamese(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc, self.neg, self.score = nn.Linear(6, 4), nn.Linear(4, 4, bias=False), nn.Linear(4, 1)

    def forward(self, a, b):
        return self.score(torch.tanh(self.enc(a)) + self.neg(torch.tanh(self.enc(b))))


CASES = {
    "resnet-block": (resnet_block, TorchResNetBlock, [(8, 2, 6, 6)]),
    "two-in-two-out": (two_in_two_out, TorchTwoInTwoOut, [(5, 1, 5, 5), (5, 3)]),
    "shared-weights": (shared_dense, TorchSiamese, [(7, 6), (7, 6)]),
}


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("case", sorted(CASES))
def test_graph_model_equals_torch(case, training):
    make_ours, make_theirs, shapes = CASES[case]
    torch.manual_seed(0)
    theirs = make_theirs().train(training)
    ours = make_ours()
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    r = np.random.default_rng(0)
    xs = [r.standard_normal(s).astype(np.float32) for s in shapes]
    xts = [torch.tensor(x, requires_grad=True) for x in xs]
    outs_t = theirs(*xts)
    outs_t = list(outs_t) if isinstance(outs_t, tuple) else [outs_t]
    outs = ours.forward(xs if len(xs) > 1 else xs[0], training=training)
    outs = outs if isinstance(outs, list) else [outs]
    for o, ot in zip(outs, outs_t):
        np.testing.assert_allclose(o, ot.detach().numpy(), **TOL)
    dys = [r.standard_normal(o.shape).astype(np.float32) for o in outs]
    torch.autograd.backward(outs_t, [torch.tensor(d) for d in dys])
    ours.zero_grad()
    dxs = ours.backward(dys if len(dys) > 1 else dys[0])
    dxs = dxs if isinstance(dxs, list) else [dxs]
    for dx, xt in zip(dxs, xts):
        np.testing.assert_allclose(dx, xt.grad.numpy(), **TOL)
    grads = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        np.testing.assert_allclose(grads[name].grad, p.grad.numpy(), err_msg=name, **TOL)
    if training and case == "resnet-block":  # running statistics updated alike
        sd = ours.state_dict()
        for name, b in theirs.named_buffers():
            if not name.endswith("num_batches_tracked"):
                np.testing.assert_allclose(sd[name], b.numpy(), err_msg=name, **TOL)
