"""``fastnn gradcheck module:factory``: a user's own layer checked from the command line.

The worked example of docs/gradcheck.md (docs/scale_layer.py) passes through the real command,
a layer with a wrong backward fails it with exit status 1 and its report, and a spec that does not
resolve is a usage error (exit status 2) saying what is wrong.
"""
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

from fastnn.testing.gradcheck_cli import main

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "docs" / "scale_layer.py"
DOC = EXAMPLE.parent / "gradcheck.md"

# y = x**2 with a backward missing the factor 2; and a correct Cube beside it
BROKEN = textwrap.dedent('''
    import numpy as np
    from hypothesis import strategies as st
    from fastnn.layers import Layer
    from fastnn.testing import strategies as fst


    class Square(Layer):
        def forward(self, x, training=True):
            self.x = self.as_input(x)
            return self.x ** 2

        def backward(self, dy):
            return dy * self.x              # wrong: d(x**2)/dx = 2x


    class Cube(Layer):
        def forward(self, x, training=True):
            self.x = self.as_input(x)
            return self.x ** 3

        def backward(self, dy):
            return dy * 3 * self.x ** 2


    def square():
        return Square(), np.random.default_rng(0).standard_normal((3, 4))


    def cube():
        return Cube(), np.random.default_rng(0).standard_normal((3, 4))


    @st.composite
    def squares(draw):
        shape = draw(fst.shapes(2, 3, 1, 4))
        return Square(), draw(fst.arrays_for(shape))


    def adds():
        from fastnn.layers import Add
        rng = np.random.default_rng(1)
        return Add(), [rng.standard_normal((2, 3)), rng.standard_normal((2, 3))]


    NOT_CALLABLE = 3

    def returns_layer_only():
        return Cube()

    def returns_class():
        return Cube, np.ones((2, 2))

    def returns_strings():
        return Cube(), "abc"

    def returns_no_backward():
        return object(), np.ones((2, 2))

    def raises():
        raise RuntimeError("no layer today")

    def draws_wrong():
        return st.integers(0, 3)
''')


def run_cli(*args, cwd):
    """The ``fastnn gradcheck`` command in a fresh process (the installed fastnn, not this tree)."""
    env = dict(os.environ)
    if "PYTHONPATH" in env:   # a development run against an in-place build: keep seeing that build
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in env["PYTHONPATH"].split(os.pathsep))
    return subprocess.run([sys.executable, "-m", "fastnn.cli", "gradcheck", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """broken_layers.py in a temporary directory that is the current directory."""
    (tmp_path / "broken_layers.py").write_text(BROKEN)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path
    sys.modules.pop("broken_layers", None)


# --- through the command --------------------------------------------------------------------------
def test_command_checks_built_in_layers_and_the_documented_user_layer(tmp_path):
    done = run_cli("Dense", "LSTM", f"{EXAMPLE}:scale", f"{EXAMPLE}:scales", "--examples", "4", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for name, count in (("Dense", 4), ("LSTM", 4), (f"{EXAMPLE}:scale", 1), (f"{EXAMPLE}:scales", 4)):
        row = next(line for line in lines if line.split()[0] == name)
        assert f"training {count:>3} ok" in row and f"inference {count:>3} ok" in row, row
    assert "8 of 8 checks passed" in done.stdout


def test_command_fails_on_a_wrong_backward_with_its_report(user_module):
    done = run_cli("broken_layers:cube", "broken_layers:square", cwd=user_module)   # found from the cwd
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED: broken_layers:square (training); the configuration:" in done.stdout
    assert "Square(), input (3, 4) float64, training=True" in done.stdout
    assert "input   (3, 4)" in done.stdout and "<-- FAILED" in done.stdout
    assert "FAILED: broken_layers:cube" not in done.stdout
    assert "2 of 4 checks passed" in done.stdout


def test_the_factories_shown_in_the_docs_are_those_of_the_example_file():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    shown = next(b for b in blocks if "def scale():" in b)
    assert shown[shown.index("def scale():"):] in EXAMPLE.read_text()


# --- in process: the strategy form and the errors ------------------------------------------------------
def test_strategy_of_a_wrong_backward_fails_and_shrinks(user_module, capsys):
    assert main(["broken_layers:squares", "--mode", "inference", "--examples", "5"]) == 1
    out = capsys.readouterr().out
    assert "FAILED: broken_layers:squares (inference); smallest failing configuration:" in out
    assert "Square(), input (1, 1) float64, training=False" in out      # shrunk to the smallest shape
    assert "0 of 1 checks passed" in out


def test_a_layer_with_several_inputs_takes_a_list(user_module, capsys):
    assert main(["broken_layers:adds", "--mode", "inference"]) == 0
    out = capsys.readouterr().out
    assert "1 of 1 checks passed" in out and "broken_layers:adds" in out


def test_the_file_form_imports_the_file_and_checks_its_factory(user_module, capsys):
    assert main([str(user_module / "broken_layers.py") + ":cube", "--mode", "training"]) == 0
    assert "1 of 1 checks passed" in capsys.readouterr().out


@pytest.mark.parametrize("spec, message", [
    ("no_such_module_xyz:make", "cannot import module 'no_such_module_xyz': no module named 'no_such_module_xyz'"),
    ("missing_file.py:make", "no such file missing_file.py"),
    ("broken_layers:", "expected module:factory"),
    ("broken_layers:nope", "broken_layers has no attribute 'nope'; its callables: "),
    ("broken_layers:NOT_CALLABLE", "NOT_CALLABLE is a int, not a callable factory"),
    ("broken_layers:returns_layer_only", "returns_layer_only() returned Cube; expected a pair (layer, x)"),
    ("broken_layers:returns_class", "returned the class Cube, not an instance"),
    ("broken_layers:returns_strings", "x must be a non-empty float (or integer index) array"),
    ("broken_layers:returns_no_backward", "object has no forward() or backward()"),
    ("broken_layers:raises", "RuntimeError: no layer today"),
    ("broken_layers:draws_wrong", "its strategy drew int; expected a pair (layer, x)"),
])
def test_a_spec_that_does_not_resolve_is_a_usage_error(user_module, capsys, spec, message):
    assert main([spec, "--examples", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fastnn gradcheck: {spec}") and message in err, err


def test_an_import_error_inside_the_module_is_shown_as_such(user_module, capsys):
    (user_module / "needs_missing.py").write_text("import no_such_dependency_xyz\n")
    assert main(["needs_missing:make"]) == 2
    err = capsys.readouterr().err
    assert "importing needs_missing failed" in err and "No module named 'no_such_dependency_xyz'" in err
