"""CSVLogger, TensorBoard and ReduceLROnPlateau (fastnn/callbacks.py) inside fit."""
import csv
import glob
import struct

import numpy as np
import pytest

import fastnn as fnn
from fastnn import layers as L
from fastnn.callbacks import CSVLogger, ReduceLROnPlateau, TensorBoard


def _problem(seed=0):
    fnn.seed(seed)
    gen = np.random.default_rng(seed)
    X = gen.standard_normal((48, 5)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    model = fnn.Sequential(L.Dense(5, 8), L.ReLU(), L.Dense(8, 2))
    return model, X, y


def _fit(model, X, y, callbacks, epochs=4, lr=1e-2):
    return model.fit(X, y, optimizer=fnn.optim.SGD(model.parameters(), lr=lr), epochs=epochs,
                     batch_size=16, validation_data=(X[:16], y[:16]), metrics=["accuracy"],
                     verbose=0, callbacks=callbacks)


def test_csv_logger_writes_the_history(tmp_path):
    model, X, y = _problem()
    path = tmp_path / "log.csv"
    history = _fit(model, X, y, [CSVLogger(path)])
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    keys = list(history.history)
    assert rows[0] == ["epoch", *keys] and len(rows) == 5
    for epoch, row in enumerate(rows[1:]):
        assert int(row[0]) == epoch
        for key, cell in zip(keys, row[1:]):
            assert float(cell) == history.history[key][epoch]   # repr of a float round-trips
    # append: one header, the new epochs after the old ones; without append: overwritten
    _fit(model, X, y, [CSVLogger(path, append=True)], epochs=2)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 7 and rows.count(rows[0]) == 1 and [r[0] for r in rows[5:]] == ["0", "1"]
    _fit(model, X, y, [CSVLogger(path, separator=";")], epochs=1)
    assert open(path).read().splitlines()[0] == ";".join(["epoch", *keys])


def _tfrecords(path):
    """The records of a TFRecord file (length, crc, data, crc), as TensorBoard writes them."""
    data = open(path, "rb").read()
    pos = 0
    while pos < len(data):
        (n,) = struct.unpack("<Q", data[pos:pos + 8])
        yield data[pos + 12:pos + 12 + n]
        pos += 12 + n + 4


def test_tensorboard_writes_scalars(tmp_path):
    pytest.importorskip("tensorboardX")
    from tensorboardX.proto import event_pb2

    model, X, y = _problem(1)
    history = _fit(model, X, y, [TensorBoard(tmp_path / "runs")], epochs=3)
    files = glob.glob(str(tmp_path / "runs" / "events.out.tfevents.*"))
    assert len(files) == 1
    scalars = {}
    for record in _tfrecords(files[0]):
        event = event_pb2.Event.FromString(record)
        for value in event.summary.value:
            scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    assert set(scalars) == set(history.history)
    for key, values in history.history.items():
        assert [s for s, _ in scalars[key]] == [0, 1, 2]
        np.testing.assert_allclose([v for _, v in scalars[key]], values, rtol=1e-6)


def _torch_lrs(metrics, lr, **kwargs):
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **kwargs)
    lrs = []
    for m in metrics:
        sched.step(m)
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


class _Opt:
    def __init__(self, lr):
        self.lr = lr


@pytest.mark.parametrize("kwargs", [
    dict(mode="min", factor=0.5, patience=2),
    dict(mode="min", factor=0.1, patience=0, cooldown=2, min_lr=1e-4),
    dict(mode="max", factor=0.5, patience=1, threshold=0.1, threshold_mode="abs"),
    dict(mode="max", factor=0.3, patience=1, threshold=0.05, cooldown=1),
    dict(mode="min", factor=0.5, patience=1, threshold=0.2, threshold_mode="abs", min_lr=0.01),
])
def test_reduce_lr_on_plateau_follows_torch(kwargs):
    gen = np.random.default_rng(0)
    # improving, then a noisy plateau, then improving again
    metrics = list(np.concatenate([np.linspace(1.0, 0.5, 5), 0.5 + 0.05 * gen.standard_normal(12),
                                   np.linspace(0.45, 0.1, 5)]))
    expected = _torch_lrs(metrics, 0.1, **kwargs)
    sched, opt = ReduceLROnPlateau(monitor="m", **kwargs), _Opt(0.1)
    got = []
    for m in metrics:
        sched.step(m, opt)
        got.append(opt.lr)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert len(set(expected)) > 1   # the case does reduce


def test_reduce_lr_on_plateau_in_fit():
    model, X, y = _problem(2)
    # in mode "max" a falling loss never improves: after the first epoch every epoch is bad
    cb = ReduceLROnPlateau(monitor="loss", mode="max", factor=0.5, patience=0)
    history = _fit(model, X, y, [cb], epochs=4, lr=0.1)
    np.testing.assert_allclose(history.history["lr"], [0.1, 0.1, 0.05, 0.025])
    with pytest.raises(ValueError, match="val_acc"):
        _fit(model, X, y, [ReduceLROnPlateau(monitor="val_acc")], epochs=1)
    with pytest.raises(ValueError, match="factor must be < 1.0"):
        ReduceLROnPlateau(factor=1.0)
