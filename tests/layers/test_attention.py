"""Attention and Transformer layers: the masked-softmax kernels against the NumPy reference,
gradient checks in float64 (self- and cross-attention, masks, dropout, both norm placements),
PyTorch parity with the same state_dict (float32), masks and errors, and use in graph models."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastnn as fnn
from fastnn import _core as K
from fastnn import layers as L
from fastnn._core import reference as R

from conftest import scaled_examples


# --- the row kernels ---------------------------------------------------------------------------
@given(st.integers(1, 6), st.integers(1, 5), st.integers(1, 7), st.sampled_from([None, 1, "b"]),
       st.sampled_from([np.float32, np.float64]), st.integers(0, 2**16))
@settings(max_examples=scaled_examples(25), deadline=None)
def test_masked_softmax_equals_reference(b, l, s, mask_batches, dtype, seed):
    r = np.random.default_rng(seed)
    scores = (3 * r.standard_normal((b, l, s))).astype(dtype)
    mask = None
    if mask_batches is not None:
        m = 1 if mask_batches == 1 else b
        mask = np.where(r.random((m, l, s)) < 0.3, -np.inf, r.standard_normal((m, l, s))).astype(dtype)
        mask[..., 0] = 0  # every row keeps one key
    out, ref = np.empty_like(scores), np.empty_like(scores)
    K.masked_softmax_forward(scores, 0.5, mask, out)
    R.masked_softmax_forward(scores, 0.5, mask, ref)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol)
    dp = r.standard_normal(scores.shape).astype(dtype)
    ds, ds_ref = np.empty_like(scores), np.empty_like(scores)
    K.masked_softmax_backward(out, dp, 0.5, ds)
    R.masked_softmax_backward(out, dp, 0.5, ds_ref)
    np.testing.assert_allclose(ds, ds_ref, rtol=10 * tol, atol=10 * tol)


def _attention_case(r, n, l, s, heads, d, dtype, mask_batches, dropout):
    """q, k, v as column blocks of packed (rows, 3E) arrays (strided rows), a mask and drop."""
    e = heads * d
    qkv = r.standard_normal((n * l, 3 * e)).astype(dtype)
    kv = qkv if s == l else r.standard_normal((n * s, 3 * e)).astype(dtype)
    q, k, v = qkv[:, :e], kv[:, e:2 * e], kv[:, 2 * e:]
    mask = None
    if mask_batches is not None:
        m = {"one": 1, "sample": n, "head": n * heads}[mask_batches]
        mask = np.where(r.random((m, l, s)) < 0.3, -np.inf, r.standard_normal((m, l, s))).astype(dtype)
        mask[..., 0] = 0
    drop = None
    if dropout:
        drop = ((r.random((n * heads, l, s)) < 0.75) / 0.75).astype(dtype)
    return q, k, v, mask, drop


# float32 heads take head_gemm.h's GEMM (avx2 and up; whole and ragged 16-column panels and
# 6-row tiles), else the microkernel (d = 16, 32) or BLAS (d = 3)
@given(st.sampled_from([(2, 16, 16, 2, 16), (3, 20, 17, 2, 32), (2, 5, 7, 3, 3),
                        (2, 13, 29, 2, 20), (1, 64, 48, 2, 40)]),
       st.sampled_from([None, "one", "sample", "head"]), st.booleans(),
       st.sampled_from([np.float32, np.float64]), st.integers(0, 2**16))
@settings(max_examples=scaled_examples(12), deadline=None)
def test_attention_kernels_equal_reference(shape, mask_batches, dropout, dtype, seed):
    n, l, s, heads, d = shape
    r = np.random.default_rng(seed)
    q, k, v, mask, drop = _attention_case(r, n, l, s, heads, d, dtype, mask_batches, dropout)
    scale = 1 / np.sqrt(d)
    outs = []
    for mod in (K, R):
        p = np.empty((n * heads, l, s), dtype)
        ctx = np.full((n * l, heads * d), np.nan, dtype)
        used = None if drop is None else np.empty_like(p)
        mod.attention_forward(q, k, v, heads, scale, mask, p, ctx, drop, used)
        outs.append((p, ctx, used))
    tol = 2e-6 if dtype == np.float32 else 1e-12
    for a, b in zip(*outs):
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=tol * 10, atol=tol * 10)
    p, _, used = outs[1]
    dctx = r.standard_normal((n * l, heads * d)).astype(dtype)
    grads = []
    for mod in (K, R):
        packed = np.full((n * max(l, s), 3 * heads * d), np.nan, dtype)
        e = heads * d
        dq, dk, dv = packed[:n * l, :e], packed[:n * s, e:2 * e], packed[:n * s, 2 * e:]
        mod.attention_backward(q, k, v, heads, scale, p, used, drop, dctx, dq, dk, dv)
        grads.append((dq.copy(), dk.copy(), dv.copy()))
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=tol * 100, atol=tol * 100)


def test_attention_kernels_give_the_same_bits_on_one_and_two_threads():
    r = np.random.default_rng(7)
    n, l, heads, d = 4, 32, 2, 32
    q, k, v, mask, _ = _attention_case(r, n, l, l, heads, d, np.float32, "sample", False)
    dctx = r.standard_normal((n * l, heads * d)).astype(np.float32)
    results = []
    old = fnn.get_num_threads()
    try:
        for threads in (1, 2):
            fnn.set_num_threads(threads)
            p = np.empty((n * heads, l, l), np.float32)
            ctx = np.empty((n * l, heads * d), np.float32)
            K.attention_forward(q, k, v, heads, 0.2, mask, p, ctx)
            dq, dk, dv = (np.empty_like(ctx) for _ in range(3))
            K.attention_backward(q, k, v, heads, 0.2, p, None, None, dctx, dq, dk, dv)
            results.append((p, ctx, dq, dk, dv))
    finally:
        fnn.set_num_threads(old)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape", [(2, 64, 64, 4, 32), (3, 20, 17, 2, 32), (2, 13, 29, 2, 20),
                                   (2, 5, 7, 3, 3)])
@pytest.mark.parametrize("threads", [1, 2])
def test_head_gemm_gives_the_microkernels_bits(shape, threads):
    """head_gemm.h's per-head products (one FMA chain per entry over k in order from zero, as
    the microkernel's) against the route without them, at 1 and 2 threads: the same bits where
    the microkernel takes the shape; within the float64 reference's tolerance elsewhere."""
    from fastnn._core import routes
    from fastnn._core.tuning import tuning
    n, l, s, heads, d = shape
    r = np.random.default_rng(sum(shape))
    q, k, v, mask, drop = _attention_case(r, n, l, s, heads, d, np.float32, "sample", True)
    dctx = r.standard_normal((n * l, heads * d)).astype(np.float32)
    old = fnn.get_num_threads()
    results = []
    try:
        fnn.set_num_threads(threads)
        for on in (False, True):
            with tuning(attention_head_gemm=on), routes.traced() as taken:
                p = np.empty((n * heads, l, s), np.float32)
                used = np.empty_like(p)
                ctx = np.empty((n * l, heads * d), np.float32)
                K.attention_forward(q, k, v, heads, 0.3, mask, p, ctx, drop, used)
                dq, dv = np.empty_like(ctx), np.empty((n * s, heads * d), np.float32)
                dk = np.empty_like(dv)
                K.attention_backward(q, k, v, heads, 0.3, p, used, drop, dctx, dq, dk, dv)
            assert bool(taken["attention/head_gemm"]) == (on and routes.available("attention/head_gemm"))
            results.append((p, ctx, dq, dk, dv))
    finally:
        fnn.set_num_threads(old)
    from fastnn._core import _blas
    if min(l, s, d) >= 16 and _blas._dense_microkernel_active():
        for a, b in zip(*results):
            np.testing.assert_array_equal(a, b)
    else:
        for a, b in zip(*results):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.filterwarnings("ignore:invalid value encountered")
@pytest.mark.parametrize("s", [16, 64, 80])
def test_masked_softmax_whole_lane_rows_equal_reference(s):
    """Rows of a multiple of 16 (the AVX2 row's case): masks, a fully masked row (NaN), NaN and
    inf scores, huge spreads (exponentials down to the subnormals)."""
    r = np.random.default_rng(s)
    scores = (3 * r.standard_normal((6, 5, s))).astype(np.float32)
    scores[1, 2] *= 1e4
    scores[2, 0, 3] = np.nan
    scores[2, 1, 5] = np.inf
    mask = np.where(r.random((6, 5, s)) < 0.3, -np.inf, r.standard_normal((6, 5, s))).astype(np.float32)
    mask[..., 0] = 0
    mask[3, 4] = -np.inf
    for m in (None, mask):
        out, ref = np.empty_like(scores), np.empty_like(scores)
        K.masked_softmax_forward(scores, 0.5, m, out)
        R.masked_softmax_forward(scores, 0.5, m, ref)
        np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)


def test_attention_kernel_errors_name_the_kernel_and_shapes():
    f = np.float32
    q = np.zeros((6, 4), f)
    with pytest.raises(ValueError, match=r"attention_forward: ctx .* contiguous rows"):
        K.attention_forward(q, q, q, 2, 1.0, None, np.empty((4, 3, 3), f), np.zeros((4, 6), f).T)
    with pytest.raises(ValueError, match=r"attention_forward: k must have shape \(6, 4\)"):
        K.attention_forward(q, q[:4], q, 2, 1.0, None, np.empty((4, 3, 3), f), np.empty((6, 4), f))
    with pytest.raises(ValueError, match=r"attention_backward: output dq"):
        ro = np.empty((6, 4), f)
        ro.flags.writeable = False
        K.attention_backward(q, q, q, 2, 1.0, np.empty((4, 3, 3), f), None, None, q, ro, q.copy(),
                             q.copy())


def test_fully_masked_row_is_nan_as_torch_and_huge_scores_stay_finite():
    scores = np.array([[[1e30, 0.0, -1e30], [1.0, 2.0, 3.0]]], np.float32)
    mask = np.array([[[0, 0, 0], [-np.inf, -np.inf, -np.inf]]], np.float32)
    out = np.empty_like(scores)
    K.masked_softmax_forward(scores, 1.0, mask, out)
    np.testing.assert_array_equal(out[0, 0], [1, 0, 0])
    assert np.isnan(out[0, 1]).all()


def test_kernel_errors_name_the_kernel_and_shapes():
    with pytest.raises(ValueError, match=r"masked_softmax_forward: mask must be \(M, 2, 3\)"):
        K.masked_softmax_forward(np.zeros((4, 2, 3), np.float32), 1.0,
                                 np.zeros((3, 2, 3), np.float32), np.empty((4, 2, 3), np.float32))


# --- gradients ---------------------------------------------------------------------------------
@pytest.mark.parametrize("training", [True, False])
def test_self_attention_gradcheck_with_masks(training):
    fnn.seed(0)
    mha = L.MultiheadAttention(6, 3, dropout=0.25).astype(np.float64)
    r = np.random.default_rng(0)
    kpm = np.zeros((2, 4), bool)
    kpm[1, 3] = True
    fnn.assert_gradcheck(_Masked(mha, attn_mask=L.causal_mask(4), key_padding_mask=kpm),
                         r.standard_normal((2, 4, 6)), training=training)


def test_cross_attention_gradcheck_returns_three_gradients():
    fnn.seed(1)
    mha = L.MultiheadAttention(4, 2).astype(np.float64)
    r = np.random.default_rng(1)
    xs = [r.standard_normal((2, 3, 4)), r.standard_normal((2, 5, 4)), r.standard_normal((2, 5, 4))]
    result = fnn.assert_gradcheck(mha, xs)
    assert [t.name for t in result.tensors][:3] == ["input_0", "input_1", "input_2"]


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_transformer_layers_gradcheck(norm_first, activation):
    fnn.seed(2)
    r = np.random.default_rng(2)
    enc = L.TransformerEncoderLayer(6, 2, 8, dropout=0.2, activation=activation,
                                    norm_first=norm_first).astype(np.float64)
    fnn.assert_gradcheck(enc, r.standard_normal((2, 3, 6)))
    dec = L.TransformerDecoderLayer(6, 2, 8, dropout=0.2, activation=activation,
                                    norm_first=norm_first).astype(np.float64)
    fnn.assert_gradcheck(dec, [r.standard_normal((2, 3, 6)), r.standard_normal((2, 4, 6))])


class _Masked(L.Layer):
    """A MultiheadAttention with fixed masks, as a one-input layer for gradcheck."""

    def __init__(self, mha, **masks):
        super().__init__()
        self.mha, self.masks = mha, masks

    def forward(self, x, training=True):
        return self.mha.forward(x, training=training, **self.masks)

    def backward(self, dy):
        return self.mha.backward(dy)


# --- shapes, masks, errors ---------------------------------------------------------------------
def test_need_weights_are_probabilities_averaged_over_heads():
    mha = L.MultiheadAttention(8, 4)
    x = np.random.default_rng(3).standard_normal((2, 5, 8)).astype(np.float32)
    kpm = np.zeros((2, 5), bool)
    kpm[:, 2] = True
    out, w = mha.forward(x, key_padding_mask=kpm, attn_mask=L.causal_mask(5), need_weights=True)
    assert out.shape == (2, 5, 8) and w.shape == (2, 5, 5)
    np.testing.assert_allclose(w.sum(-1), 1, rtol=1e-6)
    assert not w[:, :, 2].any() and not np.triu(w[0], 1).any()


def test_causal_mask_and_positional_encoding_values():
    m = L.causal_mask(3)
    assert m.dtype == np.float32 and (m == np.array([[0, -np.inf, -np.inf], [0, 0, -np.inf], [0, 0, 0]])).all()
    pe = L.PositionalEncoding(4, max_len=10, dropout=0.0)
    y = pe.forward(np.zeros((1, 3, 4), np.float32))
    t = np.arange(3)[:, None]
    want = np.stack([np.sin(t[:, 0]), np.cos(t[:, 0]), np.sin(t[:, 0] / 100), np.cos(t[:, 0] / 100)], 1)
    np.testing.assert_allclose(y[0], want, rtol=1e-6, atol=1e-7)
    assert pe.state_dict() == {}


def test_attention_errors_name_the_layer_and_shapes():
    with pytest.raises(ValueError, match="divisible"):
        L.MultiheadAttention(6, 4)
    mha = L.MultiheadAttention(4, 2)
    with pytest.raises(ValueError, match=r"MultiheadAttention.*query.*\(2, 3, 5\)"):
        mha.forward(np.zeros((2, 3, 5), np.float32))
    with pytest.raises(ValueError, match=r"attn_mask must be \(3, 3\) or \(4, 3, 3\)"):
        mha.forward(np.zeros((2, 3, 4), np.float32), attn_mask=np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match=r"key_padding_mask must be \(2, 3\)"):
        mha.forward(np.zeros((2, 3, 4), np.float32), key_padding_mask=np.zeros((2, 4), bool))
    with pytest.raises(TypeError, match="both key and value"):
        mha.forward(np.zeros((2, 3, 4), np.float32), np.zeros((2, 3, 4), np.float32))
    with pytest.raises(RuntimeError, match="backward called before forward"):
        L.MultiheadAttention(4, 2).backward(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="activation"):
        L.TransformerEncoderLayer(4, 2, activation="tanh")


def test_transformer_in_a_graph_model_trains_and_saves(tmp_path):
    """An encoder-decoder as a graph model: the decoder layer called on [tgt, memory]."""
    fnn.seed(4)
    src, tgt = fnn.Input(shape=(5, 8)), fnn.Input(shape=(4, 8))
    memory = L.TransformerEncoderLayer(8, 2, 16, dropout=0.0, name="enc")(src)
    y = L.TransformerDecoderLayer(8, 2, 16, dropout=0.0, name="dec")([tgt, memory])
    model = fnn.Model([src, tgt], L.Dense(8, 3, name="head")(y))
    r = np.random.default_rng(4)
    a, b = r.standard_normal((32, 5, 8)).astype(np.float32), r.standard_normal((32, 4, 8)).astype(np.float32)
    labels = (b[..., 0] + a[:, :4, 1] > 0).astype(np.int64) + (b[..., 1] > 1)
    before = model.evaluate([a, b], labels, metrics=())["loss"]
    model.fit([a, b], labels, epochs=15, batch_size=8, verbose=0,
              optimizer=fnn.optim.Adam(model.parameters(), lr=3e-3))
    assert model.evaluate([a, b], labels, metrics=())["loss"] < 0.6 * before
    model.save(tmp_path / "t.npz")
    np.testing.assert_array_equal(fnn.load(tmp_path / "t.npz").predict([a, b]), model.predict([a, b]))
    assert "dec.multihead_attn.in_proj_weight" in model.state_dict()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_norm_and_attention_give_the_same_bits_on_one_and_two_threads(dtype):
    """Compiled row kernels and fixed row blocks: no sum depends on the thread count."""
    r = np.random.default_rng(5)
    x = r.standard_normal((64, 40, 32)).astype(dtype)
    dy = r.standard_normal(x.shape).astype(dtype)
    results = []
    old = fnn.get_num_threads()
    try:
        for threads in (1, 2):
            fnn.set_num_threads(threads)
            ln = L.LayerNorm(32).astype(dtype)
            y = ln.forward(x)
            dx = ln.backward(dy)
            scores = x.reshape(-1, 40, 32)[:, :, :32].copy()
            p = np.empty_like(scores)
            K.masked_softmax_forward(scores, 0.3, None, p)
            results.append((y, dx, ln.weight.grad.copy(), ln.bias.grad.copy(), p))
    finally:
        fnn.set_num_threads(old)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [16, 128, 40, 7])
def test_layer_norm_kernels_equal_the_float64_reference_on_every_route(dtype, d):
    """The compiled layer norm (float32 widths that are multiples of 16 take the vector rows, the
    others the generic ones) against the NumPy reference: with and without weight and bias, an
    offset row set, each backward output skippable, NaN kept to its row."""
    r = np.random.default_rng(d)
    m = 300  # more rows than the parameter gradients' blocks, not a multiple of them
    tol = 1e-4 if dtype == np.float32 else 1e-9
    for affine, offset in ((True, 0), (False, 1000), (True, 1000)):
        x = (r.standard_normal((m, d)) + offset).astype(dtype)
        dy = r.standard_normal((m, d)).astype(dtype)
        w = r.standard_normal(d).astype(dtype) if affine else None
        b = r.standard_normal(d).astype(dtype) if affine else None
        for skip in (None, "dx", "params"):
            got, want = [], []
            for mod, sink in ((K, got), (R, want)):
                out, mean, inv = np.empty_like(x), np.empty(m), np.empty(m)
                mod.layer_norm_forward(x, w, b, 1e-5, out, mean, inv)
                dx = None if skip == "dx" else np.empty_like(x)
                dw = None if skip == "params" else np.full(d, 0.5, dtype)
                db = None if skip == "params" or not affine else np.full(d, -0.5, dtype)
                mod.layer_norm_backward(x, dy, w, mean, inv, dx, dw, db)
                sink.extend([out, mean, inv, dx, dw, db])
            for g, w_ in zip(got, want):
                if w_ is None:
                    assert g is None
                else:
                    np.testing.assert_allclose(g, w_, rtol=tol, atol=tol * (1 + offset))
    x = r.standard_normal((4, d)).astype(dtype)
    x[1, d // 2] = np.nan
    out, mean, inv = np.empty_like(x), np.empty(4), np.empty(4)
    K.layer_norm_forward(x, None, None, 1e-5, out, mean, inv)
    assert np.isnan(out[1]).all() and np.isfinite(np.delete(out, 1, axis=0)).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_layer_norm_with_residual_is_the_sum_then_the_norm_bitwise(dtype, threads):
    """layer_norm_forward(x, ..., residual=r): x := x + r (numpy's bits), then x's norm (the
    unfused call's bits); at 1 and 2 threads."""
    r = np.random.default_rng(3)
    x = r.standard_normal((300, 128)).astype(dtype)
    res = r.standard_normal(x.shape).astype(dtype)
    w, b = r.standard_normal(128).astype(dtype), r.standard_normal(128).astype(dtype)
    old = fnn.get_num_threads()
    try:
        fnn.set_num_threads(threads)
        total = x + res
        want = [np.empty_like(x), np.empty(300), np.empty(300)]
        K.layer_norm_forward(total, w, b, 1e-5, *want)
        got = [np.empty_like(x), np.empty(300), np.empty(300)]
        fused = x.copy()
        K.layer_norm_forward(fused, w, b, 1e-5, *got, residual=res)
    finally:
        fnn.set_num_threads(old)
    np.testing.assert_array_equal(fused, total)
    for a, b_ in zip(got, want):
        np.testing.assert_array_equal(a, b_)


def test_layer_norm_reference_takes_the_residual_too():
    """The NumPy reference (the benchmarks' oracle step swaps it in) forms the same sum."""
    r = np.random.default_rng(8)
    x, res = r.standard_normal((5, 16)).astype(np.float32), r.standard_normal((5, 16)).astype(np.float32)
    outs = []
    for mod in (K, R):
        xx = x.copy()
        out, mean, inv = np.empty_like(x), np.empty(5), np.empty(5)
        mod.layer_norm_forward(xx, None, None, 1e-5, out, mean, inv, residual=res)
        outs.append((xx, out))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_allclose(outs[0][1], outs[1][1], rtol=1e-5, atol=1e-5)


def test_layer_norm_with_residual_rejects_bad_input_naming_the_kernel():
    f = np.float32
    x, out, mean, inv = np.zeros((4, 8), f), np.empty((4, 8), f), np.empty(4), np.empty(4)
    with pytest.raises(ValueError, match=r"layer_norm_forward: residual must have shape \(4, 8\)"):
        K.layer_norm_forward(x, None, None, 1e-5, out, mean, inv, residual=np.zeros((4, 7), f))
    with pytest.raises(TypeError, match=r"layer_norm_forward: residual"):
        K.layer_norm_forward(x, None, None, 1e-5, out, mean, inv, residual=np.zeros((4, 8)))
    with pytest.raises(ValueError, match=r"layer_norm_forward: x \(4, 8\) .* must not overlap"):
        K.layer_norm_forward(x, None, None, 1e-5, out, mean, inv, residual=x)
    ro = np.zeros((4, 8), f)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"layer_norm_forward: output x"):
        K.layer_norm_forward(ro, None, None, 1e-5, out, mean, inv, residual=np.zeros((4, 8), f))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_encoder_residual_fused_into_the_layer_norm_gives_the_unfused_bits(dtype, monkeypatch):
    """Post-norm blocks form x + sublayer(x) inside norm.forward: outputs and gradients are
    the unfused layer's bits."""
    from fastnn.layers import transformer as T
    fnn.seed(4)
    layer = L.TransformerEncoderLayer(32, 4, 64, dropout=0.0).astype(dtype)
    x = np.random.default_rng(4).standard_normal((3, 10, 32)).astype(dtype)
    dy = np.random.default_rng(5).standard_normal(x.shape).astype(dtype)
    outs = []
    for fuse in (True, False):
        if not fuse:
            monkeypatch.setattr(T, "_fusable", lambda *a: False)
        layer.zero_grad()
        y = layer.forward(x, training=True)
        dx = layer.backward(dy)
        outs.append([y.copy(), dx.copy()] + [prm.grad.copy() for prm in layer.parameters()])
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)


def test_attention_dropout_is_off_in_inference_and_inverted_in_training():
    """As torch: dropout on the attention probabilities in training only, scaled by 1/(1-p)."""
    fnn.seed(6)
    x = np.random.default_rng(6).standard_normal((64, 6, 8)).astype(np.float32)
    plain, dropped = L.MultiheadAttention(8, 2), L.MultiheadAttention(8, 2, dropout=0.5)
    dropped.load_state_dict(plain.state_dict())
    np.testing.assert_array_equal(dropped.forward(x, training=False), plain.forward(x, training=False))
    _, w = dropped.forward(x, training=True, need_weights=True)
    _, w_plain = plain.forward(x, training=True, need_weights=True)
    per_head = dropped._cache["p_used"]
    assert 0.4 < (per_head == 0).mean() < 0.6                     # about half dropped
    assert set(np.unique(per_head / np.where(dropped._cache["p"] > 0, dropped._cache["p"], 1)).round(5)) <= {0.0, 2.0}
    np.testing.assert_allclose(w.mean(), w_plain.mean(), rtol=0.05)  # the expectation is kept


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m, n, k", [(2048, 128, 512), (300, 40, 72), (5, 3, 7), (9, 0, 4)])
def test_dense_backward_relu_is_dense_backward_then_relu_backward_bitwise(dtype, m, n, k):
    """The fused hidden gradient of a feed-forward block: the GEMM's dx and relu_backward's mask
    (0 where y <= 0, NaN in y passing dy's value through as relu_backward does), the same bits at
    one and two threads, on the microkernel's shapes and the BLAS ones."""
    r = np.random.default_rng(m + n + k)
    dy = r.standard_normal((m, n)).astype(dtype)
    w = r.standard_normal((n, k)).astype(dtype)
    y = np.maximum(r.standard_normal((m, k)), 0).astype(dtype)
    if y.size:
        y.flat[::97] = np.nan
    old = fnn.get_num_threads()
    try:
        for threads in (1, 2):
            fnn.set_num_threads(threads)
            want = np.empty((m, k), dtype)
            K.dense_backward(np.zeros((m, k), dtype), w, dy, want, None, None)
            K.relu_backward(y, want, want)
            got = np.full((m, k), 7, dtype)
            K.dense_backward(y, w, dy, got, None, None, relu=True)  # y: the ReLU's output
            np.testing.assert_array_equal(got, want)
    finally:
        fnn.set_num_threads(old)
    with pytest.raises(ValueError, match="dense_backward"):
        K.dense_backward(y[:, :-1] if k else y[:-1], w, dy, got, None, None, relu=True)
    with pytest.raises(TypeError, match="dense_backward"):
        K.dense_backward(y, w.astype(np.float16), dy, got, None, None, relu=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_encoder_feedforward_backward_fused_with_the_relu_mask_gives_the_unfused_bits(dtype):
    """TransformerEncoderLayer's feed-forward backward masks linear2's dx with the ReLU's output
    in the GEMM's blocks; a ReLU subclass (not fused) runs the separate passes: same bits."""
    x = np.random.default_rng(3).standard_normal((4, 24, 32)).astype(dtype)
    dy = np.random.default_rng(4).standard_normal(x.shape).astype(dtype)
    res = []
    for fused in (True, False):
        fnn.seed(0)
        layer = L.TransformerEncoderLayer(32, 4, 96, dropout=0.0).astype(dtype)
        if not fused:
            layer.activation = type("PlainReLU", (L.ReLU,), {})()
        layer.forward(x)
        res.append([layer.backward(dy)] + [p.grad.copy() for p in layer.parameters()])
    for a, b in zip(*res):
        np.testing.assert_array_equal(a, b)
