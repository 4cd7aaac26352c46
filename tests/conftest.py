"""Hypothesis profiles: "ci" (quick, the default) and "thorough" (FASTNN_HYPOTHESIS=thorough)."""
import os
import sys

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile(
    "thorough", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("FASTNN_HYPOTHESIS", "ci"))

# The benchmark suite lives in benchmarks/ beside tests/. Appended (not prepended) to the path so an
# installed fastnn is still the one under test, never the uncompiled sources of this checkout.
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.append(_REPO_ROOT)
