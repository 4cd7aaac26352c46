"""``fastnn train rnn|lstm|word2vec``: the sequence recipes train, report and save."""
import numpy as np

import fastnn as fnn
from fastnn.cli import main


def test_train_word2vec_recovers_the_word_groups(tmp_path, capsys):
    out = tmp_path / "w2v.npz"
    assert main(["train", "word2vec", "--quiet", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "neighbours in the word's own group" in text
    purity = float(text.split("own group: ")[1].split("%")[0]) / 100
    assert purity >= 0.8
    saved = np.load(out)
    assert saved["embeddings"].shape == (len(saved["vocab"]), 16)


def test_train_lstm_lowers_the_loss_and_saves_a_loadable_checkpoint(tmp_path, capsys):
    from fastnn.recipes.sequence import train

    out = tmp_path / "lstm.npz"
    metrics = train("lstm", epochs=3, out=str(out), verbose=0)
    assert metrics["final_loss"] < metrics["first_epoch_loss"] < metrics["uniform_loss"]
    model = fnn.load(out)
    x = np.arange(10, dtype=np.int64)[None, :] % 30
    assert model.predict(x).shape == (1, 10, model.parameters()[-1].data.shape[0])


def test_train_rejects_unknown_model(capsys):
    import pytest

    with pytest.raises(SystemExit) as exc:
        main(["train", "gpt"])
    assert exc.value.code == 2
