"""The _basic kernel module of the ISA level fastnn._core.isa chose (compiled from _basic.pyx
into fastnn._core._<level>._basic); importing this puts that module in its place."""
import sys

from . import isa

sys.modules[__name__] = isa.load("_basic")
