"""Sequence-to-sequence models (fastnn.models.GRUSeq2Seq, TransformerSeq2Seq): gradients in
float64, state names and checkpoints, the generated tasks, greedy decoding, and short training
runs of the recipes behind ``fastnn train seq2seq|transformer`` and their examples."""
import datetime
import importlib.util

import numpy as np
import pytest

import fastnn as fnn
from fastnn.cli import main
from fastnn.datasets import DATE_TARGET_CHARS, date_source_vocab, date_translation, reversal_pairs
from fastnn.models import GRUSeq2Seq, TransformerSeq2Seq

from example_modules import load_example

MONTHS = "january february march april may june july august september october november december".split()


@pytest.fixture(autouse=True)
def one_thread():
    # batches of a few short sequences: threads cost more than they share (as the examples run)
    previous = fnn.get_num_threads()
    fnn.set_num_threads(1)
    yield
    fnn.set_num_threads(previous)


def _padded_batch(r, n, s, vocab):
    src = r.integers(1, vocab, (n, s))
    for i, length in enumerate(r.integers(1, s + 1, n)):
        src[i, length:] = 0  # right padding of different lengths
    src[0, :] = r.integers(1, vocab, s)  # one full row
    return src


# --- gradients ---------------------------------------------------------------------------------
def test_gru_seq2seq_gradients_match_central_differences():
    fnn.seed(0)
    r = np.random.default_rng(0)
    model = GRUSeq2Seq(7, 5, embed_dim=4, hidden_size=6).astype(np.float64)
    src, tgt = _padded_batch(r, 3, 5, 7), r.integers(0, 4, (3, 4))
    result = fnn.assert_gradcheck(model, [src, model.decoder_input(tgt)], max_entries=40)
    checked = {t.name for t in result.tensors if not t.skipped}
    assert {"encoder.weight_hh_l0", "src_embed.weight", "attention.in_proj_weight", "out.bias"} <= checked


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_seq2seq_gradients_match_central_differences(norm_first):
    fnn.seed(1)
    r = np.random.default_rng(1)
    model = TransformerSeq2Seq(6, 5, d_model=8, nhead=2, num_encoder_layers=1, num_decoder_layers=2,
                               dim_feedforward=12, dropout=0.1, norm_first=norm_first,
                               max_len=16).astype(np.float64)
    src, tgt = _padded_batch(r, 2, 4, 6), r.integers(0, 4, (2, 3))
    result = fnn.assert_gradcheck(model, [src, model.decoder_input(tgt)], max_entries=30)
    checked = {t.name for t in result.tensors if not t.skipped}
    assert {"src_embed.weight", "encoder.layers.0.self_attn.in_proj_weight", "encoder.norm.weight",
            "decoder.layers.1.multihead_attn.in_proj_weight", "tgt_embed.weight"} <= checked


def test_padding_and_the_causal_mask_hide_what_they_should():
    fnn.seed(2)
    r = np.random.default_rng(2)
    for model in (GRUSeq2Seq(9, 6, 8, 8), TransformerSeq2Seq(9, 6, 16, 2, 1, 1, 32, dropout=0.0)):
        src = r.integers(1, 9, (2, 4))
        tgt_in = r.integers(0, 6, (2, 5))
        base = model.forward([src, tgt_in], training=False)
        # right padding changes nothing: the same logits as the unpadded source
        padded = np.concatenate([src, np.zeros((2, 3), np.int64)], axis=1)
        np.testing.assert_allclose(model.forward([padded, tgt_in], training=False), base,
                                   rtol=1e-5, atol=1e-6)
        # a real token there instead does
        longer = padded.copy()
        longer[:, 4] = 5
        assert not np.allclose(model.forward([longer, tgt_in], training=False), base, atol=1e-4)
        # a later target token does not change the earlier steps' logits (causal decoding)
        changed = tgt_in.copy()
        changed[:, 3:] = (changed[:, 3:] + 1) % 6
        later = model.forward([src, changed], training=False)
        np.testing.assert_allclose(later[:, :3], base[:, :3], rtol=1e-5, atol=1e-6)
        assert not np.allclose(later[:, 3:], base[:, 3:], atol=1e-4)


# --- state and checkpoints ---------------------------------------------------------------------
def test_transformer_state_names_are_torch_nn_transformers():
    torch = pytest.importorskip("torch")
    model = TransformerSeq2Seq(11, 11, d_model=16, nhead=4, dim_feedforward=32)
    twin = torch.nn.Transformer(16, 4, 2, 2, 32, batch_first=True)
    ours = {k: v.shape for k, v in model.state_dict().items()
            if k.startswith(("encoder.", "decoder."))}
    assert ours == {k: tuple(v.shape) for k, v in twin.state_dict().items()}


def test_save_and_load_give_the_same_decoding(tmp_path):
    fnn.seed(3)
    r = np.random.default_rng(3)
    src = _padded_batch(r, 4, 5, 9)
    for model in (GRUSeq2Seq(9, 7, 8, 8, bos=6), TransformerSeq2Seq(9, 7, 16, 2, 1, 1, 32, bos=0)):
        path = tmp_path / f"{type(model).__name__}.npz"
        model.save(path)
        back = type(model).load(path)
        assert type(back) is type(model) and back.config() == model.config()
        np.testing.assert_array_equal(back.greedy_decode(src, 6), model.greedy_decode(src, 6))
        for key, value in model.state_dict().items():
            np.testing.assert_array_equal(back.state_dict()[key], value)


def test_errors_name_the_model_and_the_problem():
    model = GRUSeq2Seq(5, 4, 4, 4)
    with pytest.raises(ValueError, match=r"GRUSeq2Seq.*src ids must be in \[0, 5\)"):
        model.forward([np.array([[1, 7]]), np.array([[0]])])
    with pytest.raises(ValueError, match=r"src must be integer ids \(N, T\)"):
        model.greedy_decode(np.zeros((2, 3), np.float32), 4)
    with pytest.raises(ValueError, match="bos must be a target id"):
        TransformerSeq2Seq(5, 4, 8, 2, bos=4)
    with pytest.raises(RuntimeError, match="decode called before encode"):
        TransformerSeq2Seq(5, 4, 8, 2).decode(np.zeros((1, 2), np.int64))


# --- the generated tasks -----------------------------------------------------------------------
def test_date_translation_pairs_are_right_and_test_dates_are_unseen():
    vocab, (src, tgt), (src_t, tgt_t) = date_translation(3000, 500, seed=4)
    assert vocab == date_source_vocab() and vocab[0] == "<pad>"
    iso = ["".join(DATE_TARGET_CHARS[i] for i in row) for row in np.concatenate([tgt, tgt_t])]
    dates = [datetime.date.fromisoformat(s) for s in iso]  # every target is a real ISO date
    assert len(set(iso)) == len(iso)  # each date once: no test date in training
    assert min(dates).year >= 1900 and max(dates).year <= 2099
    for row, d in zip(np.concatenate([src, src_t]), dates):
        words = [vocab[i] for i in row if i]
        assert (row[len(words):] == 0).all()  # right-padded
        digits = "".join(w for w in words if w.isdigit())
        if len(digits) >= 5:  # written with digits: day then year
            assert digits == f"{d.day}{d.year}"
        assert any(w.startswith(MONTHS[d.month - 1][:3]) for w in words)
    layouts = {("the" in w, "," in w, any(x.isdigit() for x in w))
               for w in ([vocab[i] for i in row if i] for row in src)}
    assert len(layouts) >= 4


def test_reversal_pairs_reverse_and_exclude():
    src, tgt = reversal_pairs(500, 6, 4, seed=5)
    np.testing.assert_array_equal(tgt, src[:, ::-1])
    assert src.min() >= 1 and src.max() <= 4
    test, _ = reversal_pairs(300, 6, 4, seed=6, exclude=src)
    assert not {r.tobytes() for r in test} & {r.tobytes() for r in src}


# --- the recipes and examples, short -----------------------------------------------------------
def test_train_seq2seq_translates_dates_after_one_epoch_and_saves(tmp_path, capsys):
    # the full recipe (4 epochs) reaches 99.8% on the 2000 held-out dates; one epoch ~96%
    out = tmp_path / "s2s.npz"
    assert main(["train", "seq2seq", "--epochs", "1", "--quiet", "--threads", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    accuracy = float(text.split("held-out pairs ")[1].split("%")[0]) / 100
    assert accuracy >= 0.9, text
    if all(importlib.util.find_spec(m) for m in ("matplotlib", "PIL")):
        assert (tmp_path / "s2s-curves.png").stat().st_size > 0  # the loss curve beside it
    model = GRUSeq2Seq.load(out)
    vocab, _, (src, tgt) = date_translation(20000, 2000, seed=0)
    assert model.sequence_accuracy(src[:200], tgt[:200]) >= 0.85
    assert [DATE_TARGET_CHARS[i] for i in model.greedy_decode(src[:1], 10)[0]][4] == "-"


def test_transformer_reversal_example_learns_in_two_epochs(capsys):
    # the full run (5 epochs) reverses 100% of the held-out sequences; two epochs reach ~60%
    m = load_example("transformer_reversal").main(epochs=2, n_test=500, verbose=0)
    text = capsys.readouterr().out
    assert m["final_loss"] < 0.5 * m["first_epoch_loss"]
    assert m["test_sequence_accuracy"] >= 0.3
    assert f"{m['test_sequence_accuracy']:.2%}" in text and "MISSED" in text

