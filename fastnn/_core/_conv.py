"""The _conv kernel module of the ISA level fastnn._core.isa chose (compiled from _conv.pyx
into fastnn._core._<level>._conv); importing this puts that module in its place."""
import sys

from . import isa

sys.modules[__name__] = isa.load("_conv")
