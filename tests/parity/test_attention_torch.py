"""MultiheadAttention and the Transformer layers against torch.nn with the same state_dict:
outputs, attention weights, input and parameter gradients, float32 (skipped without torch)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fastnn import layers as L  # noqa: E402

TOL = dict(rtol=1e-4, atol=1e-5)


def _load(ours, theirs):
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    assert list(ours.state_dict()) == list(theirs.state_dict())


def _grads_equal(ours, theirs):
    grads = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, grads[name].grad.numpy(), err_msg=name, **TOL)


@pytest.mark.parametrize("cross", [False, True])
@pytest.mark.parametrize("masks", ["none", "causal", "bool-per-head", "float", "padding", "both"])
def test_multihead_attention_matches_torch(cross, masks):
    torch.manual_seed(0)
    e, h, n, l = 8, 2, 3, 5
    s = 4 if cross else l
    theirs = torch.nn.MultiheadAttention(e, h, batch_first=True)
    ours = L.MultiheadAttention(e, h)
    _load(ours, theirs)
    r = np.random.default_rng(1)
    q = r.standard_normal((n, l, e)).astype(np.float32)
    kv = r.standard_normal((n, s, e)).astype(np.float32)
    v = (0.5 * kv + 0.1).astype(np.float32)
    attn_mask = key_padding_mask = None
    if masks == "causal" and not cross:
        attn_mask = L.causal_mask(l)
    elif masks == "bool-per-head":
        attn_mask = r.random((n * h, l, s)) < 0.3
        attn_mask[..., 0] = False
    elif masks == "float":
        attn_mask = r.standard_normal((l, s)).astype(np.float32)
    if masks in ("padding", "both"):
        key_padding_mask = np.zeros((n, s), bool)
        key_padding_mask[1, -1] = key_padding_mask[2, 1] = True
    if masks == "both":
        attn_mask = r.random((l, s)) < 0.2
        attn_mask[:, 0] = False
    tq = torch.tensor(q, requires_grad=True)
    tk, tv = torch.tensor(kv, requires_grad=True), torch.tensor(v, requires_grad=True)
    t_args = (tq, tk, tv) if cross else (tq, tq, tq)
    out_t, w_t = theirs(*t_args, attn_mask=None if attn_mask is None else torch.tensor(attn_mask),
                        key_padding_mask=None if key_padding_mask is None else torch.tensor(key_padding_mask))
    args = (q, kv, v) if cross else (q,)
    out, w = ours.forward(*args, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                          need_weights=True)
    np.testing.assert_allclose(out, out_t.detach().numpy(), **TOL)
    np.testing.assert_allclose(w, w_t.detach().numpy(), **TOL)
    dy = r.standard_normal(out.shape).astype(np.float32)
    out_t.backward(torch.tensor(dy))
    grads = ours.backward(dy)
    if cross:
        for g, t in zip(grads, (tq, tk, tv)):
            np.testing.assert_allclose(g, t.grad.numpy(), **TOL)
    else:
        np.testing.assert_allclose(grads, tq.grad.numpy(), **TOL)
    _grads_equal(ours, theirs)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_transformer_layers_match_torch(norm_first, activation):
    torch.manual_seed(1)
    kw = dict(dim_feedforward=16, dropout=0.0, activation=activation, norm_first=norm_first)
    r = np.random.default_rng(2)
    x = r.standard_normal((3, 5, 8)).astype(np.float32)
    mem = r.standard_normal((3, 6, 8)).astype(np.float32)
    dy = r.standard_normal((3, 5, 8)).astype(np.float32)
    kpm = np.zeros((3, 5), bool)
    kpm[0, 4] = True

    t_enc = torch.nn.TransformerEncoderLayer(8, 2, batch_first=True, **kw)
    enc = L.TransformerEncoderLayer(8, 2, **kw)
    _load(enc, t_enc)
    tx = torch.tensor(x, requires_grad=True)
    y_t = t_enc(tx, src_mask=torch.tensor(L.causal_mask(5) == -np.inf),
                src_key_padding_mask=torch.tensor(kpm))
    y = enc.forward(x, src_mask=L.causal_mask(5) == -np.inf, src_key_padding_mask=kpm)
    np.testing.assert_allclose(y, y_t.detach().numpy(), **TOL)
    y_t.backward(torch.tensor(dy))
    np.testing.assert_allclose(enc.backward(dy), tx.grad.numpy(), **TOL)
    _grads_equal(enc, t_enc)

    t_dec = torch.nn.TransformerDecoderLayer(8, 2, batch_first=True, **kw)
    dec = L.TransformerDecoderLayer(8, 2, **kw)
    _load(dec, t_dec)
    tx, tm = torch.tensor(x, requires_grad=True), torch.tensor(mem, requires_grad=True)
    y_t = t_dec(tx, tm, tgt_mask=torch.tensor(L.causal_mask(5)))
    y = dec.forward(x, mem, tgt_mask=L.causal_mask(5))
    np.testing.assert_allclose(y, y_t.detach().numpy(), **TOL)
    y_t.backward(torch.tensor(dy))
    dx, dmem = dec.backward(dy)
    np.testing.assert_allclose(dx, tx.grad.numpy(), **TOL)
    np.testing.assert_allclose(dmem, tm.grad.numpy(), **TOL)
    _grads_equal(dec, t_dec)


def test_causal_mask_is_torchs():
    np.testing.assert_array_equal(L.causal_mask(6),
                                  torch.nn.Transformer.generate_square_subsequent_mask(6).numpy())
