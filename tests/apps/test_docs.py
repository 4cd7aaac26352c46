"""The documentation's code runs: every Python block of docs/getting-started.md, in order, in one
namespace, as a reader would paste them (the site itself is built by ``sphinx-build -W`` in CI)."""
import pathlib
import re

import numpy as np
import pytest

import fastnn as fnn

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"


def python_blocks(page):
    return re.findall(r"^```python\n(.*?)^```", (DOCS / page).read_text(), flags=re.S | re.M)


@pytest.fixture
def one_thread():
    """The page's digits batches of 32 are too small to share between threads (as test_examples)."""
    previous = fnn.get_num_threads()
    fnn.set_num_threads(1)
    yield
    fnn.set_num_threads(previous)


def test_getting_started_runs_and_trains_to_its_stated_accuracy(tmp_path, monkeypatch, one_thread, capsys):
    monkeypatch.chdir(tmp_path)                 # the page saves a checkpoint in the current directory
    blocks = python_blocks("getting-started.md")
    assert len(blocks) >= 6
    namespace = {"__name__": "getting_started"}
    for k, block in enumerate(blocks):
        exec(compile(block, f"docs/getting-started.md, python block {k + 1}", "exec"), namespace)
    out = capsys.readouterr().out
    assert namespace["scores"]["accuracy"] >= 0.93, out      # the page says "about 97%"
    assert re.search(r"test loss \d\.\d{3}, accuracy \d+\.\d%", out)
    assert (tmp_path / "digits-mlp.npz").is_file()
    assert namespace["result"].ok and "gradcheck Swish() [float64, training=True]: ok" in out


def test_the_getting_started_gradcheck_catches_a_wrong_swish_backward():
    block = next(b for b in python_blocks("getting-started.md") if "class Swish" in b)
    right = "self.beta.grad += np.sum(dy * self.x * ds * self.x)"
    assert right in block
    namespace = {"np": np, "fnn": fnn, "L": fnn.layers}
    with pytest.raises(AssertionError):       # the page's `assert result.ok`
        exec(compile(block.replace(right, "self.beta.grad += np.sum(dy * ds * self.x)"), "swish", "exec"),
             namespace)
    assert namespace["result"].failed_tensors == ["beta"]


def test_deployment_page_runs_and_prints_what_it_says(tmp_path, monkeypatch, capsys):
    """docs/deployment.md: the exported CNN matches predict in onnxruntime, the exported seq2seq
    graph decodes as greedy_decode, and the graph model's plan is the one printed."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    monkeypatch.chdir(tmp_path)                 # the page writes .onnx files
    page = (DOCS / "deployment.md").read_text()
    namespace = {"__name__": "deployment"}
    for k, block in enumerate(python_blocks("deployment.md")):
        exec(compile(block, f"docs/deployment.md, python block {k + 1}", "exec"), namespace)
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["True", "True"]
    assert out[2] in page and out[2].startswith("GraphPlan(")
