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


def test_import_from_a_source_tree_without_built_extensions_says_so(tmp_path):
    # the package's Python files without its compiled modules, as in a fresh source checkout
    import shutil

    source = os.path.dirname(os.path.abspath(fnn.__file__))
    shutil.copytree(source, tmp_path / "fastnn",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    run = subprocess.run([sys.executable, "-c", "import fastnn"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: fastnn's compiled core is not built in"), run.stderr
    assert "source directory" in last and "pip install" in last


def test_import_does_not_load_numba(tmp_path):
    # a fresh interpreter importing the very fastnn under test (installed or built in place)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(fnn.__file__)))
    code = "import sys, fastnn; print('numba' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=package_root)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tmp_path, env=env)
    assert out.stdout.strip() == "False"


def _fresh_interpreter(code, tmp_path, **env_extra):
    """Last stdout line of ``code`` run by a new interpreter importing the fastnn under test
    (``env_extra``: variables to set, or to leave out where the value is None)."""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(fnn.__file__)))
    env = {k: v for k, v in os.environ.items() if k != "FASTNN_NUM_THREADS"}
    env.update(PYTHONPATH=package_root, **env_extra)
    env = {k: v for k, v in env.items() if v is not None}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_fastnn_num_threads_sets_every_pool_at_import(tmp_path):
    code = ("import numpy as np, fastnn, numba; from fastnn._core import _openmp; "
            "from threadpoolctl import threadpool_info; "
            "first = (fastnn.get_num_threads(), _openmp.get_num_threads()); "
            "fastnn._core.sigmoid_forward; fastnn._core.gemm; "
            "blas = sorted({p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas'}); "
            "print(first, _openmp.get_num_threads(), numba.get_num_threads(), blas)")
    assert _fresh_interpreter(code, tmp_path, FASTNN_NUM_THREADS="1") == "(1, 1) 1 1 [1]"


@pytest.mark.parametrize("bad", ["two", "abc", "0", "-3", "1.5"])
def test_invalid_fastnn_num_threads_warns_and_falls_back_to_the_default(tmp_path, bad):
    # a typo in the environment must not make `import fastnn` fail; the warning names the
    # variable and the value, and every pool gets the default (the cores available)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(fnn.__file__)))
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "PYTHONWARNINGS")}
    env.update(PYTHONPATH=package_root, FASTNN_NUM_THREADS=bad)
    code = ("import os, fastnn; from fastnn._core import _openmp; "
            "print(fastnn.get_num_threads(), _openmp.get_num_threads(), "
            "len(os.sched_getaffinity(0)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert "RuntimeWarning" in out.stderr and f"FASTNN_NUM_THREADS={bad!r}" in out.stderr
    ours, openmp, cores = out.stdout.split()
    assert ours == openmp == cores


def test_import_shortens_idle_spinning_unless_the_user_chose(tmp_path):
    # read by libgomp and numpy's OpenBLAS when they load: idle workers of either pool spinning
    # for long after a call slow down the next kernel of the other (threads.py has the numbers)
    code = ("import os, fastnn, numpy; "
            "print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OPENBLAS_THREAD_TIMEOUT'))")
    unset = dict.fromkeys(("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT"))
    assert _fresh_interpreter(code, tmp_path, **unset) == "10000 18"
    assert _fresh_interpreter(code, tmp_path, **dict(unset, OPENBLAS_THREAD_TIMEOUT="25",
                                                     OMP_WAIT_POLICY="PASSIVE")) == "None 25"


def test_numba_pool_leaves_nested_parallelism_off(tmp_path):
    # numba's OpenMP layer turns nesting on for all of libgomp when its pool starts; other OpenMP
    # code in the process (PyTorch) then oversubscribes the cores, so fastnn turns it back off
    code = ("import numpy as np, fastnn; from fastnn._core import _openmp; "
            "x = np.ones(1 << 20, np.float32); out = np.empty_like(x); "
            "fastnn._core.sigmoid_forward(x, out); print(_openmp.get_max_active_levels())")
    assert _fresh_interpreter(code, tmp_path) == "1"


_RUN_A_PARALLEL_NUMBA_KERNEL = (
    "import numpy as np, fastnn, numba; "
    "x = np.ones(1 << 20, np.float32); out = np.empty_like(x); "
    "fastnn._core.sigmoid_forward(x, out); print(numba.threading_layer())")


def test_numba_runs_on_the_openmp_layer_fastnn_controls(tmp_path):
    # numba's own choice depends on what is installed (TBB first); a priority that puts OpenMP
    # last stands for a machine with TBB: numba alone would take the workqueue layer there
    unset = dict.fromkeys(("NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY"))
    assert _fresh_interpreter(_RUN_A_PARALLEL_NUMBA_KERNEL, tmp_path, **unset) == "omp"
    last = dict(unset, NUMBA_THREADING_LAYER_PRIORITY="workqueue tbb omp")
    assert _fresh_interpreter(_RUN_A_PARALLEL_NUMBA_KERNEL, tmp_path, **last) == "omp"


def test_a_threading_layer_the_user_chose_is_kept(tmp_path):
    assert _fresh_interpreter(_RUN_A_PARALLEL_NUMBA_KERNEL, tmp_path,
                              NUMBA_THREADING_LAYER="workqueue") == "workqueue"


def test_set_num_threads_round_trip():
    before = fnn.get_num_threads()
    try:
        fnn.set_num_threads(1)
        assert fnn.get_num_threads() == 1
        from threadpoolctl import threadpool_info

        assert all(p["num_threads"] == 1 for p in threadpool_info() if p["user_api"] == "blas")
        from fastnn._core import _openmp

        assert _openmp.get_num_threads() == 1
        fnn._core.sigmoid_forward  # loading a numba family syncs numba and must keep OpenMP at 1
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


def test_layers_and_models_reach_the_kernels_only_through_the_core_facade():
    """No module of fastnn/layers/, nor model.py, graph.py or losses.py, imports a private
    module of fastnn._core (``_core._x``): their kernels, the whole-layer calls and the shared
    checks come from ``fastnn._core`` itself."""
    import ast

    root = os.path.dirname(fnn.__file__)
    paths = [os.path.join(root, "layers", n) for n in os.listdir(os.path.join(root, "layers"))
             if n.endswith(".py")] + [os.path.join(root, n) for n in ("model.py", "graph.py", "losses.py")]
    private = []
    for path in paths:
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                parts = node.module.split(".")
                names = [a.name for a in node.names]
                if "_core" in parts:
                    after = parts[parts.index("_core") + 1:]
                    if any(p.startswith("_") for p in after) or (
                            not after and any(n.startswith("_") for n in names)):
                        private.append((os.path.basename(path), node.module, names))
            elif isinstance(node, ast.Import):
                private += [(os.path.basename(path), a.name, []) for a in node.names
                            if "._core._" in a.name]
    assert len(paths) > 10 and not private, private


def test_core_facade_tells_a_swapped_kernel_from_its_own():
    from fastnn import _core
    from fastnn._core import reference

    assert _core.compiled("dense_forward") and _core.compiled("lstm_forward")
    own = _core.dense_forward
    _core.dense_forward = reference.dense_forward
    try:
        assert not _core.compiled("dense_forward")
    finally:
        _core.dense_forward = own
    assert _core.compiled("dense_forward")
    assert "lstm_forward_full" not in _core.__all__  # reachable, but not the contract
    assert callable(_core.lstm_forward_full) and callable(_core.lookup_matches)
