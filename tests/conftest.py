"""Hypothesis profiles: "ci" (quick, the default) and "thorough" (FASTNN_HYPOTHESIS=thorough)."""
import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile(
    "thorough", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("FASTNN_HYPOTHESIS", "ci"))
