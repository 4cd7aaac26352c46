import importlib
import os
import subprocess
import sys

import numpy as np
import pytest

import fastnn as fnn


def test_compiled_core_is_a_real_extension():
    openmp = importlib.import_module("fastnn._core._openmp")
    assert openmp.__file__.endswith((".so", ".pyd")), openmp.__file__


def test_import_does_not_load_numba(tmp_path):
    # a fresh interpreter importing the very fastnn under test (installed or built in place)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(fnn.__file__)))
    code = "import sys, fastnn; print('numba' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=package_root)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tmp_path, env=env)
    assert out.stdout.strip() == "False"


def test_set_num_threads_round_trip():
    before = fnn.get_num_threads()
    try:
        fnn.set_num_threads(1)
        assert fnn.get_num_threads() == 1
        from threadpoolctl import threadpool_info

        assert all(p["num_threads"] == 1 for p in threadpool_info() if p["user_api"] == "blas")
        from fastnn._core import _openmp

        assert _openmp.get_num_threads() == 1
        fnn._core.relu_forward  # loading a numba family syncs numba and must keep OpenMP at 1
        import numba

        assert numba.get_num_threads() == 1
        assert _openmp.get_num_threads() == 1
    finally:
        fnn.set_num_threads(before)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_set_num_threads_rejects_bad_values(bad):
    with pytest.raises((TypeError, ValueError), match="set_num_threads"):
        fnn.set_num_threads(bad)


def test_seed_makes_random_reproducible():
    from fastnn._random import rng

    fnn.seed(3)
    a = rng().standard_normal(5)
    fnn.seed(3)
    np.testing.assert_array_equal(a, rng().standard_normal(5))
