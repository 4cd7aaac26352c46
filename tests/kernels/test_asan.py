"""The compiled core under AddressSanitizer and Cython's bounds checks, in every test run.

The kernels index raw pointers (where Cython's boundscheck has nothing to check) and load and
store the ragged edges of their tiles with AVX-512 masks (which gcc's AddressSanitizer does not
instrument). So a module-scoped fixture builds a copy of the tree (the checkout's own .c/.so
files untouched) with ``FASTNN_BOUNDSCHECK=1``, ``-fsanitize=address`` at ``FASTNN_OPT=-O1``
and ``asan_masked.h`` force-included (every enabled lane of a masked load, store or gather is
first read as a plain, instrumented scalar), preloads gcc's libasan.so and runs against it, each
in a child process:

- valid edge cases (1x1 images, kernel = input size, stride > kernel, padding; float32/float64,
  1 and 2 threads);
- the route-reaching fuzz of test_fuzz_routes.py (the same shapes as its default profile),
  whose routes must again cover every route of the build;
- the small-shape layer fuzz of test_fuzz.py (a quarter of its default examples).

The copy is built for the ISA level the fastnn under test runs (FASTNN_ISA_LEVELS). Any
out-of-bounds read or write into a buffer the process allocated aborts the child with an
AddressSanitizer report, which fails the test. numba kernels are JIT code and not instrumented.
Needs gcc with its libasan (Debian: gcc pulls in libgcc-<v>-dev, which ships it) and Cython (the
test extra): without either the fixture fails, it does not skip. The build takes most of the
time.
"""
import os
import re
import shutil
import subprocess
import sys
import sysconfig

import pytest

# the fuzz suites' cases run again here, under the instrumented build: their room's modules
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fuzz"))
import test_fuzz  # noqa: E402
import test_fuzz_routes  # noqa: E402

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/
REPO = os.path.dirname(HERE)
THOROUGH = os.environ.get("FASTNN_HYPOTHESIS") == "thorough"
ASAN_OPTIONS = "detect_leaks=0:abort_on_error=1"
BUILD_TIMEOUT_S = 1800
# the layer fuzz under AddressSanitizer runs 1/this of test_fuzz.py's examples (the instrumented
# build is several times slower; the route fuzz under it reaches every kernel route in full)
ASAN_LAYER_FUZZ_SHARE = 4


def _libasan():
    """gcc's libasan.so (absolute path), or a pytest failure that says what is missing."""
    try:
        out = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                             text=True, timeout=60).stdout.strip()
    except FileNotFoundError:
        pytest.fail("the AddressSanitizer test needs gcc (and its libasan: Debian's gcc brings it)")
    if not (os.path.isabs(out) and os.path.exists(out)):
        pytest.fail(f"gcc has no libasan.so (gcc -print-file-name=libasan.so gave {out!r}); "
                    "install gcc's AddressSanitizer runtime (Debian: libasan8, with gcc)")
    return out


def _level():
    """The ISA level the fastnn under test runs: the instrumented copy is built for that level
    only (FASTNN_ISA_LEVELS), so it runs the same routes."""
    from fastnn._core import isa

    return isa.LEVEL


def _asan_flags():
    header = os.path.join(HERE, "asan_masked.h")
    return f"-fsanitize=address -fno-omit-frame-pointer -include {header}"


def _build_products(directory, names):
    """What copytree leaves out: built modules and generated C, not the kernels' sources."""
    keep_c = os.path.basename(directory) == "kernels"
    return [n for n in names if n.endswith(".so") or n in ("__pycache__", "build")
            or (n.endswith(".c") and not keep_c)]


class AsanTree:
    """The instrumented copy and how to run Python against it."""

    def __init__(self, root, libasan):
        self.root = str(root)
        self.env = dict(os.environ, PYTHONPATH=self.root, LD_PRELOAD=libasan,
                        ASAN_OPTIONS=ASAN_OPTIONS, FASTNN_MAX_ISA=_level())

    def run(self, args, timeout):
        """A child Python process against the instrumented copy."""
        return subprocess.run([sys.executable, "-X", "faulthandler"] + args, cwd=self.root,
                              env=self.env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def asan_tree(tmp_path_factory):
    libasan = _libasan()
    try:
        import Cython  # noqa: F401
    except ImportError:
        pytest.fail("the AddressSanitizer test builds a copy of the core and needs Cython "
                    "(pip install '.[test]' brings it)")
    copy = tmp_path_factory.mktemp("asan") / "tree"
    copy.mkdir()
    shutil.copy(os.path.join(REPO, "setup.py"), copy)
    shutil.copytree(os.path.join(REPO, "fastnn"), copy / "fastnn", ignore=_build_products)
    flags = _asan_flags()
    env = dict(os.environ, FASTNN_BOUNDSCHECK="1", FASTNN_ISA_LEVELS=_level(), FASTNN_OPT="-O1",
               CFLAGS=(os.environ.get("CFLAGS", "") + " " + flags).strip(),
               LDFLAGS=(os.environ.get("LDFLAGS", "") + " -fsanitize=address").strip())
    build = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-j", "2"],
                           cwd=copy, env=env, capture_output=True, text=True,
                           timeout=BUILD_TIMEOUT_S)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-6000:]
    for module in ("_conv", "_blas", "_recurrent"):
        so = next((copy / "fastnn" / "_core" / f"_{_level()}").glob(f"{module}*.so"))
        symbols = subprocess.run(["nm", "-D", str(so)], capture_output=True, text=True).stdout
        assert "__asan_report" in symbols, f"{so.name} is not instrumented"
    return AsanTree(copy, libasan)


def _passed(proc, what):
    assert proc.returncode == 0, (f"{what} under AddressSanitizer exited with {proc.returncode}"
                                  f" (-6: an AddressSanitizer report):\n{proc.stdout[-2000:]}\n"
                                  f"--- stderr ---\n{proc.stderr[-8000:]}")


# ---- the harness itself -------------------------------------------------------------------
def test_masked_intrinsics_of_the_kernels_are_all_checked():
    """asan_masked.h wraps every masked load/store/gather intrinsic the kernels use (a new one
    would go unchecked: gcc does not instrument them)."""
    used = set()
    core = os.path.join(REPO, "fastnn", "_core")
    kernels = os.path.join(core, "kernels")
    for path in [os.path.join(core, n) for n in os.listdir(core)] + [
            os.path.join(kernels, n) for n in os.listdir(kernels)]:
        if path.endswith((".pyx", ".pxi", ".h", ".pxd", ".c")):
            with open(path) as f:
                used.update(re.findall(r"\b(_mm\d*_mask[z]?_\w*(?:load|store|gather|scatter|"
                                       r"compress|expand)\w*)\b", f.read()))
    with open(os.path.join(HERE, "asan_masked.h")) as f:
        wrapped = set(re.findall(r"#define (_mm\w+)\(", f.read()))
    assert used, "no masked intrinsic found: the pattern is stale"
    unchecked = sorted(used - wrapped)
    assert not unchecked, f"masked intrinsics asan_masked.h does not check: {unchecked}"


def test_an_out_of_bounds_masked_store_is_reported(asan_tree, tmp_path):
    """The canary (asan_canary.c, built with the same flags): a masked store one lane past its
    buffer aborts the child with an AddressSanitizer report; the same store in bounds does not."""
    lib = tmp_path / "canary.so"
    march = {"avx512": ["-march=x86-64-v4"], "avx2": ["-march=x86-64-v3"]}.get(_level(), [])
    build = subprocess.run(["gcc", "-shared", "-fPIC", "-O2", *march, *_asan_flags().split(),
                            f"-I{sysconfig.get_paths()['include']}",
                            os.path.join(HERE, "asan_canary.c"), "-o", str(lib)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-4000:]
    call = ("import ctypes, sys; "
            "print(ctypes.CDLL(sys.argv[1]).fnn_canary_masked_store(40, int(sys.argv[2])))")
    inside = asan_tree.run(["-c", call, str(lib), "24"], timeout=120)
    assert inside.returncode == 0 and inside.stdout.strip() == "1", inside.stderr[-3000:]
    past = asan_tree.run(["-c", call, str(lib), "25"], timeout=120)
    assert past.returncode != 0 and "AddressSanitizer: heap-buffer-overflow" in past.stderr, \
        (past.returncode, past.stdout, past.stderr[-3000:])


# ---- the core under AddressSanitizer ------------------------------------------------------
_EDGE_CASES = r"""
import numpy as np, fastnn as fnn
from fastnn import layers as L
rng = np.random.default_rng(0)
n = 0
for dtype in (np.float32, np.float64):
    for threads in (1, 2):
        fnn.set_num_threads(threads)
        for (h, w, k, s, p) in [(1, 1, 1, 1, 0), (1, 1, 1, 3, 0), (1, 1, 3, 1, 1), (5, 5, 5, 1, 0),
                                (5, 7, 5, 1, 0), (7, 7, 2, 5, 0), (6, 6, 3, 4, 1), (4, 4, 4, 4, 0),
                                (3, 8, 3, 7, 1), (2, 2, 1, 2, 0)]:
            for batch in (1, 3):
                x = rng.standard_normal((batch, 2, h, w)).astype(dtype)
                for layer in (L.Conv2D(2, 3, k, stride=s, padding=p),
                              L.ConvTranspose2D(2, 3, k, stride=s, padding=min(p, k - 1)),
                              L.MaxPool2D(k, stride=s, padding=min(p, k // 2)),
                              L.AvgPool2D(k, stride=s, padding=min(p, k // 2))):
                    try:
                        layer.astype(dtype)
                        y = layer.forward(x)
                    except ValueError:
                        continue  # an invalid combination, rejected before compiled code
                    dx = layer.backward(np.ones_like(y))
                    assert dx.shape == x.shape and np.isfinite(dx).all()
                    n += 1
            d = L.Dense(h * w, k)
            d.astype(dtype)
            y = d.forward(rng.standard_normal((batch, h * w)).astype(dtype))
            d.backward(np.ones_like(y)); n += 1
print("EDGE CASES", n)
"""


def test_valid_edge_cases_under_asan(asan_tree):
    """1x1 images, kernel = input size, stride > kernel, padding, batch 1 and 3."""
    run = asan_tree.run(["-c", _EDGE_CASES], timeout=600)
    _passed(run, "the edge cases")
    cases = int(re.search(r"EDGE CASES (\d+)", run.stdout).group(1))
    assert cases > 100, f"only {cases} edge cases ran"
    print(f"edge cases under AddressSanitizer: {cases}")


def test_route_fuzz_under_asan_reaches_every_route(asan_tree):
    """test_fuzz_routes.py's cases (its default profile's shapes) against the instrumented
    build: no report, the reference checks pass, and every route of the build is taken."""
    examples = test_fuzz_routes.EXAMPLES * (10 if THOROUGH else 1)
    run = asan_tree.run(test_fuzz_routes.child_args(examples, not THOROUGH),
                        timeout=test_fuzz_routes.TIMEOUT_S * (10 if THOROUGH else 1))
    _passed(run, "the route fuzz")
    cases, taken, _ = test_fuzz_routes.parse_child(run, "the route fuzz under AddressSanitizer")
    missing = test_fuzz_routes.missing_routes(taken)
    assert not missing, f"routes the AddressSanitizer run did not reach: {missing}"
    print(f"route fuzz under AddressSanitizer: {cases} cases, every route reached")


def test_layer_fuzz_under_asan(asan_tree):
    """test_fuzz.py's layer group (small shapes, every mutation) against the instrumented build."""
    examples = test_fuzz.GROUPS["layers"] * (10 if THOROUGH else 1) // ASAN_LAYER_FUZZ_SHARE
    script = os.path.join(HERE, "fuzz", "test_fuzz.py")
    run = asan_tree.run([script, "--group", "layers", "--examples", str(examples)]
                        + ([] if THOROUGH else ["--derandomize"]), timeout=1800)
    _passed(run, "the layer fuzz")
    cases = int(re.findall(r"^FUZZ group=layers cases=(\d+)$", run.stdout, re.M)[-1])
    minimum = test_fuzz.MIN_CASES["layers"] // ASAN_LAYER_FUZZ_SHARE
    assert cases >= minimum, f"only {cases} cases ran (want >= {minimum})"
    print(f"layer fuzz under AddressSanitizer: {cases} cases")
