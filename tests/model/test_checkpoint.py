"""Checkpoints: atomic writes survive SIGKILL mid-save, damaged files give a clear error, a
checkpoint of another architecture names the keys, and ``fit(resume=...)`` continues a run
bit-identically."""
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastnn as fnn
from fastnn import layers as L
from fastnn import model as model_module

from conftest import scaled_examples  # max_examples that follow the hypothesis profile


@pytest.fixture
def one_thread():
    before = fnn.get_num_threads()
    fnn.set_num_threads(1)
    yield
    fnn.set_num_threads(before)


def net(seed=0, hidden=16):
    fnn.seed(seed)
    return fnn.Sequential(L.Dense(6, hidden), L.BatchNorm1D(hidden), L.ReLU(), L.Dropout(0.3),
                          L.Dense(hidden, 3))


def blobs(n=90, seed=0):
    r = np.random.default_rng(seed)
    y = r.integers(0, 3, n)
    X = (r.standard_normal((n, 6)) + 2.0 * y[:, None]).astype(np.float32)
    return X, y


def weights_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(np.array_equal(sa[k], sb[k]) for k in sa)


# --- resume -----------------------------------------------------------------------------------------
def _crash_after(epochs_done):
    from fastnn.callbacks import Callback

    class Crash(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 == epochs_done:
                raise KeyboardInterrupt("simulated crash")
    return Crash()


@pytest.mark.parametrize("optimizer", ["adam", "sgd_momentum"])
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, one_thread, optimizer):
    X, y = blobs()
    Xv, yv = blobs(30, seed=1)
    make_opt = {"adam": lambda m: fnn.optim.Adam(m.parameters(), lr=1e-2),
                "sgd_momentum": lambda m: fnn.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)}[optimizer]
    kwargs = dict(loss="cross_entropy", epochs=5, batch_size=16, verbose=0, metrics=["accuracy"],
                  validation_data=(Xv, yv))

    whole = net()
    history = whole.fit(X, y, optimizer=make_opt(whole), **kwargs)

    path = tmp_path / "run.npz"
    first = net()
    with pytest.raises(KeyboardInterrupt):  # the process "dies" after epoch 3 was checkpointed
        first.fit(X, y, optimizer=make_opt(first), checkpoint=path,
                  callbacks=[_crash_after(3)], **kwargs)
    fnn.seed(12345)  # a new process: another generator state and other initial weights
    second = net(seed=7)
    resumed = second.fit(X, y, optimizer=make_opt(second), checkpoint=path, resume=path, **kwargs)

    assert weights_equal(whole, second)
    assert resumed.epoch == history.epoch == [0, 1, 2, 3, 4]
    assert resumed.history == history.history
    assert fnn.load(path).saved_training_state["epochs_done"] == 5


def test_resume_with_nothing_left_to_do_and_initial_epoch(tmp_path, one_thread):
    X, y = blobs()
    path = tmp_path / "run.npz"
    model = net()
    model.fit(X, y, epochs=2, batch_size=32, verbose=0, checkpoint=path)
    before = model.state_dict()
    h = model.fit(X, y, epochs=2, batch_size=32, verbose=0, resume=path)
    assert h.epoch == [0, 1]
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())
    fresh = net()
    h = fresh.fit(X, y, epochs=3, initial_epoch=1, batch_size=32, verbose=0)
    assert h.epoch == [1, 2]
    with pytest.raises(ValueError, match="initial_epoch"):
        fresh.fit(X, y, epochs=3, initial_epoch=-1, verbose=0)


def test_resume_from_another_architecture_names_the_keys(tmp_path):
    X, y = blobs()
    path = tmp_path / "small.npz"
    net(hidden=16).fit(X, y, epochs=1, verbose=0, checkpoint=path)
    wider = net(hidden=17)
    with pytest.raises(ValueError, match=r"another architecture.*'0\.weight'.*\(16, 6\)"):
        wider.fit(X, y, epochs=2, verbose=0, resume=path)
    other = fnn.Sequential(L.Dense(6, 16), L.ReLU(), L.Dense(16, 3))
    with pytest.raises(ValueError, match=r"missing keys.*'2\.weight'.*unexpected keys.*'1\.running_mean'"):
        other.fit(X, y, epochs=2, verbose=0, resume=path)
    with pytest.raises(KeyError, match=r"1\.running_mean"):  # the same check without fit
        other.load_state_dict(fnn.load(path).state_dict())


def test_resume_needs_a_training_checkpoint(tmp_path):
    X, y = blobs()
    model = net()
    model.save(tmp_path / "plain.npz")
    with pytest.raises(ValueError, match="no training state"):
        model.fit(X, y, epochs=1, verbose=0, resume=tmp_path / "plain.npz")


def test_nan_guard_keeps_the_last_good_checkpoint(tmp_path):
    X, y = blobs()
    path = tmp_path / "run.npz"
    model = net()
    opt = fnn.optim.SGD(model.parameters(), lr=0.01)
    model.fit(X, y, optimizer=opt, epochs=2, verbose=0, checkpoint=path)
    good = model.state_dict()
    X_bad = X.copy()
    X_bad[70, 2] = np.nan  # batch 3 of epoch 1 (no shuffle)
    with pytest.raises(model_module.NonFiniteError, match=r"epoch 1, step 3/3.*input batch"):
        model.fit(X_bad, y, optimizer=opt, epochs=2, batch_size=32, shuffle=False, verbose=0,
                  checkpoint=path)
    saved = fnn.load(path)  # still the checkpoint of the last good epoch
    assert all(np.array_equal(good[k], v) for k, v in saved.state_dict().items())


# --- atomic writes ----------------------------------------------------------------------------------
def test_save_fsyncs_and_cleans_up_its_temporary_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    model = net()
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    model.save(path)
    assert len(synced) >= 1  # the file (and the directory, best effort)
    original = path.read_bytes()

    def half_then_fail(fileobj, arrays):
        fileobj.write(b"PK\x03\x04 partial")
        raise OSError("disk full")
    monkeypatch.setattr(model_module, "_write_npz", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        net(seed=3).save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]  # no temp file left behind
    assert path.read_bytes() == original


def temporaries(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


_SAVER = textwrap.dedent("""
    import sys
    import numpy as np
    import fastnn as fnn
    from fastnn import layers as L
    path = sys.argv[1]
    model = fnn.Sequential(L.Dense(700, 700), L.ReLU(), L.Dense(700, 700))  # ~3.9 MB per file
    version = 0
    def stamp(v):
        for p in model.parameters():
            p.data.fill(v)
    stamp(version); model.save(path)
    print("ready", flush=True)
    while True:
        version += 1
        stamp(version)
        model.save(path)
""")


def test_sigkill_during_save_leaves_the_previous_checkpoint_loadable(tmp_path):
    path = tmp_path / "big.npz"
    seen = set()
    rand = random.Random(8)
    fastnn_root = os.path.dirname(os.path.dirname(os.path.abspath(fnn.__file__)))
    env = dict(os.environ, PYTHONPATH=fastnn_root)  # the fastnn under test, installed or in place
    for attempt in range(6):
        proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(path)], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(rand.uniform(0.01, 0.4))  # somewhere inside one of the saves
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        model = fnn.load(path)  # never a half-written file
        values = np.unique(np.concatenate([p.data.ravel() for p in model.parameters()]))
        assert len(values) == 1  # one complete save, not a mix of two
        seen.add(float(values[0]))
        # a kill inside a save leaves that save's temporary; the next child's first save removed
        # the one of the child before
        assert len(temporaries(tmp_path)) <= 1
    assert len(seen) > 1  # the kills did land at different moments
    fnn.Sequential(L.Dense(3, 2)).save(path)
    assert temporaries(tmp_path) == []


# A save that stops halfway through writing its temporary, with the previous checkpoint (value 0)
# in place: it prints "mid-save", then waits for a line on stdin before it writes the rest.
_STALLED_SAVER = textwrap.dedent("""
    import io, sys
    import numpy as np
    import fastnn as fnn
    from fastnn import layers as L
    from fastnn import model as model_module
    path, value = sys.argv[1], float(sys.argv[2])
    model = fnn.Sequential(L.Dense(50, 40))
    for p in model.parameters():
        p.data.fill(0)
    model.save(path)
    real_write = model_module._write_npz
    def stalled(fileobj, arrays):
        whole = io.BytesIO()
        real_write(whole, arrays)
        data = whole.getvalue()
        fileobj.write(data[:len(data) // 2])
        fileobj.flush()
        print("mid-save", flush=True)
        sys.stdin.readline()
        fileobj.write(data[len(data) // 2:])
    model_module._write_npz = stalled
    for p in model.parameters():
        p.data.fill(value)
    model.save(path)
    print("saved", flush=True)
""")


def start_stalled_save(path, value):
    fastnn_root = os.path.dirname(os.path.dirname(os.path.abspath(fnn.__file__)))
    proc = subprocess.Popen([sys.executable, "-c", _STALLED_SAVER, str(path), str(value)],
                            cwd=path.parent, env=dict(os.environ, PYTHONPATH=fastnn_root),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "mid-save"
    return proc


def saved_value(path):
    values = np.unique(np.concatenate([p.data.ravel() for p in fnn.load(path).parameters()]))
    assert len(values) == 1
    return float(values[0])


def test_the_next_save_removes_the_temporary_of_a_save_killed_midway(tmp_path):
    path = tmp_path / "m.npz"
    proc = start_stalled_save(path, 1.0)
    try:
        stale = temporaries(tmp_path)
        assert len(stale) == 1 and stale[0].startswith(".m.npz.")  # half of the new checkpoint
    finally:
        proc.kill()  # SIGKILL, mid-write
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert temporaries(tmp_path) == stale  # nothing removes it on the spot
    assert saved_value(path) == 0.0  # the previous checkpoint, intact
    model = fnn.Sequential(L.Dense(50, 40))
    for p in model.parameters():
        p.data.fill(2.0)
    model.save(path)
    assert temporaries(tmp_path) == []
    assert saved_value(path) == 2.0


def test_a_save_leaves_the_temporary_of_a_live_save_in_another_process_alone(tmp_path):
    path = tmp_path / "m.npz"
    proc = start_stalled_save(path, 1.0)
    try:
        live = temporaries(tmp_path)
        model = fnn.Sequential(L.Dense(50, 40))
        for p in model.parameters():
            p.data.fill(2.0)
        model.save(path)  # meanwhile: must not take the other writer's temporary for stale
        assert temporaries(tmp_path) == live and saved_value(path) == 2.0
        out, _ = proc.communicate("go on\n", timeout=60)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == 0 and out.strip() == "saved"  # its rename found its file
    assert temporaries(tmp_path) == [] and saved_value(path) == 1.0  # the last save wins


def test_a_save_leaves_the_temporary_of_a_live_save_in_another_thread_alone(tmp_path, monkeypatch):
    # the writers share a process id here: what marks a temporary as in use is its writer's
    # lock on the open file, not the pid
    import threading

    path = tmp_path / "m.npz"
    real_write = model_module._write_npz
    halfway, resume = threading.Event(), threading.Event()

    def stalled(fileobj, arrays):
        fileobj.write(b"PK\x03\x04 part of it")
        halfway.set()
        resume.wait(60)
        fileobj.seek(0)
        fileobj.truncate()
        real_write(fileobj, arrays)

    first = fnn.Sequential(L.Dense(4, 3))
    monkeypatch.setattr(model_module, "_write_npz", stalled)
    errors = []
    thread = threading.Thread(target=_record, args=(errors, first.save, path))
    thread.start()
    try:
        assert halfway.wait(60)
        live = temporaries(tmp_path)
        assert len(live) == 1
        monkeypatch.setattr(model_module, "_write_npz", real_write)
        second = fnn.Sequential(L.Dense(4, 3))
        second.save(path)
        assert temporaries(tmp_path) == live
    finally:
        resume.set()
        thread.join(60)
    assert errors == [] and temporaries(tmp_path) == []
    loaded = fnn.load(path).state_dict()
    assert all(np.array_equal(v, first.state_dict()[k]) for k, v in loaded.items())


def _record(errors, fn, *args):
    try:
        fn(*args)
    except BaseException as e:  # noqa: BLE001 - reported by the test
        errors.append(e)


def test_stale_temporary_clean_up_touches_only_this_paths_temporaries(tmp_path):
    names = [".m.npz.abcd_123.tmp",          # a dead save's temporary of m.npz: removed
             ".m.npz.x.npz.abcd_123.tmp",    # of the file "m.npz.x.npz"
             ".other.npz.abcd_123.tmp",      # of "other.npz"
             ".m.npz.ABCD_123.tmp",          # not a name tempfile makes
             ".m.npz.abcd_1234.tmp", "m.npz.abcd_123.tmp", ".m.npz.abcd_123.tmp.bak"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    fnn.Sequential(L.Dense(2, 2)).save(tmp_path / "m.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[1:] + ["m.npz"])


# --- damaged files ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("ck") / "m.npz"
    model = net()
    model.fit(*blobs(), epochs=1, verbose=0, checkpoint=path)
    return path.read_bytes(), model.state_dict()


@settings(max_examples=scaled_examples(60))
@given(data=st.data())
def test_truncated_or_bit_flipped_checkpoint_loads_exactly_or_fails_clearly(tmp_path_factory, checkpoint_bytes, data):
    raw, state = checkpoint_bytes
    damaged = bytearray(raw)
    if data.draw(st.booleans(), label="truncate"):
        damaged = damaged[:data.draw(st.integers(0, len(raw) - 1), label="length")]
    else:
        for _ in range(data.draw(st.integers(1, 4), label="flips")):
            at = data.draw(st.integers(0, len(raw) - 1), label="offset")
            damaged[at] ^= data.draw(st.integers(1, 255), label="mask")
    path = tmp_path_factory.mktemp("damaged") / "d.npz"
    path.write_bytes(bytes(damaged))
    try:
        model = fnn.load(path)
    except ValueError as e:
        assert "d.npz" in str(e)
        return
    # the damage hit bytes nothing depends on (zip timestamps, padding): the model is exact
    loaded = model.state_dict()
    assert list(loaded) == list(state)
    assert all(np.array_equal(loaded[k], state[k]) for k in state)


def test_empty_and_directory_paths(tmp_path):
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.npz"):
        fnn.load(tmp_path / "empty.npz")
    with pytest.raises(FileNotFoundError):
        fnn.load(tmp_path / "missing.npz")
    with pytest.raises(IsADirectoryError):
        fnn.load(tmp_path)
