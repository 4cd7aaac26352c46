"""Cold start: the training step of a plain dense or conv model (the suite's mlp and lenet5) runs on
kernels compiled at install only, so a fresh process imports no numba and JIT-compiles nothing
(its first step is then as fast with an empty numba cache as with a warm one). Checked in fresh
interpreters, by what they import, not by time."""
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import fastnn as fnn

STEP = """
import sys
import numpy as np
import fastnn as fnn
from fastnn import zoo
fnn.seed(0)
for name, batch in (("mlp", 16), ("lenet5", 8)):
    model, shape, loss_name = zoo.build(name)
    x = np.random.default_rng(0).standard_normal((batch,) + shape).astype(np.float32)
    y = np.arange(batch) % 10
    model.fit(x, y, loss=loss_name, optimizer=fnn.optim.Adam(model.parameters()), epochs=1,
              batch_size=batch, verbose=0)
print("numba" in sys.modules)
"""


def _run(code, **env):
    root = os.path.dirname(os.path.dirname(os.path.abspath(fnn.__file__)))
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
                **env}
    # run outside the checkout: ``python -c`` puts its working directory first on sys.path, and a
    # source tree there (no compiled core in CI) would shadow the fastnn under test
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env,
                          cwd=tempfile.gettempdir(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_mlp_and_lenet5_training_imports_no_numba(tmp_path):
    assert _run(STEP, NUMBA_CACHE_DIR=str(tmp_path)) == "False"


def test_a_numba_kernel_still_loads_numba_on_first_use():
    # the check above can fail: fetching a kernel of a numba family (sigmoid) imports numba
    code = "import sys\nimport fastnn._core as core\ncore.sigmoid_forward\nprint('numba' in sys.modules)"
    assert _run(code) == "True"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_adam_matches_the_reference_update(dtype):
    from fastnn._core import basic, reference

    rng = np.random.default_rng(1)
    shape = (7, 13)
    p, g = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    m, v = rng.standard_normal(shape).astype(dtype), rng.random(shape).astype(dtype)
    for decoupled in (False, True):
        got = [a.copy() for a in (p, m, v)]
        want = [a.copy() for a in (p, m, v)]
        basic.adam_update(got[0], g, got[1], got[2], 1e-2, 0.9, 0.999, 1e-8, 0.1, 3, decoupled)
        reference.adam_update(want[0], g, want[1], want[2], 1e-2, 0.9, 0.999, 1e-8, 0.1, 3, decoupled)
        tol = dict(rtol=1e-6, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-15)
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, **tol)
