"""Character-level language model: Embedding -> LSTM -> Dense over characters, trained on a few
paragraphs embedded below; prints the loss falling and samples text from the trained model.

Sampling feeds one character at a time and carries the LSTM's state forward with
``forward(x, h0=..., c0=...)`` and ``lstm.c_n``.

    python examples/char_lm.py
"""
import time

import numpy as np

import fastnn as fnn
from fastnn import layers as L
from fastnn.losses import CrossEntropy

TEXT = """\
A recurrent network reads a sequence one step at a time. At every step it mixes the new input
with a hidden state that summarises everything it has read so far, and from that state it
predicts what comes next. Trained on text, it learns which letters follow which, then which
words follow which, and finally something of the rhythm of the sentences themselves.

The plain recurrent network forgets quickly: its gradient shrinks a little at every step it
travels back in time, so words seen long ago barely move the weights. The long short-term
memory network adds a cell that carries information forward untouched unless a gate decides to
change it. The forget gate keeps or erases, the input gate writes, the output gate reads. With
these gates the network can remember the first word of a long sentence until the very end.

To train the network we cut the text into short windows, show it each window, and ask it to
predict every next character. The loss is the cross-entropy of those predictions, summed over
the time steps. Backpropagation through time carries the error from the last step back to the
first, and the optimizer nudges every weight a little. After a few hundred steps the network
spells common words; after a few thousand it writes sentences that almost make sense.
"""


def batches(ids, seq_len, batch_size, rng):
    starts = rng.integers(0, len(ids) - seq_len - 1, batch_size)
    x = np.stack([ids[s:s + seq_len] for s in starts])
    y = np.stack([ids[s + 1:s + seq_len + 1] for s in starts])
    return x, y


def sample(embedding, lstm, dense, chars, prefix, length, rng, temperature=0.6):
    index = {c: i for i, c in enumerate(chars)}
    h = np.zeros((1, lstm.hidden_size), np.float32)
    c = np.zeros_like(h)
    out = list(prefix)
    x = np.array([[index[ch] for ch in prefix]])
    for _ in range(length):
        hs = lstm.forward(embedding.forward(x, training=False), training=False, h0=h, c0=c)
        h, c = hs[:, -1], lstm.c_n
        logits = dense.forward(h, training=False)[0] / temperature
        p = np.exp(logits - logits.max())
        nxt = rng.choice(len(chars), p=p / p.sum())
        out.append(chars[nxt])
        x = np.array([[nxt]])
    return "".join(out)


def main(steps=400, seq_len=32, batch_size=32, seed=0):
    fnn.seed(seed)
    rng = np.random.default_rng(seed)
    chars = sorted(set(TEXT))
    ids = np.array([chars.index(ch) for ch in TEXT], np.int64)
    embedding, lstm, dense = L.Embedding(len(chars), 32), L.LSTM(32, 128), L.Dense(128, len(chars))
    model = fnn.Sequential(embedding, lstm, dense)
    opt = fnn.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = CrossEntropy()
    print(f"{len(TEXT)} characters, vocabulary {len(chars)}; uniform guessing: "
          f"loss {np.log(len(chars)):.2f} per character")
    t0 = time.perf_counter()
    losses = []
    for step in range(1, steps + 1):
        x, y = batches(ids, seq_len, batch_size, rng)
        loss = loss_fn.forward(model.forward(x), y)  # mean per character
        model.zero_grad()
        model.backward(loss_fn.backward())
        fnn.optim.clip_grad_norm(model.parameters(), 5.0)
        opt.step()
        losses.append(loss)
        if step % 100 == 0 or step == 1:
            print(f"step {step:4d}: loss {np.mean(losses[-50:]):.3f} per character "
                  f"({seq_len * loss:.1f} summed over the {seq_len} steps)")
    seconds = time.perf_counter() - t0
    print(f"trained {steps} steps of {batch_size}x{seq_len} characters in {seconds:.1f} s "
          f"({steps * batch_size * seq_len / seconds:,.0f} characters/s)")
    print("sample:", repr(sample(embedding, lstm, dense, chars, "The ", 160, rng)))
    return losses[0], float(np.mean(losses[-50:]))


if __name__ == "__main__":
    main()
