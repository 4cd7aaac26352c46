"""Hypothesis profiles: "ci" (quick, the default) and "thorough" (FASTNN_HYPOTHESIS=thorough).

The tests are grouped by room: kernels/ (the compiled core: conv/, recurrent/, elementwise/, and
the GEMM, ISA, thread and AddressSanitizer tests), layers/, model/ (Sequential, graph models,
training, checkpoints, inference, export, distributed), parity/ (against PyTorch), fuzz/, bench/
and apps/ (command line, examples, docs, data sets). The helper modules beside this file
(conv_route_helpers, thread_counts, digit_judge, pictures, mpi_checks) are importable from every room:
pytest puts this directory on sys.path when it loads this file."""
import os
import sys

from hypothesis import HealthCheck, settings

_CI_EXAMPLES = 25
settings.register_profile(
    "ci", max_examples=_CI_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow],
    derandomize=True
)
settings.register_profile(
    "thorough", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("FASTNN_HYPOTHESIS", "ci"))


def scaled_examples(n):
    """``max_examples`` for a test that runs ``n`` examples under the quick "ci" profile: as many
    times more under a larger profile as it has examples ("thorough": 20x), so an explicit count
    does not cap ``FASTNN_HYPOTHESIS=thorough``. Use: ``from conftest import scaled_examples``."""
    return max(n, n * settings().max_examples // _CI_EXAMPLES)

# The benchmark suite lives in benchmarks/ beside tests/. Appended (not prepended) to the path so an
# installed fastnn is still the one under test, never the uncompiled sources of this checkout.
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.append(_REPO_ROOT)

# The files that keep one worker busy a minute or more (the AddressSanitizer build, examples
# trained to their bars, the numba kernels' first compiles, the fuzz suites), longest first as
# measured by --durations in CI: collected first, so that `-n 2 --dist loadfile` hands them out
# first and the short files fill in beside them (longest first balances the workers).
_LONGEST_FIRST = ("kernels/test_asan.py", "apps/test_cli_train.py",
                  "kernels/elementwise/test_numba_kernels.py", "apps/test_examples.py",
                  "model/test_fusion.py", "apps/test_examples_graph.py", "fuzz/test_fuzz.py",
                  "model/test_seq2seq.py", "kernels/conv/test_conv_general.py",
                  "layers/test_layers.py", "kernels/conv/test_subpixel.py",
                  "layers/test_properties.py")


def pytest_configure(config):
    # pytest-xdist (3.6+) reorders --dist loadfile's files by their number of tests unless told
    # not to, which would put the few long tests of _LONGEST_FIRST last
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(session, config, items):
    def rank(item):
        path = item.nodeid.split("::")[0]
        return next((i for i, tail in enumerate(_LONGEST_FIRST) if path.endswith(tail)),
                    len(_LONGEST_FIRST))
    items.sort(key=rank)  # stable: each file keeps its tests' order
