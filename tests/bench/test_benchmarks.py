"""Smoke test of the benchmark harness (benchmarks/): tiny repeat counts, no timing assertions.

Checks what the optimisation work relies on: the JSON and Markdown a run writes, a failing model
recorded without stopping the suite, ``--compare`` of two result files, the FLOP count (only the
products fastnn computes), the GEMM peak and what the report names, that the reference path
really runs reference.py's kernels, and the FLOP/byte counts and rows of the kernel benchmarks
(benchmarks/kernels.py) on tiny shapes. Needs no torch; the tests of torch's setups run where
torch is importable.
"""
import copy
import glob
import json
import os
import platform
import sys

import numpy as np
import pytest

from benchmarks import kernels, models, report, system
from benchmarks.__main__ import main
import fastnn as fnn
from fastnn import _core, zoo
from fastnn._core import reference

QUICK = ["--quick", "--repeats", "2", "--warmup", "1", "--ref-repeats", "1", "--no-torch",
         "--no-kernels", "--no-scaling", "--no-cold-start", "--no-memory", "--no-chart"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One suite run over two models plus one whose builder fails."""
    out = tmp_path_factory.mktemp("bench")
    mp = pytest.MonkeyPatch()

    def broken():
        raise RuntimeError("builder exploded")

    mp.setitem(zoo.BUILDERS, "ae", broken)
    try:
        code = main(QUICK + ["--models", "seed-mlp,ae", "mlp", "--out", str(out)])
    finally:
        mp.undo()
    (json_path,) = glob.glob(os.path.join(out, "bench-*.json"))
    (md_path,) = glob.glob(os.path.join(out, "bench-*.md"))
    with open(json_path) as f:
        results = json.load(f)
    with open(md_path) as f:
        text = f.read()
    return code, json_path, results, text


def test_json_holds_machine_settings_and_per_model_timings(run):
    code, _, results, _ = run
    assert code == 0
    assert list(results["models"]) == ["seed-mlp", "ae", "mlp"]
    machine = results["machine"]
    for key in ("cpu", "usable_cpus", "flags", "versions", "thread_pools"):
        assert key in machine
    assert machine["versions"]["numpy"] == np.__version__
    assert machine["versions"]["torch"] is None  # --no-torch: not even imported for its version
    assert results["settings"]["repeats"] == 2 and results["settings"]["torch"] is False
    assert results["settings"]["torch_setups"] == []
    assert results["machine"]["cpu_id"]["family"] is None or results["machine"]["cpu_id"]["family"] >= 0
    assert set(results["machine"]["numpy_blas"]) >= {"library", "version", "architecture", "OPENBLAS_CORETYPE"}
    for name in ("seed-mlp", "mlp"):
        r = results["models"][name]
        assert r["status"] == "ok"
        assert r["fastnn"]["samples"] == 2 and r["reference"]["samples"] == 1
        assert r["fastnn"]["q1_s"] <= r["fastnn"]["median_s"] <= r["fastnn"]["q3_s"]
        assert r["fastnn"]["samples_per_s"] == pytest.approx(r["batch"] / r["fastnn"]["median_s"])
        assert r["speedup_vs_reference"] == pytest.approx(r["reference"]["median_s"] / r["fastnn"]["median_s"])
        assert r["gflops"] == pytest.approx(r["flops_per_step"] / r["fastnn"]["median_s"] / 1e9)
        assert not any(k.startswith(("torch", "speedup_vs_torch")) for k in r)
        # same weights and data on both paths: the losses of the first two steps agree (the
        # second one checks the gradients and the Adam update of the first)
        assert set(r["step_losses"]) == {"fastnn", "reference"}
        assert r["step_losses"]["reference"] == pytest.approx(r["step_losses"]["fastnn"], rel=1e-5)
        assert r["step_losses"]["fastnn"][1] != r["step_losses"]["fastnn"][0]
        assert r["loss_rel_diff_reference"] < report.LOSS_FLAG


def test_the_run_fixes_the_heap_thresholds_and_says_so(run):
    # both contenders are timed in glibc's no-page-fault steady state (system.steady_heap)
    _, _, results, text = run
    if sys.platform.startswith("linux") and "glibc" in (platform.libc_ver()[0] or ""):
        assert results["heap"] == {"mmap_threshold": 32 << 20, "trim_threshold": 512 << 20}
        assert "glibc heap thresholds fixed (mmap 32 MB, trim 512 MB)" in text
    else:
        assert results["heap"] is None and "heap thresholds" not in text


def test_a_failing_model_is_recorded_and_the_rest_still_runs(run):
    _, _, results, text = run
    failed = results["models"]["ae"]
    assert failed["status"] == "error" and "builder exploded" in failed["error"]
    assert results["models"]["mlp"]["status"] == "ok"
    assert "| ae | 128 | error: RuntimeError: builder exploded |" in text


def test_markdown_has_one_table_row_per_model(run):
    _, _, results, text = run
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| model | batch |"))
    assert lines[header + 1].startswith("|---|")
    rows = lines[header + 2:header + 5]
    assert [r.split("|")[1].strip() for r in rows] == ["seed-mlp", "ae", "mlp"]
    cells = [c.strip() for c in rows[2].split("|")[1:-1]]
    assert len(cells) == len(lines[header].split("|")) - 2
    head = [c.strip() for c in lines[header].split("|")[1:-1]]
    assert head[4:8] == ["torch eager ms", "torch fused Adam ms", "torch.compile ms (compile s)",
                         "vs torch (best setup)"]
    assert cells[4:8] == ["-"] * 4  # no torch
    assert head[8] == "NumPy oracle ms" and head[9] == "vs NumPy oracle"
    assert cells[9].endswith("x") and cells[11].endswith("%")
    assert "the oracle its tests compare with (not a NumPy framework)" in text
    assert "fastnn vs torch's fastest setup, this run (above 1: fastnn faster): seed-mlp -, ae -, mlp -." in text


def test_compare_of_two_json_files(run, tmp_path, capsys):
    _, json_path, results, _ = run
    newer = copy.deepcopy(results)
    newer["models"]["mlp"]["fastnn"]["samples_per_s"] *= 2
    del newer["models"]["seed-mlp"]
    new_path = tmp_path / "new.json"
    report.write_json(newer, str(new_path))
    capsys.readouterr()
    assert main(["--compare", json_path, str(new_path)]) == 0
    text = capsys.readouterr().out
    row = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]]
           for line in text.splitlines() if line.startswith("| ") and not line.startswith("| model")}
    assert row["mlp"][3] == "+100.0%"
    assert row["seed-mlp"][3] == "gone"
    assert row["ae"][3] == "-"  # failed in both


def test_compare_rejects_a_file_that_is_not_a_result(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    with pytest.raises(ValueError, match="not a fastnn benchmark result"):
        main(["--compare", str(bad), str(bad)])


def test_unknown_model_is_an_argument_error(capsys):
    with pytest.raises(SystemExit):
        main(QUICK + ["--models", "mlp,resnet-9000"])
    assert "unknown model(s) resnet-9000" in capsys.readouterr().err


def test_step_flops_of_the_mlp_are_three_times_its_gemms_but_the_first_has_no_dx():
    model, shape, loss = zoo.build("mlp")
    x, _ = models.make_batch(model, shape, loss, 128)
    assert models.step_flops(model, x) == 2 * 128 * (2 * 784 * 256 + 3 * (256 * 256 + 256 * 10))


def _sequence_flops(cell, batch=4):
    """step_flops of the zoo's Embedding-RNN/LSTM-Dense model and its sizes."""
    model, shape, loss = zoo.build(cell)
    x, _ = models.make_batch(model, shape, loss, batch)
    emb, rec, dense = model[0], model[1], model[2]
    sizes = dict(positions=batch * shape[0], vocab=emb.num_embeddings, f=emb.embedding_dim,
                 g=rec._gates * rec.hidden_size, h=rec.hidden_size, classes=dense.out_features)
    return models.step_flops(model, x), sizes


def test_step_flops_credit_an_embedding_fed_lstm_only_the_products_it_computes():
    # forward: the table's V rows projected once, not every position; backward: dW_ih over the
    # V rows (per_id.T @ table) and the table's gradient per_id @ W_ih (no dX); the recurrent
    # products and the output Dense over every position, 3 each
    flops, z = _sequence_flops("lstm")
    p, v = z["positions"], z["vocab"]
    recurrent_and_dense = 3 * 2 * p * (z["g"] * z["h"] + z["h"] * z["classes"])
    assert v < p  # the table path's condition: fewer table rows than positions
    assert flops == recurrent_and_dense + 3 * 2 * v * z["g"] * z["f"]


def test_step_flops_of_an_rnn_count_the_dx_it_scatters_into_the_table():
    # the RNN has no table backward: it computes dX = dpre @ W_ih for every position and the
    # Embedding scatter-adds it; forward projection and dW_ih over the table's rows
    assert not models.zoo.build("rnn")[0][1]._has_table_backward
    flops, z = _sequence_flops("rnn")
    p, v, gf = z["positions"], z["vocab"], z["g"] * z["f"]
    assert flops == 3 * 2 * p * (z["g"] * z["h"] + z["h"] * z["classes"]) + 2 * 2 * v * gf + 2 * p * gf


def test_step_flops_follow_the_recurrent_layers_switches(monkeypatch):
    from fastnn import layers as L

    full, z = _sequence_flops("lstm")
    p, v, gf = z["positions"], z["vocab"], z["g"] * z["f"]
    monkeypatch.setattr(L.LSTM, "table_backward", False)  # dX over every position, scattered
    assert _sequence_flops("lstm")[0] == full + 2 * (p - v) * gf
    monkeypatch.setattr(L.LSTM, "fuse_embedding", False)  # every position projected
    assert _sequence_flops("lstm")[0] == full + 3 * 2 * (p - v) * gf


def test_step_flops_of_the_transformer_count_projections_attention_and_feed_forward():
    model, _, loss = zoo.build("transformer")
    n, t, e, f, v = 2, 5, 128, 512, 64
    x, _ = models.make_batch(model, (t,), loss, n)
    per_layer = 2 * n * t * (4 * e * e + 2 * t * e + 2 * e * f)  # Q, K, V, out; Q K^T, P V; FF
    # the Embedding has no GEMM; every later layer: forward, dX and dW
    assert models.step_flops(model, x) == 3 * (2 * per_layer + 2 * n * t * e * v)


def test_step_flops_of_the_resnet_graph_count_every_conv_and_the_stem_without_dx():
    model, shape, loss = zoo.build("resnet")
    n = 2
    x, _ = models.make_batch(model, shape, loss, n)

    def conv(cin, cout, k, side):  # side: the output's height and width
        return 2 * n * cout * side * side * cin * k * k
    stem = conv(3, 16, 3, 32)
    stage1 = 4 * conv(16, 16, 3, 32)
    stage2 = conv(16, 32, 3, 16) + 3 * conv(32, 32, 3, 16) + conv(16, 32, 1, 16)  # 1x1: projection
    stage3 = conv(32, 64, 3, 8) + 3 * conv(64, 64, 3, 8) + conv(32, 64, 1, 8)
    assert models.step_flops(model, x) == 2 * stem + 3 * (stage1 + stage2 + stage3 + 2 * n * 64 * 10)


def test_reference_path_routes_every_kernel_call_through_reference_py():
    model, shape, loss = zoo.build("lenet5")
    x, target = models.make_batch(model, shape, loss, 4)
    compiled = models.Counter()
    with models.count_compiled_kernels(compiled):
        models.FastnnStep(model, loss, x, target)()
    ref_calls = models.Counter()
    with models.reference_kernels(ref_calls):
        assert _core.conv2d_forward is not reference.conv2d_forward  # the counting wrapper
        models.FastnnStep(model, loss, x, target)()
    assert ref_calls == compiled  # same kernels, same number of calls, on the other path
    assert {"conv2d_forward", "maxpool2d_backward", "adam_update"} <= set(ref_calls)
    assert _core.conv2d_forward is not reference.conv2d_forward
    # restored after the block: the compiled kernel of the ISA level in use
    assert _core.conv2d_forward.__module__ == _core.isa.load("_conv").__name__


def test_peak_memory_child_process_reports_sizes():
    r = system.peak_memory(["seed-mlp"], steps=1)["seed-mlp"]
    assert r["peak_rss_mb"] > 0 and r["step_alloc_peak_mb"] >= 0
    assert r["parameters_mb"] == pytest.approx((25 * 3 + 3 + 3 * 3 + 3 + 3 * 10 + 10) * 4 / 2 ** 20)


def test_gemm_peak_is_the_best_contender_and_names_numpys_blas_kernel():
    peak = system.gemm_peak((32, 64), repeats=1, with_torch=False)
    assert set(peak["contenders"]) == {"numpy", "fastnn"}
    rates = {k: c["gflops"] for k, c in peak["contenders"].items()}
    assert peak["gflops"] == max(rates.values()) and rates[peak["best"]] == peak["gflops"]
    for c in peak["contenders"].values():
        assert set(c["by_threads"]) == {str(n) for n in {peak["threads"], 1}}
        assert c["gflops"] == max(max(v.values()) for v in c["by_threads"].values())
    blas = system.numpy_blas()
    assert f"{blas['architecture']} kernel" in peak["contenders"]["numpy"]["label"]
    later = copy.deepcopy(peak)
    later["contenders"]["numpy"]["gflops"] = 10 * peak["gflops"]  # the end's figure wins
    merged = system.merge_peaks(peak, system._with_best(later))
    assert merged["best"] == "numpy" and merged["gflops"] == 10 * peak["gflops"]
    assert merged["contenders"]["numpy"]["start_gflops"] == rates["numpy"]
    text = report.peak_text(merged)
    assert text.startswith(f"float32 GEMM peak {report._num(merged['gflops'])} GFLOP/s: numpy.matmul (")
    assert peak["contenders"]["fastnn"]["label"] in text


def test_the_report_says_when_openblas_coretype_is_forced(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    blas = system.numpy_blas()
    assert blas["OPENBLAS_CORETYPE"] == "Haswell"
    assert report.blas_text({"numpy_blas": blas}).endswith("kernel, forced by OPENBLAS_CORETYPE=Haswell)")
    assert "OPENBLAS_CORETYPE=Haswell" in system._gemm_contenders(False)["numpy"][0]
    monkeypatch.delenv("OPENBLAS_CORETYPE")
    assert report.blas_text({"numpy_blas": system.numpy_blas()}).endswith("kernel, OPENBLAS_CORETYPE unset)")


def test_the_run_divides_by_its_best_gemm_and_names_the_cpu(run):
    _, json_path, results, text = run
    peak = results["gemm_peak"]
    assert peak["gflops"] == max(c["gflops"] for c in peak["contenders"].values())
    for name in ("seed-mlp", "mlp"):
        assert results["models"][name]["peak_fraction"] == pytest.approx(results["models"][name]["gflops"] / peak["gflops"])
    assert system.cpu_text(results["machine"]) in text and report.blas_text(results["machine"]) in text
    assert "## Float32 GEMM peak" in text and " **peak** |" in text


def test_cpu_text_names_family_model_and_core():
    machine = {"cpu": "AMD EPYC", "cpu_id": {"vendor": "AuthenticAMD", "family": 25, "model": 17, "core": "Zen 4"}}
    assert system.cpu_text(machine) == "AMD EPYC (family 25, model 17: Zen 4)"
    assert system.cpu_text({"cpu": "Some CPU", "cpu_id": {"family": None}}) == "Some CPU"


def test_readme_block_of_a_saved_run(run, capsys):
    _, json_path, results, text = run
    capsys.readouterr()
    assert main(["--readme", json_path]) == 0
    block = capsys.readouterr().out
    assert block.startswith(system.cpu_text(results["machine"]) + ", ")
    assert report.models_table(results) in block and report.models_table(results) in text
    assert report.closing_note(results) in block


# ---- torch's setups (only where torch is importable) ----------------------------------------------
@pytest.mark.parametrize("name", ["lstm", "dcgan-d", "transformer", "resnet"])
def test_every_torch_setup_starts_from_fastnns_weights_and_takes_the_same_step(name):
    pytest.importorskip("torch")  # optional: the suite itself runs without torch
    fnn.seed(0)  # the weights (and so the float32 rounding of both steps) whatever ran before
    model, shape, loss = zoo.build(name)
    short = name in ("lstm", "transformer")
    x, target = models.make_batch(model, (5,) if short else shape, loss, 3)  # short: quick to trace
    weights = model.state_dict()
    ours = models._two_losses(models.FastnnStep(model, loss, x, target))
    for setup in models.TORCH_SETUPS:
        twin = zoo.build(name)[0]
        twin.load_state_dict(weights)
        # the compiled setup's plumbing through dynamo only (backend "eager"): no C++ compile here
        step = models.TorchStep(twin, loss, x, target, setup, compile_backend="eager")
        # the suite flags a loss difference above 1e-4: dcgan-d's second loss (~0.004, after an
        # Adam step on float32 gradients rounded differently by each library) differs by ~3e-5
        assert models._two_losses(step) == pytest.approx(ours, rel=1e-4), setup
    assert step.optimizer.defaults["fused"] is True and step.forward is not step.module


def test_a_torch_compile_failure_is_shown_and_the_other_setups_still_count(monkeypatch):
    torch = pytest.importorskip("torch")

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", broken)
    r = models.bench_model("seed-mlp", repeats=2, warmup=1, ref_repeats=1)
    assert r["status"] == "ok"
    assert r["torch_compiled"] == {"status": "error", "error": "RuntimeError: no C++ compiler"}
    best = min(("eager", "fused"), key=lambda s: r["torch_" + s]["median_s"])
    assert r["torch"]["setup"] == best
    assert r["speedup_vs_torch"] == pytest.approx(r["torch_" + best]["median_s"] / r["fastnn"]["median_s"])
    assert set(r["step_losses"]) == {"fastnn", "reference", "torch_eager", "torch_fused"}
    row = report.models_table({"models": {"seed-mlp": r}}).splitlines()[2]
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[6] == "compile failed: RuntimeError: no C++ compiler"
    assert cells[7] == f"{r['speedup_vs_torch']:.2f}x ({best})"


# ---- kernel benchmarks (benchmarks/kernels.py), tiny shapes ---------------------------------------
TINY_CONVT = [("tiny 4->3 k4 s2 p1 3x3", 2, 4, 3, 3, 3, 4, 2, 1), ("tiny 3->2 k3 2x2", 2, 3, 2, 2, 2, 3, 1, 0)]
TINY_LSTM = [(3, 2, 4)]
TINY_POOL = [("tiny 2x2 3ch 6x6", 2, 3, 6, 6, 2)]
TINY_BN = [("tiny 2ch 4x4", 3, 2, 4, 4)]
TINY_ATTENTION = [(2, 3, 4, 2)]


@pytest.fixture
def fixed_time(monkeypatch):
    """Every timed call runs its kernel once and 'takes' 1 ms: figures are work / 1e-3 s."""
    calls = []

    def fake(fn, repeats, min_time=0.0):
        fn()
        calls.append(fn)
        return 1e-3

    monkeypatch.setattr(kernels, "median_seconds", fake)
    return calls


def test_kernel_benchmarks_count_flops_and_bytes_by_their_rules(fixed_time):
    per_s = 1e-3 * 1e9  # figure = count / 1 ms / 1e9
    rows = kernels.bench_conv_transpose(TINY_CONVT, 1, 1)
    n, c, h, w, o, k = 2, 4, 3, 3, 3, 4
    assert [r[0] for r in rows[:2]] == ["convT fwd tiny 4->3 k4 s2 p1 3x3", "convT bwd tiny 4->3 k4 s2 p1 3x3"]
    assert rows[0][1:] == pytest.approx((2 * n * c * o * k * k * h * w / per_s,) * 2 + (1.0,))
    assert rows[1][1] == pytest.approx(2 * rows[0][1])
    t, n, hid = TINY_LSTM[0]
    rows = kernels.bench_lstm(TINY_LSTM, 1, 1)
    assert [r[0] for r in rows] == ["lstm fwd T=3 N=2 H=4", "lstm bwd T=3 N=2 H=4"]
    assert [r[1] for r in rows] == pytest.approx([2 * t * n * 4 * hid * hid / per_s] * 2)
    rows = dict((r[0], r[1:]) for r in kernels.bench_pool(TINY_POOL, 1, 1))
    x, y = 2 * 3 * 6 * 6 * 4, 2 * 3 * 3 * 3 * 4  # float32 bytes of x and of the pooled output
    assert rows == {
        "maxpool fwd tiny 2x2 3ch 6x6": pytest.approx(((x + y + 2 * y) / per_s,) * 2 + (1.0,)),
        "maxpool bwd tiny 2x2 3ch 6x6": pytest.approx(((y + 2 * y + x) / per_s,) * 2 + (1.0,)),
        "avgpool fwd tiny 2x2 3ch 6x6": pytest.approx(((x + y) / per_s,) * 2 + (1.0,)),
        "avgpool bwd tiny 2x2 3ch 6x6": pytest.approx(((y + x) / per_s,) * 2 + (1.0,)),
    }
    rows = kernels.bench_batchnorm(TINY_BN, 1, 1)
    x, v = 3 * 2 * 4 * 4 * 4, 2 * 4
    assert [r[0] for r in rows] == ["bn train fwd tiny 2ch 4x4", "bn bwd tiny 2ch 4x4"]
    assert [r[1] for r in rows] == pytest.approx([(2 * x + 8 * v) / per_s, (3 * x + 7 * v) / per_s])
    n, t, e, h = TINY_ATTENTION[0]
    rows = kernels.bench_attention(TINY_ATTENTION, 1, 1)
    fwd = 2 * n * t * e * 4 * e + 4 * n * t * t * e
    assert [r[0] for r in rows] == ["attention fwd N=2 T=3 E=4 heads=2", "attention bwd N=2 T=3 E=4 heads=2"]
    assert [r[1] for r in rows] == pytest.approx([fwd / per_s, 2 * fwd / per_s])
    rows = kernels.bench_masked_softmax(TINY_ATTENTION, 1, 1)
    scores, mask = n * h * t * t * 4, t * t * 4
    assert [r[0] for r in rows] == ["masked softmax fwd 4x3x3 causal", "masked softmax bwd 4x3x3 causal"]
    assert [r[1] for r in rows] == pytest.approx([(2 * scores + mask) / per_s, 3 * scores / per_s])
    assert len(fixed_time) == 2 * (4 + 2 + 4 + 2 + 2 + 2)  # each row: fastnn once, reference once


def test_kernel_suite_rows_are_timed_and_shown_with_their_units(monkeypatch):
    timed = kernels.median_seconds
    monkeypatch.setattr(kernels, "median_seconds", lambda fn, repeats, min_time=0.0: timed(fn, 1))
    for name, tiny in (("CONVT_LAYERS", TINY_CONVT), ("LSTM_SHAPES", TINY_LSTM), ("POOL_LAYERS", TINY_POOL * 2),
                       ("BN_SHAPES", TINY_BN * 2), ("ATTENTION_SHAPES", TINY_ATTENTION)):
        monkeypatch.setattr(kernels, name, tiny)
    rows = kernels.suite_rows(quick=True)  # the first layer of each list
    assert [r["kernel"].split(" tiny")[0].split(" T=")[0] for r in rows] == [
        "convT fwd", "convT bwd", "lstm fwd", "lstm bwd", "attention fwd N=2", "attention bwd N=2",
        "maxpool fwd", "maxpool bwd", "avgpool fwd", "avgpool bwd", "bn train fwd", "bn bwd",
        "masked softmax fwd 4x3x3 causal", "masked softmax bwd 4x3x3 causal"]
    for r in rows:
        unit = "gflops" if r["kernel"].startswith(("convT", "lstm", "attention")) else "gbps"
        assert set(r) == {"kernel", f"fastnn_{unit}", f"baseline_{unit}", "speedup"}
        assert r[f"fastnn_{unit}"] > 0 and r[f"baseline_{unit}"] > 0 and r["speedup"] > 0
        assert r[f"fastnn_{unit}"] / r[f"baseline_{unit}"] == pytest.approx(r["speedup"])
    old_style = {"kernel": "gemm 256x256x256", "fastnn_gflops": 100.0, "baseline_gflops": 90.0, "speedup": 1.11}
    text = report.kernels_table({"rows": [old_style] + rows}, peak=200.0)
    lines = text.splitlines()
    assert lines[2] == "| kernel (benchmarks/kernels.py) | fastnn | baseline | unit | % of GEMM peak | speed-up |"
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in lines[4:]}
    assert cells["gemm 256x256x256"] == ["100", "90.0", "GFLOP/s", "50%", "1.11x"]
    assert cells["lstm fwd T=3 N=2 H=4"][2] == "GFLOP/s" and cells["lstm fwd T=3 N=2 H=4"][3].endswith("%")
    assert cells["bn bwd tiny 2ch 4x4"][2:4] == ["GB/s", "-"]
    assert len(cells) == 1 + len(rows)


def test_inference_benchmark_writes_a_run_and_the_readme_table(tmp_path, capsys):
    """benchmarks/inference.py times a model (a graph model: its plan against the nodes one by
    one, and onnxruntime when installed), saves the run and prints the README's table from it,
    also through python -m benchmarks --readme."""
    from benchmarks import __main__ as bench_main
    from benchmarks import inference

    assert inference.main(["--models", "train-resnet", "--batches", "1", "--repeats", "2", "--no-torch",
                           "--layer-by-layer", "--out", str(tmp_path)]) == 0
    run_file = next(tmp_path.glob("inference-*.json"))
    capsys.readouterr()
    assert bench_main.main(["--readme", str(run_file)]) == 0
    text = capsys.readouterr().out
    assert "load average" in text and "best of 2 samples" in text
    assert len([line for line in text.splitlines() if line.startswith("| train-resnet | 1 |")]) == 1
    assert "fastnn layer-by-layer ms" in text
