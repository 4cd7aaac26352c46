"""fastnn's benchmark suite (``python -m benchmarks``; see ``__main__``)."""
# fastnn first: its thread settings (how long idle OpenMP and OpenBLAS workers spin) are read by
# those libraries once, when they load, and numpy loads its OpenBLAS.
import fastnn  # noqa: F401
