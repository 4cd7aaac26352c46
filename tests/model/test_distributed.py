"""fastnn.distributed: data-parallel training on MPI.

The multi-process checks launch ``mpiexec -n 2 python -m mpi4py tests/mpi_checks.py`` once (each
rank trains data-parallel and also the single-process reference with the doubled batch, and
writes what it measured), plus one launch where a rank fails and one of ``fastnn train``; they
need the ``mpi`` extra (mpi4py and the MPICH wheel's ``mpiexec``). The single-rank behaviour (a
script run without any launcher) is checked in this process. As root, two ranks also run on two
"hosts": network namespaces joined by a veth pair, each with its own hostname.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastnn as fnn
from fastnn import distributed as dist
from fastnn import layers as L

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKS = os.path.join(os.path.dirname(HERE), "mpi_checks.py")
LAUNCH_TIMEOUT = 300  # seconds: a hang fails the test instead of stalling the suite


def mpiexec():
    pytest.importorskip("mpi4py")
    found = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    found = found if os.path.exists(found) else shutil.which("mpiexec")
    if found is None:
        pytest.skip("mpiexec not found (pip install \".[mpi]\")")
    return found


def subprocess_env():
    """The subprocesses import the fastnn this test imported (an in-place build or installed)
    and pick their own thread counts."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(fnn.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    env.pop("FASTNN_NUM_THREADS", None)
    return env


def launch(*args, timeout=LAUNCH_TIMEOUT, cwd=None):
    return subprocess.run([mpiexec(), "-n", "2", *args], capture_output=True, text=True,
                          timeout=timeout, env=subprocess_env(), cwd=cwd)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """What each of the two ranks of one launch of mpi_checks.py measured."""
    mpiexec()
    outdir = tmp_path_factory.mktemp("mpi")
    result = launch(sys.executable, "-m", "mpi4py", CHECKS, "checks", str(outdir))
    assert result.returncode == 0, result.stdout + result.stderr
    return [json.loads((outdir / f"rank{r}.json").read_text()) for r in range(2)]


# --- two ranks against one process with the doubled batch ------------------------------------------
def test_float64_mlp_equals_one_process_with_the_doubled_batch(ranks):
    # 203 rows, 16 per rank: the last global batch has 11 rows, split 6 + 5
    for r in ranks:
        got = r["mlp64"]
        assert got["same_on_ranks"]  # bitwise
        assert got["diff"] <= 1e-12
        assert got["steps"] == 21  # 7 steps per epoch on both ranks
        for key, values in got["history_single"].items():
            np.testing.assert_allclose(got["history"][key], values, rtol=1e-12, atol=1e-12)
        assert got["evaluate"]["loss"] == pytest.approx(got["evaluate_single"]["loss"], rel=1e-12)
        assert got["evaluate"]["accuracy"] == got["evaluate_single"]["accuracy"]
        assert got["predict_diff"] <= 1e-12


def test_graph_model_with_a_shared_layer_equals_one_process(ranks):
    for r in ranks:
        got = r["graph64"]
        assert got["same_on_ranks"]
        assert got["diff"] <= 1e-12
        # the reports of layers in backward let the buckets start before backward ends
        assert got["buckets"] >= 2 and got["early"] == got["buckets"]


def test_each_rank_takes_its_part_of_the_cores(ranks):
    # two ranks on this host: each gets half the cores it may run on (at least one)
    cores = min(os.cpu_count(), len(os.sched_getaffinity(0)) * 2)
    for r in ranks:
        assert r["threads"] == max(1, cores // 2)


def test_a_loop_of_ones_own_with_forward_and_backward(ranks):
    for r in ranks:
        assert r["manual"]["same_on_ranks"]
        assert r["manual"]["diff"] <= 1e-12


def test_float32_convnet_equals_one_process_with_the_doubled_batch(ranks):
    for r in ranks:
        assert r["cnn32"]["same_on_ranks"]
        assert r["cnn32"]["diff"] <= 1e-5


def test_sync_batchnorm_equals_one_process_even_with_an_empty_share(ranks):
    # 41 rows, 4 per rank: the last global batch is one row, rank 1's share empty
    for r in ranks:
        assert r["sync_bn"]["same_on_ranks"]
        assert r["sync_bn"]["diff"] <= 1e-12
        assert r["sync_bn"]["steps"] == 12
        # a graph model calling one batch norm twice
        assert r["sync_bn_graph"]["same_on_ranks"]
        assert r["sync_bn_graph"]["diff"] <= 1e-12


def test_save_on_rank_0_and_resume_continue_the_run(ranks):
    for r in ranks:
        got = r["resume"]
        assert got["same_on_ranks"]
        assert got["diff"] == 0.0  # resumed at epoch 2 of 4 == never interrupted
        assert got["history"] == got["history_whole"]
        # per-rank batch norm: running statistics differ until saving averages them
        assert got["running_differ_before_save"]
        assert got["running_is_mean"] <= 1e-15
        assert got["state_same_after_save"]
        assert got["saved_equals_model"] == 0.0
        assert got["files"] == ["ckpt.npz", "final.npz"]  # no temporaries left


def test_dropout_streams_differ_per_rank_and_repeat_from_the_seed(ranks):
    for r in ranks:
        assert r["dropout"] == {"masks_differ": True, "reproducible": True,
                                "same_on_ranks": True}


def test_another_architecture_on_one_rank_is_an_error_on_every_rank(ranks):
    for r in ranks:
        message = r["mismatch"]
        assert message is not None
        assert "rank(s) [1] differ from rank 0" in message
        assert "0.weight (48, 10)" in message and "(47, 10)" in message


def test_data_of_another_length_on_one_rank_is_an_error_on_every_rank(ranks):
    for r in ranks:
        assert r["uneven"] == ("DataParallel.fit: every rank must pass the same rows (each "
                               "holds the whole data set and takes its share), got rank 0: 200, "
                               "rank 1: 201")


def test_collectives(ranks):
    for rank, r in enumerate(ranks):
        assert r["collectives"] == {"sum": [3.0] * 3, "mean": [1.5] * 3,
                                    "broadcast": [10.0, 11.0, 12.0, 13.0], "rank": rank,
                                    "size": 2, "initialized": True}


@pytest.mark.parametrize("how", ["raise", "kill"])
def test_a_failing_rank_ends_every_rank_and_leaves_the_checkpoint(tmp_path, how):
    # the timeout guards against a hang: rank 0 would wait for rank 1 forever
    result = launch(sys.executable, "-m", "mpi4py", CHECKS, how, str(tmp_path), timeout=120)
    assert result.returncode != 0
    if how == "raise":
        assert "rank 1 fails on purpose" in result.stderr
    assert not list(tmp_path.glob("finished*"))  # rank 0 did not run on to its 50th epoch
    saved = fnn.load(tmp_path / "ckpt.npz")  # intact: the last completed save
    assert saved.saved_training_state["epochs_done"] in (1, 2)
    # rank 0 ended mid-save (MPI aborts it when rank 1 dies) can leave its temporary behind, as
    # any process killed while writing; the next save to the path removes it (docs/robustness.md)
    saved.save(tmp_path / "ckpt.npz")
    assert not list(tmp_path.glob(".*.tmp"))


def _ip(*args):
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture
def two_hosts():
    """Two network namespaces joined by a veth pair: (name, address) of each "host"."""
    mpiexec()
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("unshare") is None:
        pytest.skip("network namespaces need root, ip and unshare")
    tag = f"fnn{os.getpid() % 100000}"
    names = [f"{tag}a", f"{tag}b"]
    if _ip("netns", "add", names[0]).returncode != 0:
        pytest.skip("cannot create a network namespace here")
    try:
        _ip("netns", "add", names[1])
        ends = [f"{tag}va", f"{tag}vb"]
        steps = [("link", "add", ends[0], "type", "veth", "peer", "name", ends[1])]
        for ns, end, addr in zip(names, ends, ("10.199.0.1", "10.199.0.2")):
            steps += [("link", "set", end, "netns", ns),
                      ("-n", ns, "addr", "add", f"{addr}/24", "dev", end),
                      ("-n", ns, "link", "set", end, "up"), ("-n", ns, "link", "set", "lo", "up")]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                pytest.skip(f"cannot set up the namespaces: ip {' '.join(step)}: {done.stderr}")
        if _ip("netns", "exec", names[1], "unshare", "--uts", "true").returncode != 0:
            pytest.skip("cannot give a namespace its own hostname (unshare --uts)")
        yield list(zip(names, ("10.199.0.1", "10.199.0.2")))
    finally:
        for ns in names:
            _ip("netns", "del", ns)


def test_ranks_on_two_hosts_train_as_one_process(two_hosts, tmp_path):
    # MPICH's manual launcher prints the command of each host's proxy; each runs in its own
    # network (and hostname) namespace, so the ranks talk over the veth pair as over a network
    (ns_a, addr_a), (ns_b, addr_b) = two_hosts
    env = subprocess_env()
    launcher = subprocess.Popen(
        ["ip", "netns", "exec", ns_a, mpiexec(), "-launcher", "manual", "-hosts",
         f"{addr_a},{addr_b}", "-n", "2", "-ppn", "1", sys.executable, "-m", "mpi4py", CHECKS,
         "hosts", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=env)
    proxies, output, logs = [], [], []
    try:
        for line in launcher.stdout:
            output.append(line)
            if line.startswith("HYDRA_LAUNCH_END"):
                break
            if line.startswith("HYDRA_LAUNCH:"):
                ns, host = (ns_a, "hosta") if not proxies else (ns_b, "hostb")
                command = line.split(":", 1)[1].split()
                proxies.append(subprocess.Popen(
                    ["ip", "netns", "exec", ns, "unshare", "--uts", "sh", "-c",
                     f'hostname {host} && exec "$@"', "sh", *command], env=env,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        rest, _ = launcher.communicate(timeout=LAUNCH_TIMEOUT)
        output.append(rest)
        logs = [p.communicate(timeout=30)[0] for p in proxies]
    finally:
        for p in [launcher, *proxies]:
            if p.poll() is None:
                p.kill()
    assert launcher.returncode == 0, "".join(output) + "".join(logs)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert sorted(r["hostname"] for r in ranks) == ["hosta", "hostb"]
    for r in ranks:
        assert r["ranks_on_host"] == 1
        assert r["same_on_ranks"]
        assert r["diff"] <= 1e-12


def test_mpiexec_fastnn_train_mlp_matches_one_process(tmp_path, capsys):
    from fastnn.cli import main

    result = launch(sys.executable, "-m", "fastnn.cli", "train", "mlp", "--epochs", "4",
                    "--quiet", "--out", str(tmp_path / "two.npz"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = re.findall(r"^mlp: test accuracy ([0-9.]+) .*\(test loss ([0-9.]+)", result.stdout,
                       re.M)
    assert len(lines) == 1  # rank 0 alone prints
    previous = fnn.get_num_threads()
    try:
        assert main(["train", "mlp", "--epochs", "4", "--quiet", "--threads", "1", "--out",
                     str(tmp_path / "one.npz")]) == 0
    finally:
        fnn.set_num_threads(previous)
    alone = re.findall(r"^mlp: test accuracy ([0-9.]+) .*\(test loss ([0-9.]+)",
                       capsys.readouterr().out, re.M)
    assert lines == alone
    two, one = fnn.load(tmp_path / "two.npz"), fnn.load(tmp_path / "one.npz")
    for key, value in one.state_dict().items():
        np.testing.assert_allclose(two.state_dict()[key], value, rtol=1e-4, atol=1e-5)


# --- one rank, no launcher ------------------------------------------------------------------------
def test_without_a_launcher_a_script_runs_as_one_rank():
    if dist.launched():
        pytest.skip("this process runs under an MPI launcher")
    dist.init()
    assert dist.is_initialized() and dist.rank() == 0 and dist.size() == 1
    a = np.arange(3.0)
    assert dist.allreduce(a, op="mean") is a and a.tolist() == [0.0, 1.0, 2.0]
    assert dist.broadcast(a) is a
    dist.barrier()
    with pytest.raises(ValueError, match="op must be one of"):
        dist.allreduce(a, op="prod")
    with pytest.raises(TypeError, match="numpy.ndarray"):
        dist.allreduce([1.0, 2.0])


def test_data_parallel_on_one_rank_is_plain_fit(tmp_path):
    if dist.launched():
        pytest.skip("this process runs under an MPI launcher")
    data = np.random.default_rng(0)
    X, y = data.standard_normal((50, 6)).astype(np.float32), data.integers(0, 2, 50)

    def run(wrap):
        fnn.seed(3)
        model = fnn.Sequential(L.Dense(6, 8), L.ReLU(), L.Dense(8, 2))
        if wrap:
            model = dist.DataParallel(model)
        fnn.seed(4)
        hist = model.fit(X, y, optimizer=fnn.optim.Adam(model.parameters()), epochs=2,
                         batch_size=8, verbose=0)
        model.save(tmp_path / f"{wrap}.npz")
        return model, hist

    ddp, hist = run(True)
    model, ref = run(False)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(ddp.state_dict()[key], value)
    assert hist.history == ref.history
    np.testing.assert_array_equal(ddp.predict(X), model.predict(X))
    assert ddp.evaluate(X, y) == model.evaluate(X, y)
    assert (tmp_path / "True.npz").exists()


def test_data_parallel_rejects_what_is_not_a_model():
    with pytest.raises(TypeError, match="needs a forward"):
        dist.DataParallel(object())
    with pytest.raises(ValueError, match="bucket_bytes"):
        dist.DataParallel(fnn.Sequential(L.Dense(2, 2)), bucket_bytes=0)


def test_sequential_reports_each_layer_after_its_backward():
    model = fnn.Sequential(L.Dense(4, 5), L.BatchNorm1D(5), L.ReLU(), L.Dense(5, 3))
    seen = []
    model.after_layer_backward = lambda layer: seen.append(model.layers.index(layer))
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    model.forward(x)
    model.backward(np.ones((6, 3), np.float32), input_grad=False)
    # the fused BatchNorm + ReLU: the ReLU's backward runs inside the BatchNorm's
    assert seen == [3, 1, 0]


def test_buckets_send_zeros_for_gradients_zero_grad_only_marked():
    # zero_grad marks gradients without writing them; a parameter no backward wrote this step
    # must still go into its bucket's allreduce as zeros, not as last step's values
    sent = []

    class MPI:
        IN_PLACE, SUM = object(), object()

        class Request:
            Waitall = staticmethod(lambda requests: None)

    class Comm:
        def Iallreduce(self, sendbuf, recvbuf, op):
            sent.append(recvbuf.copy())

    model = fnn.Sequential(L.Dense(4, 5), L.Dense(5, 3))
    buckets = dist._Buckets(model, Comm(), MPI, bucket_bytes=1)
    for p in model.parameters():
        p.grad[...] = 7
    model.zero_grad()
    buckets.begin(1.0)
    buckets.finish()
    assert len(sent) == len(buckets.bounds) >= 2
    assert all(not s.any() for s in sent)
