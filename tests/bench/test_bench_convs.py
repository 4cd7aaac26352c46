"""benchmarks/convs.py: the conv layers of the conv-heavy models, found at their real shapes, timed
with the FLOPs the suite's rule gives, and (with torch) compared against the very calls PyTorch's
training step makes, which must compute the same thing as fastnn's."""
import numpy as np
import pytest

from benchmarks import convs, models, report


def _kinds(name):
    return [(type(layer).__name__, x_shape, y_shape, first) for layer, x_shape, y_shape, first in convs.conv_layers(name)]


def test_conv_layers_are_the_models_convolutions_at_their_batch_shapes():
    assert _kinds("dcgan-d") == [("Conv2D", (64, 1, 28, 28), (64, 64, 14, 14), True),
                                 ("Conv2D", (64, 64, 14, 14), (64, 128, 7, 7), False)]
    assert [k[1:] for k in _kinds("dcgan-g")] == [((64, 64, 1, 1), (64, 128, 7, 7), True),
                                                   ((64, 128, 7, 7), (64, 64, 14, 14), False),
                                                   ((64, 64, 14, 14), (64, 1, 28, 28), False)]
    assert {k[0] for k in _kinds("dcgan-g")} == {"ConvTranspose2D"}
    vgg = _kinds("vgg-bn")
    assert [k[1][1:] for k in vgg] == [(1, 28, 28), (32, 28, 28), (32, 14, 14), (64, 14, 14)]
    assert [k[3] for k in vgg] == [True, False, False, False]
    # a graph model: every node's conv, the 1x1 projections of the shortcuts included
    res = _kinds("resnet")
    assert len(res) == 15 and [k[3] for k in res] == [True] + [False] * 14
    assert res[0][1:3] == ((64, 3, 32, 32), (64, 16, 32, 32))
    assert [(k[1][1:], k[2][1:]) for k in res if k[1][1] != k[2][1]] == [
        ((3, 32, 32), (16, 32, 32)), ((16, 32, 32), (32, 16, 16)), ((16, 32, 32), (32, 16, 16)),
        ((32, 16, 16), (64, 8, 8)), ((32, 16, 16), (64, 8, 8))]


def test_flops_follow_the_suite_rule_and_totals_add_up():
    result = convs.bench_model_convs(["dcgan-d"], repeats=1, use_torch=False, sgemm_size=64, gemm="fastnn")["dcgan-d"]
    layers = convs.conv_layers("dcgan-d")
    assert [r["layer"] for r in result["layers"]] == ["conv 1->64 k4 s2 p1 28x28", "conv 64->128 k4 s2 p1 14x14"]
    for row, (layer, x_shape, y_shape, first) in zip(result["layers"], layers):
        assert row["fwd_flops"] == models.layer_forward_flops(layer, x_shape, y_shape)
        assert row["bwd_flops"] == row["fwd_flops"] * (1 if first else 2)  # no dx for the first layer
        assert row["fastnn_fwd_s"] > 0 and row["fastnn_bwd_s"] > 0
        assert "torch_fwd_s" not in row
    seconds = sum(r["fastnn_fwd_s"] + r["fastnn_bwd_s"] for r in result["layers"])
    assert result["fastnn_s"] == pytest.approx(seconds)
    assert result["flops"] == sum(r["fwd_flops"] + r["bwd_flops"] for r in result["layers"])
    assert result["fastnn_gflops"] == pytest.approx(result["flops"] / seconds / 1e9)
    # the GEMM peak's winner (here: fastnn's own GEMM), timed between the convolutions
    assert result["sgemm_contender"] == "fastnn" and result["sgemm_gflops"] > 0


@pytest.mark.parametrize("name", convs.CONV_MODELS)
def test_torch_contenders_compute_what_fastnn_computes(name):
    pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    for layer, x_shape, y_shape, first in convs.conv_layers(name):
        calls = convs._contenders(layer, x_shape, y_shape, first, True, rng)
        ours, theirs = calls["fastnn fwd"](), calls["torch fwd"]().numpy()
        scale = np.abs(theirs).max()
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4 * scale)
        grads = calls["fastnn bwd"]()  # fastnn's dW and db: accumulated once into zeros
        t_grads = calls["torch bwd"]()
        assert (grads[0] is None) == first == (t_grads[0] is None)
        for ours, theirs in zip(grads, t_grads):
            assert (ours is None) == (theirs is None)
            if ours is not None:
                theirs = theirs.numpy()
                # loose enough for torch's float32 sums, far below what a wrong stride, padding or
                # output padding would change; db sums N*OH*OW unit normals per channel, whose
                # float32 rounding (up to that count times eps) outweighs a sum that cancels
                # (the 1-channel convT's db: 50176 terms summing to about -0.08)
                atol = 2e-3 * np.abs(theirs).max()
                if ours.ndim == 1:
                    atol += np.finfo(np.float32).eps * np.prod(y_shape) / y_shape[1]
                np.testing.assert_allclose(ours, theirs, rtol=0, atol=atol)


def test_table_shows_each_model_and_layer_against_the_peak():
    layer = {"layer": "conv 2->4 k3 8x8", "fwd_flops": 1e9, "bwd_flops": 2e9, "fastnn_fwd_s": 0.01,
             "fastnn_bwd_s": 0.02, "torch_fwd_s": 0.02, "torch_bwd_s": 0.04}
    result = {"m": {"layers": [layer], "flops": 3e9, "fastnn_s": 0.03, "fastnn_gflops": 100.0,
                    "torch_s": 0.06, "torch_gflops": 50.0, "sgemm_gflops": 125.0}}
    lines = report.model_convs_table(result, peak=200.0).splitlines()
    assert lines[2] == "| m | 1 | 30.0 | 100 | 50% | 125 | 80% | 60.0 | 50 | 25% | 40% | 2.00x |"
    assert lines[-1] == "| m | conv 2->4 k3 8x8 | 10.0 | 20.0 | 100 | 50% | 20.0 | 40.0 | 50 |"
    for key in ("torch_s", "torch_gflops", "sgemm_gflops"):
        del result["m"][key]
    lines = report.model_convs_table(result).splitlines()
    assert lines[0] == ("| model | convs | fastnn ms (fwd+bwd) | fastnn GFLOP/s | % of GEMM peak | "
                        "GEMM alongside GFLOP/s | % of it |")
    assert lines[2] == "| m | 1 | 30.0 | 100 | - | - | - |"
