"""fnn.onnx.export: every built-in layer, the suite's and the CLI's models, checked by
onnx.checker and run in onnx's ReferenceEvaluator (and onnxruntime when installed) against
model.predict at another batch size than the example's (the batch axis is dynamic)."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx.reference import ReferenceEvaluator  # noqa: E402

import fastnn as fnn  # noqa: E402
from fastnn import layers as L  # noqa: E402
from fastnn import zoo  # noqa: E402

try:
    import onnxruntime
except ImportError:  # the reference evaluator still checks every model
    onnxruntime = None

TOL = 1e-5


def _randomise_batchnorm(model, seed=0):
    """Running statistics and affine parameters away from their defaults, so the export of
    inference-mode batch norm is really checked."""
    gen = np.random.default_rng(seed)
    for layer in _all_layers(model):
        if type(layer).__name__.startswith("BatchNorm"):
            c = layer.num_features
            layer.running_mean[...] = gen.normal(0, 0.5, c)
            layer.running_var[...] = gen.uniform(0.5, 2.0, c)
            layer.weight.data[...] = gen.uniform(0.5, 1.5, c)
            layer.bias.data[...] = gen.normal(0, 0.2, c)
    return model


def _all_layers(model):
    for layer in getattr(model, "layers", [model]):
        yield layer
        inner = getattr(layer, "inner", None)
        if inner is not None:
            yield from _all_layers(inner)


def _data(shape, dtype, gen, ids=None):
    if ids is not None:
        return gen.integers(0, ids, shape).astype(dtype)
    return gen.standard_normal(shape).astype(dtype)


def check_export(tmp_path, model, example, x, dtype=np.float32, tol=TOL):
    path = tmp_path / "model.onnx"
    fnn.onnx.export(model, path, example)
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["output"]
    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "batch" and not batch.HasField("dim_value")
    expected = model.predict(x)
    got = ReferenceEvaluator(proto).run(None, {"input": x})[0]
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)
    if onnxruntime is not None and dtype == np.float32:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {"input": x})[0]
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)
    return proto


def _layer_cases():
    """(id, model builder, per-sample input shape, integer vocabulary or None)."""
    yield "dense", lambda: fnn.Sequential(L.Dense(6, 5), L.ReLU(), L.Dense(5, 3, bias=False)), (6,), None
    yield "dense-3d", lambda: fnn.Sequential(L.Dense(6, 5), L.Tanh(), L.Dense(5, 4)), (3, 6), None
    yield "conv", lambda: fnn.Sequential(L.Conv2D(2, 4, 3, stride=2, padding=1), L.LeakyReLU(0.2),
                                         L.Conv2D(4, 3, (3, 1), padding=(1, 0), bias=False),
                                         L.Sigmoid()), (2, 9, 8), None
    yield "conv-transpose", lambda: fnn.Sequential(
        L.ConvTranspose2D(3, 4, 4, stride=2, padding=1), L.ReLU(),
        L.ConvTranspose2D(4, 2, 3, stride=2, padding=1, output_padding=1, bias=False),
        L.Tanh()), (3, 5, 6), None
    yield "pools", lambda: fnn.Sequential(L.MaxPool2D(3, stride=2, padding=1), L.AvgPool2D(2),
                                          L.AvgPool2D(3, stride=1, padding=1),
                                          L.Upsample2D(3)), (2, 9, 10), None
    yield "batchnorm2d", lambda: fnn.Sequential(L.Conv2D(2, 4, 3, padding=1), L.BatchNorm2D(4),
                                                L.ReLU(), L.MaxPool2D(2)), (2, 6, 6), None
    yield "batchnorm1d", lambda: fnn.Sequential(L.Dense(5, 4), L.BatchNorm1D(4), L.ReLU(),
                                                L.Reshape((2, 2)), L.BatchNorm1D(2)), (5,), None
    yield "shape-dropout-softmax", lambda: fnn.Sequential(
        L.Flatten(), L.Dropout(0.5), L.Dense(24, 12), L.Identity(), L.Reshape((3, -1)),
        L.Softmax(axis=1), L.Softmax()), (2, 3, 4), None
    yield "residual", lambda: fnn.Sequential(
        L.Residual(fnn.Sequential(L.Dense(6, 6), L.ReLU(), L.Dense(6, 6))),
        L.Residual(L.Tanh()), L.Dense(6, 2)), (6,), None
    for cell in ("RNN", "LSTM", "GRU"):
        for seq in (True, False):
            yield (f"{cell.lower()}-{'seq' if seq else 'last'}",
                   lambda cell=cell, seq=seq: fnn.Sequential(
                       L.Embedding(11, 5), getattr(L, cell)(5, 7, return_sequences=seq),
                       L.Dense(7, 4)), (6,), 11)
    yield "lstm-float-input", lambda: fnn.Sequential(L.LSTM(3, 4), L.GRU(4, 5, return_sequences=False)), (5, 3), None
    for cell in ("RNN", "LSTM", "GRU"):
        for seq in (True, False):
            yield (f"{cell.lower()}-stacked-bidirectional-{'seq' if seq else 'last'}",
                   lambda cell=cell, seq=seq: fnn.Sequential(
                       L.Embedding(9, 4, padding_idx=0),
                       getattr(L, cell)(4, 5, num_layers=2, bidirectional=True, dropout=0.3,
                                        return_sequences=seq), L.Dense(10, 3)), (6,), 9)
    yield "lstm-stacked", lambda: fnn.Sequential(L.LSTM(3, 4, num_layers=3)), (5, 3), None
    yield "smooth-activations", lambda: fnn.Sequential(
        L.Dense(6, 8), L.GELU(), L.Dense(8, 8), L.GELU(approximate="tanh"), L.SiLU(),
        L.ELU(0.7), L.Dense(8, 3)), (6,), None
    yield "layernorm", lambda: fnn.Sequential(
        L.Dense(6, 8), L.LayerNorm(8), L.Reshape((2, 4)), L.LayerNorm((2, 4), elementwise_affine=False),
        L.Flatten(), L.LayerNorm(8, bias=False)), (6,), None
    yield "lrn-step", lambda: fnn.Sequential(
        L.Conv2D(2, 6, 3, padding=1), L.LocalResponseNorm(3, alpha=0.1, beta=0.7, k=1.5),
        L.LocalResponseNorm(5), L.Step()), (2, 5, 5), None
    yield "adaptive-avgpool", lambda: fnn.Sequential(
        L.Conv2D(2, 3, 3, padding=1), L.AdaptiveAvgPool2D((4, None)), L.AdaptiveAvgPool2D(1),
        L.Flatten()), (2, 8, 6), None


CASES = list(_layer_cases())


@pytest.mark.parametrize("name,build,shape,vocab", CASES, ids=[c[0] for c in CASES])
def test_export_matches_predict(tmp_path, name, build, shape, vocab):
    fnn.seed(3)
    model = _randomise_batchnorm(build())
    gen = np.random.default_rng(1)
    dtype = np.int64 if vocab else np.float32
    check_export(tmp_path, model, _data((1, *shape), dtype, gen, vocab),
                 _data((5, *shape), dtype, gen, vocab))


@pytest.mark.parametrize("name", sorted(zoo.BUILDERS))
def test_suite_models_export(tmp_path, name):
    fnn.seed(5)
    model, shape, _ = zoo.build(name)
    _randomise_batchnorm(model)
    gen = np.random.default_rng(2)
    first = model.layers[0]  # a Sequential's first layer; a graph model's (resnet) first node's
    vocab = first.num_embeddings if isinstance(first, L.Embedding) else None  # token ids
    dtype = np.int64 if vocab else np.float32
    check_export(tmp_path, model, _data((2, *shape), dtype, gen, vocab),
                 _data((3, *shape), dtype, gen, vocab))


def _cli_models():
    """``fastnn train NAME`` -> [(model, per-sample input shape or "ids"/"seq2seq", vocab)]: the
    networks each recipe trains and saves (a GAN's both networks, a VAE's encoder and decoder)."""
    from fastnn.models.gan import dcgan
    from fastnn.models.word2vec import Word2Vec
    from fastnn.recipes import digits, generative, seq2seq, sequence, vision

    def sae():
        x = np.random.default_rng(0).random((16, 64)).astype(np.float32)
        encoders = digits.pretrain_stacked_autoencoder(x, epochs=1)
        return [(fnn.Sequential(L.Flatten(), *encoders, L.Dense(24, 10)), (1, 8, 8), None)]

    def gan(name):
        if name == "gan":
            g, d = generative.dense_gan()
            return [(g, (32,), None), (d, (1, 8, 8), None)]
        g, d = dcgan(32, image_size=16, features=32)
        return [(_randomise_batchnorm(g), (32, 1, 1), None), (_randomise_batchnorm(d), (1, 16, 16), None)]

    def vae():
        v = generative.vae_digits()
        return [(v.encoder, (1, 8, 8), None), (v.decoder, (8,), None)]

    return {
        "mlp": lambda: [(digits._mlp(), (1, 8, 8), None)],
        "cnn": lambda: [(_randomise_batchnorm(digits._cnn()), (1, 8, 8), None)],
        "sae": sae,
        "resnet": lambda: [(_randomise_graph_batchnorm(vision.resnet()), (1, 8, 8), None)],
        "fcn": lambda: [(_randomise_graph_batchnorm(vision.fcn()), (1, 32, 32), None)],
        "rnn": lambda: [(sequence.char_model("rnn", 40), (12,), 40)],
        "lstm": lambda: [(sequence.char_model("lstm", 40), (12,), 40)],
        "word2vec": lambda: [(Word2Vec(30, 16, seed=0), (7,), 30)],
        "seq2seq": lambda: [(seq2seq.date_model(), "seq2seq", None)],
        "transformer": lambda: [(seq2seq.reversal_model(), "seq2seq", None)],
        "ae": lambda: [(generative.denoising_autoencoder(), (1, 8, 8), None)],
        "vae": vae,
        "gan": lambda: gan("gan"), "dcgan": lambda: gan("dcgan"), "wgan": lambda: gan("wgan"),
    }


def _seq2seq_batch(model, n, src_len, tgt_len, gen):
    """Source ids with right padding (id 0) of several lengths, decoder input ids."""
    src = gen.integers(1, model.src_vocab, (n, src_len))
    for i in range(n):
        src[i, gen.integers(1, src_len + 1):] = 0
    return [src, gen.integers(0, model.tgt_vocab, (n, tgt_len))]


def _expected(model, x):
    """What the exported graph computes: predict; a seq2seq model's teacher-forced forward in
    inference mode; a Word2Vec's vectors of the ids."""
    if hasattr(model, "predict"):
        return model.predict(x)
    if hasattr(model, "encode"):
        return model.forward(x, training=False)
    return model.embeddings[x]


def test_cli_models_cover_every_recipe():
    from fastnn.recipes import RECIPES
    assert set(_cli_models()) == set(RECIPES)


@pytest.mark.parametrize("name", sorted(_cli_models()))
def test_cli_models_export(tmp_path, name):
    """Every network ``fastnn train`` saves exports and gives predict's outputs (float32,
    1e-5) in the reference evaluator and onnxruntime, at another batch size than the example's
    (and, for the seq2seq models, other source and target lengths)."""
    fnn.seed(7)
    gen = np.random.default_rng(3)
    for model, shape, vocab in _cli_models()[name]():
        if shape == "seq2seq":
            example, x = _seq2seq_batch(model, 1, 6, 4, gen), _seq2seq_batch(model, 3, 9, 5, gen)
        else:
            dtype = np.int64 if vocab else np.float32
            example, x = _data((1, *shape), dtype, gen, vocab), _data((2, *shape), dtype, gen, vocab)
        proto = fnn.onnx.export(model, tmp_path / "graph.onnx", example)
        onnx.checker.check_model(proto, full_check=True)
        feed = ({"input_0": x[0], "input_1": x[1]} if isinstance(x, list) else {"input": x})
        expected = _expected(model, x)
        for got in _run_both(tmp_path, proto, feed):
            assert got[0].dtype == expected.dtype and got[0].shape == expected.shape
            np.testing.assert_allclose(got[0], expected, rtol=TOL, atol=TOL)


@pytest.mark.skipif(onnxruntime is None, reason="decodes with onnxruntime")
def test_seq2seq_export_decodes_greedily_as_the_model(tmp_path):
    """The exported graph's sequence axes are dynamic: run once per step on the decoded
    prefix, it decodes as greedy_decode (the causal mask and the source padding in the graph)."""
    from fastnn.models import GRUSeq2Seq, TransformerSeq2Seq

    fnn.seed(9)
    gen = np.random.default_rng(9)
    for model in (GRUSeq2Seq(11, 7, embed_dim=8, hidden_size=16),
                  TransformerSeq2Seq(11, 7, d_model=16, nhead=2, num_encoder_layers=1,
                                     num_decoder_layers=2, dim_feedforward=32, dropout=0.0,
                                     activation="gelu", norm_first=True)):
        src = _seq2seq_batch(model, 5, 8, 1, gen)[0]
        fnn.onnx.export(model, tmp_path / "s2s.onnx", [src[:1], np.zeros((1, 3), np.int64)])
        session = onnxruntime.InferenceSession(str(tmp_path / "s2s.onnx"), providers=["CPUExecutionProvider"])
        seq = np.full((len(src), 1), model.bos, np.int64)
        for _ in range(6):
            logits = session.run(None, {"input_0": src, "input_1": seq})[0]
            seq = np.concatenate([seq, logits[:, -1].argmax(-1)[:, None]], axis=1)
        np.testing.assert_array_equal(seq[:, 1:], model.greedy_decode(src, 6))


def test_word2vec_and_seq2seq_take_token_ids(tmp_path):
    from fastnn.models import GRUSeq2Seq, Word2Vec

    with pytest.raises(TypeError, match="Word2Vec takes integer token ids"):
        fnn.onnx.export(Word2Vec(5, 3), tmp_path / "m.onnx", np.zeros((1, 2), np.float32))
    with pytest.raises(ValueError, match=r"\[src, tgt_in\]"):
        fnn.onnx.export(GRUSeq2Seq(5, 4), tmp_path / "m.onnx", np.ones((1, 3), np.int64))


def _run_both(tmp_path, proto, feed):
    got = [ReferenceEvaluator(proto).run(None, feed)]
    if onnxruntime is not None:
        path = tmp_path / "graph.onnx"
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got.append(session.run(None, feed))
    return got


def test_graph_models_export(tmp_path):
    fnn.seed(11)
    # a ResNet-style block: conv-bn-relu twice, a projection, Add, then a head
    inp = fnn.Input((2, 6, 6))
    a = L.ReLU()(L.BatchNorm2D(4, name="bn1")(L.Conv2D(2, 4, 3, padding=1, name="c1")(inp)))
    a = L.BatchNorm2D(4, name="bn2")(L.Conv2D(4, 4, 3, padding=1, name="c2")(a))
    y = L.ReLU()(L.Add()([a, L.Conv2D(2, 4, 1, name="proj")(inp)]))
    y = L.Dense(4 * 6 * 6, 3)(L.Flatten()(y))
    model = _randomise_graph_batchnorm(fnn.Model(inp, y))
    gen = np.random.default_rng(5)
    x = gen.standard_normal((4, 2, 6, 6)).astype(np.float32)
    proto = fnn.onnx.export(model, tmp_path / "graph.onnx", x[:1])
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["output"]
    for got in _run_both(tmp_path, proto, {"input": x}):
        np.testing.assert_allclose(got[0], model.predict(x), rtol=TOL, atol=TOL)

    # two inputs (ids and features), a shared layer, Multiply, Concatenate, two outputs
    ids, feats = fnn.Input((5,), dtype="int64"), fnn.Input((5, 3))
    shared = L.Dense(3, 3, name="shared")
    e = L.Embedding(7, 3)(ids)
    m = L.Multiply()([shared(e), shared(feats)])
    c = L.Concatenate(axis=2)([m, feats])
    h = L.LSTM(6, 4, return_sequences=False)(c)
    model = fnn.Model([ids, feats], [L.Dense(4, 2)(h), L.Sigmoid()(c)])
    x_ids = gen.integers(0, 7, (3, 5))
    x_feats = gen.standard_normal((3, 5, 3)).astype(np.float32)
    proto = fnn.onnx.export(model, tmp_path / "graph.onnx", [x_ids[:1], x_feats[:1]])
    assert [i.name for i in proto.graph.input] == ["input_0", "input_1"]
    assert [o.name for o in proto.graph.output] == ["output_0", "output_1"]
    expected = model.predict([x_ids, x_feats])
    for got in _run_both(tmp_path, proto, {"input_0": x_ids, "input_1": x_feats}):
        for g_, e_ in zip(got, expected):
            np.testing.assert_allclose(g_, e_, rtol=TOL, atol=TOL)
    with pytest.raises(ValueError, match="2 inputs"):
        fnn.onnx.export(model, tmp_path / "graph.onnx", x_ids[:1])


@pytest.mark.parametrize("build, shape", [
    (lambda: fnn.Sequential(L.Conv2D(4, 6, 3, dilation=2, groups=2, padding="same"), L.ReLU()), (2, 4, 9, 8)),
    (lambda: fnn.Sequential(L.Conv2D(4, 8, 4, groups=4, padding="same")), (2, 4, 7, 7)),
    (lambda: fnn.Sequential(L.Conv2D(3, 3, (3, 1), stride=2, padding=(2, 0), groups=3)), (2, 3, 9, 6)),
    (lambda: fnn.Sequential(L.Conv1D(4, 6, 3, padding=2, dilation=2, groups=2), L.MaxPool1D(2),
                            L.Conv1D(6, 4, 2, padding="same"), L.AvgPool1D(3, stride=2, padding=1)), (2, 4, 11)),
])
def test_grouped_dilated_and_1d_convolutions_export(tmp_path, build, shape):
    fnn.seed(13)
    model = build()
    x = np.random.default_rng(13).standard_normal(shape).astype(np.float32)
    check_export(tmp_path, model, x[:1], x)


@pytest.mark.parametrize("norm_first", [False, True])
def test_attention_and_transformer_layers_export(tmp_path, norm_first):
    """MultiheadAttention, both Transformer layers (the decoder on [tgt, memory] in a graph
    model, cross-attention on [q, k, v]) and the positional encoding, against predict."""
    fnn.seed(12)
    gen = np.random.default_rng(12)
    model = fnn.Sequential(L.PositionalEncoding(8, 20), L.TransformerEncoderLayer(8, 2, 16, norm_first=norm_first),
                           L.TransformerEncoderLayer(8, 2, 16, activation="gelu", norm_first=not norm_first),
                           L.MultiheadAttention(8, 4), L.Dense(8, 3))
    x = gen.standard_normal((4, 6, 8)).astype(np.float32)
    check_export(tmp_path, model, x[:1], x)
    src, tgt = fnn.Input((5, 8)), fnn.Input((4, 8))
    memory = L.TransformerEncoderLayer(8, 2, 16, name="enc")(src)
    y = L.TransformerDecoderLayer(8, 2, 16, name="dec", norm_first=norm_first)([tgt, memory])
    y = L.MultiheadAttention(8, 2, name="cross")([y, memory, memory])
    graph = fnn.Model([src, tgt], L.Dense(8, 3, name="head")(y))
    a, b = gen.standard_normal((3, 5, 8)).astype(np.float32), gen.standard_normal((3, 4, 8)).astype(np.float32)
    proto = fnn.onnx.export(graph, tmp_path / "graph.onnx", [a[:1], b[:1]])
    for got in _run_both(tmp_path, proto, {"input_0": a, "input_1": b}):
        np.testing.assert_allclose(got[0], graph.predict([a, b]), rtol=TOL, atol=TOL)


def _randomise_graph_batchnorm(model):
    gen = np.random.default_rng(0)
    for layer in model.layers:
        if type(layer).__name__.startswith("BatchNorm"):
            layer.running_mean[...] = gen.normal(0, 0.5, layer.num_features)
            layer.running_var[...] = gen.uniform(0.5, 2.0, layer.num_features)
    return model


def test_float64_model_exports_as_double(tmp_path):
    fnn.seed(1)
    model = fnn.Sequential(L.Dense(4, 3), L.ReLU(), L.Dense(3, 2)).astype(np.float64)
    x = np.random.default_rng(0).standard_normal((3, 4))
    proto = check_export(tmp_path, model, x[:1], x, dtype=np.float64, tol=1e-12)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE


def test_integer_ids_of_another_dtype_are_cast(tmp_path):
    fnn.seed(2)
    model = fnn.Sequential(L.Embedding(9, 3), L.GRU(3, 4))
    x = np.random.default_rng(0).integers(0, 9, (3, 5)).astype(np.int32)
    proto = check_export(tmp_path, model, x[:1], x)
    assert "Cast" in [n.op_type for n in proto.graph.node]


def test_gate_order_is_onnx(tmp_path):
    """ONNX's LSTM gates are (i, o, f, c): the exported W's second block is PyTorch's fourth."""
    fnn.seed(4)
    lstm = L.LSTM(2, 3)
    proto = fnn.onnx.export(fnn.Sequential(lstm), tmp_path / "m.onnx", np.zeros((1, 4, 2), np.float32))
    w = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}["0.W_l0"][0]
    np.testing.assert_array_equal(w[3:6], lstm.weight_ih.data[9:12])   # o
    np.testing.assert_array_equal(w[6:9], lstm.weight_ih.data[3:6])    # f
    gru = fnn.Sequential(L.GRU(2, 3))
    proto = fnn.onnx.export(gru, tmp_path / "g.onnx", np.zeros((1, 4, 2), np.float32))
    node = next(n for n in proto.graph.node if n.op_type == "GRU")
    assert {a.name: a.i for a in node.attribute}["linear_before_reset"] == 1


class Doubler(L.Layer):
    def forward(self, x, training=True):
        return 2 * x


def test_unsupported_layer_is_named(tmp_path):
    model = fnn.Sequential(L.Dense(3, 3), Doubler())
    with pytest.raises(NotImplementedError, match=r"layer 1 Doubler\(\) \(class Doubler\)"):
        fnn.onnx.export(model, tmp_path / "m.onnx", np.zeros((1, 3), np.float32))
    assert not (tmp_path / "m.onnx").exists()

    class MyDense(L.Dense):  # a subclass may compute something else: not exported as Dense
        pass
    with pytest.raises(NotImplementedError, match="class MyDense"):
        fnn.onnx.export(fnn.Sequential(MyDense(3, 3)), tmp_path / "m.onnx",
                        np.zeros((1, 3), np.float32))


def test_layers_without_onnx_equivalent_are_named(tmp_path):
    with pytest.raises(NotImplementedError, match=r"AdaptiveAvgPool2D.*unequal sizes"):
        fnn.onnx.export(fnn.Sequential(L.AdaptiveAvgPool2D(3)), tmp_path / "m.onnx",
                        np.zeros((1, 2, 7, 7), np.float32))
    with pytest.raises(NotImplementedError, match=r"LocalResponseNorm.*odd size"):
        fnn.onnx.export(fnn.Sequential(L.LocalResponseNorm(4)), tmp_path / "m.onnx",
                        np.zeros((1, 6, 3, 3), np.float32))
    with pytest.raises(NotImplementedError, match="opset >= 17"):
        fnn.onnx.export(fnn.Sequential(L.LayerNorm(4)), tmp_path / "m.onnx",
                        np.zeros((1, 4), np.float32), opset=16)


def test_bad_arguments(tmp_path):
    model = fnn.Sequential(L.Dense(3, 3))
    with pytest.raises(ValueError, match="opset must be in"):
        fnn.onnx.export(model, tmp_path / "m.onnx", np.zeros((1, 3), np.float32), opset=9)
    with pytest.raises(ValueError, match="example_input"):
        fnn.onnx.export(model, tmp_path / "m.onnx", np.zeros((0, 3), np.float32))
    with pytest.raises(ValueError, match=r"Dense.*expected input"):
        fnn.onnx.export(model, tmp_path / "m.onnx", np.zeros((1, 4), np.float32))
