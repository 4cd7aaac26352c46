"""The convolution planner: the one place that chooses a route of ``_conv`` for each pass.

``plan_conv2d`` and ``plan_conv_transpose2d`` map a geometry, a dtype, an ISA level and a thread
count to a ``Plan`` of route names (``fastnn._core.routes.ROUTES``), one per pass::

    >>> plan_conv2d((64, 32, 28, 28), (32, 32, 3, 3), 1, 1, "float32", level="avx512", threads=2)
    Plan(forward='winograd', dx='winograd', dw='winograd_dw')

The entry points of ``_conv`` (conv2d_forward, conv2d_backward, conv_transpose2d_forward,
conv_transpose2d_backward) ask ``conv2d``/``conv_transpose2d`` below (the same rules, cached per
geometry) and dispatch on the names. The rules are the measured ones (benchmarks/decisions.md);
``fastnn bench --routes`` times every eligible route of the suite's layers to re-tune them.
The sub-pixel route's variant for each output phase is chosen here too (``subpixel_phases``,
which ``_conv_subpixel.pxi`` asks per call).

Overrides (fastnn._core.tuning): the switches below (``conv_subpixel=False`` ...) and, per pass,
a forced route: ``tuning(conv_forward="im2col_forward/f32")`` (also ``conv_dx``, ``conv_dw``,
``convt_forward``, ``convt_dx``, ``convt_dw``); a forced route the geometry cannot run raises
ValueError naming the eligible ones.

Convolutions with dilation, groups or asymmetric padding run on ``conv_general`` (numba), not
``_conv``: ``conv2d_family`` says which family a layer's geometry takes, and
``plan_conv2d_general`` which of that family's two routes (``GENERAL_ROUTES``) a grouped
convolution runs.

Adding a route: its kernels as a unit ``_conv_<route>.pxi`` (included by ``_conv.pyx``), its
name in ``routes.ROUTES``, a line in the pass's ``_eligible_*`` set here (where it can run) and
in the pass's rule (where it should run), and a branch in the entry point's dispatch on the
name (``_conv.pyx``); a fuzz shape in tests/fuzz/test_fuzz_routes.py.
"""
import collections

from . import tuning as _tuning
from ._checks import conv_out_size

Plan = collections.namedtuple("Plan", "forward dx dw")

# fastnn/_core/_blas.pyx's gemm_threads: a loop of ``work`` multiply-adds runs on one thread
# below this, else on at most one thread per half of it
GEMM_PARALLEL_MIN_WORK = 262144

_FORCE = ("conv_forward", "conv_dx", "conv_dw", "convt_forward", "convt_dx", "convt_dw")


def _route_or_none(value):
    from .routes import ROUTES

    if value is not None and value not in ROUTES:
        raise ValueError(f"tuning: {value!r} is not a route of fastnn._core.routes.ROUTES")
    return value


def _flag(value):
    if not isinstance(value, (bool, int)):
        raise TypeError(f"tuning: expected a bool, got {value!r}")
    return bool(value)


def _tile(value):
    if value not in (None, 2, 4):
        raise ValueError(f"tuning: conv_winograd_tile must be None, 2 or 4, got {value!r}")
    return value


def _mode(value):
    if value not in (0, 1, 2):
        raise ValueError(f"tuning: expected 0, 1 or 2, got {value!r}")
    return int(value)


for _name in _FORCE:
    _tuning.register(_name, None, "force this pass's route (a name of routes.ROUTES; None: the "
                     "planner's choice); refused where the geometry cannot run it",
                     _route_or_none)
for _name, _default, _meaning, _check in (
    ("conv_s1_implicit", True, "stride-1 same-width float32 forwards on the s1 routes", _flag),
    ("conv_s1_widen", True, "stride-1 forwards wider than x (padding >= K-1) on s1_widened", _flag),
    ("conv_s1_across_samples", 1, "s1 panels across samples: 1 where a sample's ragged last "
     "panel wastes over 5% of the FMAs, 2 always, 0 never", _mode),
    ("conv_strided_implicit", True, "strided float32 forwards on the implicit strided routes "
     "(direct_s2_forward at stride 2 with >= 32 output channels, else strided_gathered from "
     "C*KH*KW >= 32)", _flag),
    ("conv_strided_force", False, "strided_gathered for every shape it runs (C*KH*KW < 32 "
     "too)", _flag),
    ("convt_dx_strided", True, "conv_transpose2d's dx on the implicit strided routes (else "
     "fused with dW in one im2col pass)", _flag),
    ("conv_direct_s2", True, "stride-2 forwards with >= 32 channels on the direct kernel", _flag),
    ("conv_direct_s2_per_sample", True, "direct_s2_forward's tasks a sample each when the batch "
     "gives every thread 2 (else /batch)", _flag),
    ("conv_implicit_dw", True, "float32 weight gradients on implicit_dw where measured faster "
     "(O >= 64, a kernel at least the stride)", _flag),
    ("conv_implicit_dw_force", False, "implicit_dw for every shape it runs", _flag),
    ("conv_direct_dw", True, "stride-2 weight gradients on direct_s2_dw (>= 64 output channels, "
     "or >= 32 on one thread; a kernel at least the stride)", _flag),
    ("conv_side_by_side", True, "a strided conv's sub-pixel dx and implicit dW in one pool of "
     "tasks (subpixel/beside_dw)", _flag),
    ("conv_dwt_s1", True, "stride-1 same-width float32 weight gradients on dwt_s1", _flag),
    ("conv_subpixel", True, "strided float32 backward-data passes on the sub-pixel route where "
     "measured faster (C >= 16, N*OH*OW >= 512, a kernel at least the stride)", _flag),
    ("conv_subpixel_force", False, "the sub-pixel route for every strided shape", _flag),
    ("conv_subpixel_implicit", True, "sub-pixel phases as wide as dy packed straight from dy "
     "(subpixel_phase/implicit; else through an im2col matrix); the same bits", _flag),
    ("conv_winograd", True, "3x3 stride-1 float32 forwards and dx with >= 16 input and output "
     "channels on the winograd routes (winograd: F(2x2,3x3), winograd/f4: F(4x4,3x3))", _flag),
    ("conv_winograd_small", True, "3x3 stride-1 float32 forwards and dx with few channels "
     "(2..64 in, 16..64 out) on winograd/small (conv_plan._winograd_small)", _flag),
    ("conv_winograd_small4", True, "winograd/small's forwards and dx from 16 input channels on "
     "outputs of 12x12 and more at AVX-512, 8x8 and more (and up to 128 channels) at AVX2, by "
     "F(4x4,3x3) (winograd/small4: winograd/f4's bits; conv_plan._winograd_small4)", _flag),
    ("conv_winograd_tile", None, "the winograd routes' output tile: None the planner's choice "
     "(conv_plan._winograd_choice), 2 F(2x2,3x3), 4 F(4x4,3x3) (fewer multiplies, about 20x "
     "the error; docs/winograd.md)", _tile),
    ("conv_winograd_s2", True, "4x4 stride-2 float32 forwards (and conv_transpose2d's dx) with "
     ">= 16 input and >= 32 output channels on winograd_s2 at AVX2 and AVX-512", _flag),
    ("conv_winograd_s2_dx", True, "4x4 stride-2 float32 backward-data passes (and "
     "conv_transpose2d's forwards) with >= 16 input and >= 32 output channels on winograd_s2_dx "
     "at AVX2 and AVX-512", _flag),
    ("conv_winograd_s2_3x3", True, "3x3 stride-2 float32 forwards and dx (and conv_transpose2d's) "
     "as 4x4 ones with a zero row and column on winograd_s2/3x3 (AVX-512) and "
     "winograd_s2_dx/3x3 (AVX2, AVX-512) where measured faster "
     "(conv_plan._winograd_s2_3x3_rule, _winograd_s2_dx_3x3_rule)",
     _flag),
    ("conv_winograd_dw", True, "3x3 stride-1 float32 weight gradients on winograd_dw where "
     "measured faster (conv_plan._winograd_dw_rule)", _flag),
    ("conv_winograd_s2_dw", True, "4x4 stride-2 float32 weight gradients (conv2d's and "
     "conv_transpose2d's) on winograd_s2_dw at AVX-512 and AVX2 where measured faster "
     "(conv_plan._winograd_s2_dw_rule)", _flag),
    ("conv_dw_nt", True, "im2col weight gradients as G @ col.T (im2col_dw/nt) where measured "
     "faster, else col @ G.T (im2col_dw/tn)", _flag),
):
    _tuning.register(_name, _default, _meaning, _check)


def _k(name):
    return _tuning._python_knobs[name][0]


def gemm_threads(work, threads):
    """_blas.gemm_threads outside a parallel region, for ``threads`` OpenMP threads."""
    if work < GEMM_PARALLEL_MIN_WORK:
        return 1
    return max(1, min(threads, work // (GEMM_PARALLEL_MIN_WORK // 2)))


class _Geometry:
    """conv2d's view of a pass: x (n, c, h, w) -> y (n, o, oh, ow), kernel (kh, kw)."""
    __slots__ = ("n", "c", "h", "w", "o", "kh", "kw", "sh", "sw", "ph", "pw", "oh", "ow",
                 "f32", "level", "kernels", "mk", "threads")

    def __init__(self, n, c, h, w, o, kh, kw, sh, sw, ph, pw, oh, ow, f32, level, threads):
        (self.n, self.c, self.h, self.w, self.o, self.kh, self.kw, self.sh, self.sw, self.ph,
         self.pw, self.oh, self.ow) = n, c, h, w, o, kh, kw, sh, sw, ph, pw, oh, ow
        self.f32, self.level = f32, level
        self.kernels = f32 and level in ("avx2", "avx512")  # the convolution kernels
        self.mk = f32 and level in ("avx2", "avx512")  # the GEMM microkernel
        self.threads = threads

    def nt(self):
        """The threads of a pass of this geometry (all passes do the same work)."""
        g = self
        return gemm_threads(g.n * g.o * g.c * g.kh * g.kw * g.oh * g.ow, g.threads)

    def flipped(self):
        """The stride-1 dx as a forward: dy (n, o, oh, ow) -> dx (n, c, h, w), padding K-1-p."""
        g = self
        return _Geometry(g.n, g.o, g.oh, g.ow, g.c, g.kh, g.kw, 1, 1, g.kh - 1 - g.ph,
                         g.kw - 1 - g.pw, g.h, g.w, g.f32, g.level, g.threads)


# ---- where each route can run ------------------------------------------------------------------

def _im2col_forward(g):
    return "im2col_forward/f32" if g.f32 else "im2col_forward/f64"


def _col2im(g):
    return "col2im/f32" if g.f32 else "col2im/f64"


def _strided_ok(g):
    """The implicit strided routes' limits: kernels up to 32, int32 gather offsets."""
    return (g.kernels and (g.sh > 1 or g.sw > 1) and g.kh <= 32 and g.kw <= 32
            and (32 // max(1, g.oh * g.ow) + 2) * g.c * g.h * g.w < 2 ** 31)


def _winograd_ok(g):
    """The Winograd kernels' geometry: a 3x3 kernel at stride 1, float32, on the microkernel's
    levels (AVX2 and AVX-512)."""
    return g.mk and g.sh == 1 and g.sw == 1 and g.kh == 3 and g.kw == 3 and g.n * g.c > 0


def _winograd_s2_ok(g):
    """The stride-2 Winograd kernels' geometry: a 4x4 kernel at stride 2, float32, at AVX2 or
    AVX-512, x under 2**31 elements (int32 gather offsets)."""
    return (g.f32 and g.level in ("avx2", "avx512") and g.sh == 2 and g.sw == 2 and g.kh == 4
            and g.kw == 4 and g.n * g.c > 0 and g.n * g.c * g.h * g.w < 2 ** 31)


def _winograd_s2_3x3_ok(g):
    """A 3x3 stride-2 convolution the stride-2 Winograd kernels run as a 4x4 one (the weight
    zero-padded, _conv_winograd_s2.pxi's _ws2_as_4x4): float32, AVX2 or AVX-512, x under 2**31
    elements."""
    return (g.f32 and g.level in ("avx2", "avx512") and g.sh == 2 and g.sw == 2 and g.kh == 3
            and g.kw == 3 and g.n * g.c > 0 and g.n * g.c * g.h * g.w < 2 ** 31)


def _ws2_tiles_used(h, w, tile):
    """The share of an h x w grid that its tile x tile tiles cover inside it."""
    return h * w / (tile * tile * (-(-h // tile)) * (-(-w // tile)))


def _winograd_s2_3x3_rule(g):
    """winograd_s2/3x3 (the forward) where measured faster than direct_s2_forward
    (benchmarks/decisions.md): >= 16 input and >= 32 output channels, the 4x4 output tiles
    at least 85% inside the output, and two tiles a side (an output of 7-8) with C*O >= 1024,
    or C >= 64 and O >= 128 up to 16 a side; 100 multiplies a tile against 144 leave little
    for the transforms (smaller outputs, fewer channels: the direct route wins). AVX-512 only:
    at AVX2 direct_s2_forward measured faster on resnet's 16->32 and 32->64 layers."""
    if not (_k("conv_winograd_s2_3x3") and _winograd_s2_3x3_ok(g) and g.level == "avx512"
            and g.c >= 16 and g.o >= 32 and _ws2_tiles_used(g.oh, g.ow, 4) >= 0.85
            and min(g.oh, g.ow) >= 7):
        return False
    return (max(g.oh, g.ow) <= 8 and g.c * g.o >= 1024) or (g.c >= 64 and g.o >= 128
                                                            and max(g.oh, g.ow) <= 16)


def _winograd_s2_dx_3x3_rule(g):
    """winograd_s2_dx/3x3 (conv2d's dx) where measured faster than the sub-pixel dx
    (benchmarks/decisions.md): >= 16 dx and >= 32 dy channels, dx's 8x8 tiles (4x4 in each
    phase) at least 85% inside dx (at 12x12 or 20x20 the partial tiles cost what Winograd
    saves). conv2d's dx with a dW that subpixel/beside_dw shares a pool of tasks with keeps
    that route (_rule_dx: measured faster at 2 threads on resnet's 32->64 layer)."""
    return (_k("conv_winograd_s2_3x3") and _winograd_s2_3x3_ok(g) and g.c >= 16 and g.o >= 32
            and _ws2_tiles_used(g.h, g.w, 8) >= 0.85)


def _winograd_s2_rule(g):
    """winograd_s2 where measured faster than direct_s2_forward (benchmarks/decisions.md): 4x4
    stride 2 with >= 16 input and >= 32 output channels (AVX2 and AVX-512)."""
    return _k("conv_winograd_s2") and _winograd_s2_ok(g) and g.c >= 16 and g.o >= 32


def _winograd_s2_dx_rule(g):
    """winograd_s2_dx where measured faster than the sub-pixel dx (benchmarks/decisions.md):
    the same geometry as _winograd_s2_rule."""
    return _k("conv_winograd_s2_dx") and _winograd_s2_ok(g) and g.c >= 16 and g.o >= 32


def _eligible_forward(g):
    out = {_im2col_forward(g)}
    if _winograd_ok(g):
        out |= {"winograd", "winograd/small", "winograd/f4", "winograd/small4"}
    if _winograd_s2_ok(g):
        out.add("winograd_s2")
    if _winograd_s2_3x3_ok(g):
        out.add("winograd_s2/3x3")
    if g.kernels and g.sh == 1 and g.sw == 1 and g.kh <= 32 and g.kw <= 32:
        if g.ow == g.w:
            out |= {"s1_implicit", "s1_across_samples"}
        elif g.ow > g.w and g.pw >= g.kw - 1 and g.n * g.c * g.h * g.w > 0:
            out.add("s1_widened")
    if _strided_ok(g):
        out.add("strided_gathered")
        if g.sh == 2 and g.sw == 2 and g.o >= 32:
            out |= {"direct_s2_forward/per_sample", "direct_s2_forward/batch"}
    return out


def _implicit_dw_ok(g):
    return g.kernels and g.c * g.h * g.w < 2 ** 31 and 16 * g.oh * g.ow < 2 ** 31


def _dwt_s1_ok(g):
    return (g.kernels and g.sh == 1 and g.sw == 1 and g.ow == g.w and g.kh <= 32 and g.kw <= 32
            and g.c * g.kh * g.kw >= 8 and g.o >= 16 and g.c * g.h * g.w < 2 ** 31)


def _eligible_dw(g):
    out = {"im2col_dw/nt", "im2col_dw/tn"} if g.mk else {"im2col_dw/blas"}
    if _winograd_ok(g):
        out.add("winograd_dw")
    if _winograd_s2_ok(g):
        out.add("winograd_s2_dw")
    if _dwt_s1_ok(g):
        out.add("dwt_s1/rows")
        if g.nt() > 1 and g.n >= g.nt():
            out.add("dwt_s1/samples")
    if _implicit_dw_ok(g):
        out |= {"implicit_dw/panels", "implicit_dw/pixels"}
        if g.sh == 2 and g.sw == 2 and g.o >= 32:
            out.add("direct_s2_dw")
    return out


def _subpixel_ok(g):
    return g.kernels and (g.sh > 1 or g.sw > 1)


def _beside_ok(g, dw):
    """The sub-pixel dx can share its pool of tasks with dW's panel groups."""
    nt = g.nt()
    return (nt > 1 and dw in ("direct_s2_dw", "implicit_dw/panels")
            and g.c * g.kh * g.kw >= 32 * nt)


def _eligible_dx(g, dw):
    out = {_col2im(g)}
    if g.kernels and g.sh == 1 and g.sw == 1 and g.ph < g.kh and g.pw < g.kw:
        out |= _eligible_forward(g.flipped())
    elif g.sh == 1 and g.sw == 1 and g.ph < g.kh and g.pw < g.kw and _winograd_ok(g.flipped()):
        out |= {"winograd", "winograd/small", "winograd/f4", "winograd/small4"}
    if _winograd_s2_ok(g):
        out.add("winograd_s2_dx")
    if _winograd_s2_3x3_ok(g):
        out.add("winograd_s2_dx/3x3")
    if _subpixel_ok(g):
        out.add("subpixel")
        if dw is not None and _beside_ok(g, dw):
            out.add("subpixel/beside_dw")
    return out


# ---- the rules ---------------------------------------------------------------------------------

def s1_layout(p):
    """s1_across_samples or s1_implicit for a stride-1 forward of p = OH*W columns a sample:
    across samples where a sample's ragged last 32-column panel wastes over 5% of the FMAs."""
    mode = _k("conv_s1_across_samples")
    return "s1_across_samples" if mode == 2 or (mode == 1 and 20 * ((32 - p % 32) % 32) > p) \
        else "s1_implicit"


def _strided_route(g):
    """A strided forward that takes the implicit strided routes, or None: the direct kernel at
    stride 2 with >= 32 output channels however shallow the GEMM (C*KH*KW) where the kernel
    covers the stride, the gathered panels from C*KH*KW >= 32 (benchmarks/decisions.md; a
    kernel smaller than the stride, as a 1x1 stride-2 projection, reads a quarter of x: the
    direct kernel's padded copy reads all of it)."""
    if not (_k("conv_strided_implicit") and _strided_ok(g)):
        return None
    if _k("conv_direct_s2") and g.sh == 2 and g.sw == 2 and g.o >= 32 and g.kh >= 2 \
            and g.kw >= 2:
        per_sample = _k("conv_direct_s2_per_sample") and g.n >= 2 * g.nt()
        return "direct_s2_forward/per_sample" if per_sample else "direct_s2_forward/batch"
    if _k("conv_strided_force") or g.c * g.kh * g.kw >= 32:
        return "strided_gathered"
    return None


def _winograd_choice(g):
    """The Winograd route of a forward (or dx) the Winograd routes may take, or None: the knob
    conv_winograd_tile forces the general kernel's tile (F(2x2,3x3) winograd, F(4x4,3x3)
    winograd/f4); else F(4x4,3x3) only where it measured clearly faster (its error is about 20
    times F(2x2,3x3)'s), winograd/small for few channels, winograd from 16 channels each side
    (benchmarks/decisions.md). Where F(4x4,3x3) and winograd/small both apply, F(4x4,3x3) at
    the AVX-512 level from 32 channels each side; winograd/small measured faster at 16 channels
    and at the AVX2 level. Before both: winograd/small4 (F(4x4,3x3) on winograd/small's
    kernel) where _winograd_small4 takes it."""
    general = g.c >= 16 and g.o >= 16
    tile = _k("conv_winograd_tile")
    if general and tile is not None:
        return "winograd/f4" if tile == 4 else "winograd"
    if _winograd_small4(g):
        return "winograd/small4"
    if general and _f4_pays(g) and (g.level == "avx512" and min(g.c, g.o) >= 32
                                    or not _winograd_small(g)):
        return "winograd/f4"
    if _winograd_small(g):
        return "winograd/small"
    return "winograd" if general else None


def _f4_pays(g):
    """F(4x4,3x3) measured at least 7% faster than F(2x2,3x3) (benchmarks/decisions.md): at the
    AVX-512 level on outputs of 12x12 and more (on 8x8 its transforms and edges cost what its
    multiplies save); at the AVX2 level on outputs of 16x16 and more with 32 channels or more
    each side (fewer channels: the transforms, heavier on 16 registers, take most of the gain)."""
    if g.level == "avx512":
        return min(g.oh, g.ow) >= 12
    return min(g.oh, g.ow) >= 16 and min(g.c, g.o) >= 32


def _rule_forward(g, winograd=True):
    """The forward's route (``winograd`` False: the exact route the Winograd route falls back to
    when its outputs are not finite)."""
    if winograd and _k("conv_winograd") and _winograd_ok(g):
        route = _winograd_choice(g)
        if route is not None:
            return route
    if winograd and _winograd_s2_rule(g):
        return "winograd_s2"
    if winograd and _winograd_s2_3x3_rule(g):
        return "winograd_s2/3x3"
    if _k("conv_s1_implicit") and g.kernels and g.sh == 1 and g.sw == 1 and g.kh <= 32 \
            and g.kw <= 32 and (g.level != "avx2" or g.o >= 8):
        if _k("conv_s1_widen") and g.ow > g.w and g.pw >= g.kw - 1 and g.n * g.c * g.h * g.w > 0:
            return "s1_widened"
        if g.ow == g.w:
            return s1_layout(g.oh * g.ow)
    return _strided_route(g) or _im2col_forward(g)


# winograd/small takes the Winograd forwards with at most this many input and output channels
WINOGRAD_SMALL_MAX_CHANNELS = 64
# winograd/small4 at the AVX2 level: up to this many (the general routes win at 256)
WINOGRAD_SMALL4_MAX_CHANNELS_AVX2 = 128


def _winograd_small(g):
    """A Winograd forward (or dx) on winograd/small: few channels, where the general route's
    16 GEMMs a block are tiny and its panels go through memory; from 2 input channels (the
    exact routes win at 1) and 16 output channels (benchmarks/decisions.md)."""
    return (_k("conv_winograd_small") and 2 <= g.c <= WINOGRAD_SMALL_MAX_CHANNELS
            and 16 <= g.o <= WINOGRAD_SMALL_MAX_CHANNELS)


def _winograd_small4(g):
    """winograd/small's few channels by F(4x4,3x3) (winograd/small4, the bits of winograd/f4)
    at the AVX-512 and AVX2 levels, where it measured faster than winograd/small and
    winograd/f4 (benchmarks/decisions.md): from 16 input channels (fewer: the 6x6 transforms
    cost what the multiplies save) on outputs of 12x12 and more at AVX-512 (8x8: the edges and
    transforms cost what the multiplies save); at AVX2 (a CPU with AVX2 alone) from 8x8 outputs
    and, ahead of the general routes, up to WINOGRAD_SMALL4_MAX_CHANNELS_AVX2 channels each
    side where the batch gives at least 128 tiles (fewer: the weight transform, C*O filters a
    call, costs what the tiles save)."""
    if not (_k("conv_winograd_small4") and _k("conv_winograd_small") and g.c >= 16
            and g.o >= 16):
        return False
    if g.level == "avx512":
        return _winograd_small(g) and min(g.oh, g.ow) >= 12
    if g.level != "avx2" or min(g.oh, g.ow) < 8:
        return False
    tiles = g.n * -(-g.oh // 4) * -(-g.ow // 4)
    return _winograd_small(g) or (max(g.c, g.o) <= WINOGRAD_SMALL4_MAX_CHANNELS_AVX2
                                  and tiles >= 128)


# winograd_dw's chunks of tiles: at most this many, their 16*C*O float32 sums at most this big
WINOGRAD_DW_MAX_CHUNKS = 8
WINOGRAD_DW_PARTS_BYTES = 4 << 20


def winograd_dw_blocks(n, c, o, oh, ow):
    """(tiles, tiles per block, tiles per chunk, chunks) of winograd_dw for dy (n, o, oh, ow) and
    c input channels: a block's transforms (64*(C+O) bytes a tile) stay about 512 KB, in L2;
    the chunks (the threads' tasks, summed in order) depend on the geometry only, so the bits
    do not depend on the thread count."""
    ntiles = n * ((oh + 1) // 2) * ((ow + 1) // 2)
    kc = max(32, min(256, 8192 // (c + o) // 16 * 16))
    most = max(1, min(WINOGRAD_DW_MAX_CHUNKS, WINOGRAD_DW_PARTS_BYTES // (64 * c * o)))
    chunk = (ntiles + most - 1) // most
    chunk = max(kc, (chunk + kc - 1) // kc * kc)  # whole blocks
    return ntiles, kc, chunk, (ntiles + chunk - 1) // chunk


def winograd_s2_block(n, c, o, oh, ow):
    """Tiles per task of winograd_s2 (a multiple of 16): WINOGRAD_S2_BLOCK, fewer where the
    batch's tiles would not give every task of two threads one."""
    ntiles = n * ((oh + 3) // 4) * ((ow + 3) // 4)
    return max(16, min(WINOGRAD_S2_BLOCK, (ntiles + 31) // 32 * 16))


# winograd_s2's tiles per task: its 25 GEMMs' N (a multiple of the microkernel's 32 columns)
WINOGRAD_S2_BLOCK = 64


def _winograd_dw_rule(g):
    """conv2d's 3x3 stride-1 float32 dW on winograd_dw: where measured faster than dwt_s1
    (benchmarks/decisions.md), with a chunk of tiles for every thread (wide layers, C*O over
    32768 at 2 threads, have fewer: dwt_s1 splits them)."""
    return (_k("conv_winograd_dw") and _winograd_ok(g) and g.c >= 16 and g.o >= 16
            and winograd_dw_blocks(g.n, g.c, g.o, g.oh, g.ow)[3] >= g.nt())


# winograd_s2_dw's chunks of tiles: at least this many tiles each (each chunk's partial sums are
# written and read once more), at most this many chunks, their 25*4C*O float32 sums at most this
# big; its blocks of tiles (the GEMMs' depth)
WINOGRAD_S2_DW_MIN_CHUNK = 512
WINOGRAD_S2_DW_MAX_CHUNKS = 8
WINOGRAD_S2_DW_PARTS_BYTES = 8 << 20
WINOGRAD_S2_DW_BLOCK = 64


def winograd_s2_dw_blocks(n, c, o, oh, ow):
    """(tiles, tiles per block, tiles per chunk, chunks) of winograd_s2_dw for dy (n, o, oh, ow)
    and c input channels (4x4 tiles of dy): the chunks (two tasks each, summed in order)
    depend on the geometry only, so the bits do not depend on the thread count."""
    tpi = ((oh + 3) // 4) * ((ow + 3) // 4)
    ntiles = n * tpi
    kc = WINOGRAD_S2_DW_BLOCK
    bt = kc // tpi * tpi if tpi <= kc else kc  # the kernel's blocks: whole samples where they fit
    most = max(1, min(WINOGRAD_S2_DW_MAX_CHUNKS, WINOGRAD_S2_DW_PARTS_BYTES // (400 * c * o),
                      ntiles // WINOGRAD_S2_DW_MIN_CHUNK))
    chunk = (ntiles + most - 1) // most
    chunk = max(bt, (chunk + bt - 1) // bt * bt)  # whole blocks
    return ntiles, kc, chunk, (ntiles + chunk - 1) // chunk


def _winograd_s2_dw_rule(g):
    """The 4x4 stride-2 float32 dW (conv2d's, and conv_transpose2d's with x and dy exchanged) on
    winograd_s2_dw: where measured faster than direct_s2_dw (benchmarks/decisions.md), >= 16
    input and >= 32 output channels, with a task for every thread (two per chunk of tiles);
    wider layers (a chunk's 25*4C*O sums over WINOGRAD_S2_DW_PARTS_BYTES, measured on none)
    keep the direct route."""
    return (_k("conv_winograd_s2_dw") and _winograd_s2_ok(g) and g.c >= 16 and g.o >= 32
            and 400 * g.c * g.o <= WINOGRAD_S2_DW_PARTS_BYTES
            and 2 * winograd_s2_dw_blocks(g.n, g.c, g.o, g.oh, g.ow)[3] >= g.nt())


def _rule_dw(g, dwt=True, winograd=True):
    """conv2d's dW (``dwt``: dwt_s1 or winograd_dw may take it; conv_transpose2d's dW never
    does; ``winograd`` False: the exact route winograd_dw or winograd_s2_dw falls back to)."""
    nt = g.nt()
    if winograd and _winograd_s2_dw_rule(g):
        return "winograd_s2_dw"
    if dwt and winograd and _winograd_dw_rule(g):
        return "winograd_dw"
    if dwt and _k("conv_dwt_s1") and _dwt_s1_ok(g):
        # threads on samples whenever the batch gives each one: each packs only its own
        # samples' dy (on rows every thread packs all of it)
        return "dwt_s1/samples" if nt > 1 and g.n >= nt else "dwt_s1/rows"
    if _k("conv_implicit_dw") and _implicit_dw_ok(g):
        k, force = g.c * g.kh * g.kw, _k("conv_implicit_dw_force")
        # a kernel smaller than the stride reads a quarter of x or less: im2col gathers just that
        # (the direct route pads all of it); below 64 output channels the direct route pays on
        # one thread only (benchmarks/decisions.md)
        covers = g.kh >= g.sh and g.kw >= g.sw
        if _k("conv_direct_dw") and g.sh == 2 and g.sw == 2 and g.o >= 32 and (k + 7) // 8 >= nt \
                and (force or (covers and (g.o >= 64 or nt == 1))):
            return "direct_s2_dw"
        if force or (covers and g.o >= 64):
            return "implicit_dw/pixels" if nt > (k + 31) // 32 else "implicit_dw/panels"
    if not g.mk:
        return "im2col_dw/blas"
    # col @ G.T (tn) only at the AVX-512 level where O = 32 fills its panels; at AVX2 G @ col.T
    # measured as fast or faster at O = 32 too (benchmarks/decisions.md)
    nt = g.o >= 64 or g.o % 32 != 0 or g.level != "avx512"
    return "im2col_dw/nt" if _k("conv_dw_nt") and nt else "im2col_dw/tn"


def _avx2_s1_dx(g):
    """The AVX2 level's stride-1 dx as a forward only where it measured faster than col2im: 12
    channels of dx or more (benchmarks/decisions.md: its tiles lack the AVX-512 level's
    unpacked panel for 5-8 rows; its s1 forwards need 8 output channels, _rule_forward)."""
    return g.c >= 12


def _subpixel_pays(g):
    """A strided backward-data pass dy (n, o, oh, ow) -> (n, c, h, w) by phases where C >= 16
    (the phase GEMM's rows fill the 8-row tile), N*OH*OW >= 512 (the weight reshuffle and ragged
    panels are paid back) and the kernel is at least the stride (phases no tap reaches are zeros
    written twice: col2im measured faster); benchmarks/decisions.md."""
    return _k("conv_subpixel") and _subpixel_ok(g) and (_k("conv_subpixel_force") or (
        g.c >= 16 and g.n * g.oh * g.ow >= 512 and g.kh >= g.sh and g.kw >= g.sw))


def _rule_dx(g, dw):
    if g.sh == 1 and g.sw == 1 and g.ph < g.kh and g.pw < g.kw:
        flipped = _rule_forward(g.flipped())
        if flipped.startswith("winograd") or (g.kernels and (g.level != "avx2" or _avx2_s1_dx(g))):
            return flipped
    if _winograd_s2_dx_rule(g):
        return "winograd_s2_dx"
    beside = _k("conv_side_by_side") and dw is not None and _beside_ok(g, dw)
    if _winograd_s2_dx_3x3_rule(g) and not (beside and _subpixel_pays(g)):
        return "winograd_s2_dx/3x3"
    if _subpixel_pays(g):
        if _k("conv_side_by_side") and dw is not None and _beside_ok(g, dw):
            return "subpixel/beside_dw"
        return "subpixel"
    return _col2im(g)


def _phase_taps(k, s, r):
    """Kernel taps r, r + s, ... below k."""
    return (k - r + s - 1) // s if r < k else 0


def _rule_phase(o, ow, ju, jv, wb):
    """The sub-pixel route's variant for a phase with ju x jv taps and wb columns of dx from dy
    (n, o, oh, ow): zeros where no tap reaches it; packed straight from dy where it is as wide
    as dy (benchmarks/decisions.md); else through a stride-1 im2col."""
    if o * ju * jv == 0:
        return "subpixel_phase/no_taps"
    if _k("conv_subpixel_implicit") and wb == ow and ju <= 32 and jv <= 32:
        return "subpixel_phase/implicit"
    return "subpixel_phase/im2col"


def subpixel_phases(o, oh, ow, kh, kw, sh, sw, ph, pw, h, w):
    """The variant (a ``subpixel_phase/*`` route) of each output phase (a, b) of the sub-pixel
    route's pass dy (n, o, oh, ow) -> dx (n, c, h, w), kernel (kh, kw), in phase order a*sw + b;
    None for a phase with no rows or columns of dx. The .pxi runs and traces exactly these."""
    key = ("p", o, oh, ow, kh, kw, sh, sw, ph, pw, h, w, _tuning.generation)
    phases = _cache.get(key)
    if phases is None:
        if len(_cache) > 4096:
            _cache.clear()
        out = []
        for a in range(sh):
            ha, ju = (h - a + sh - 1) // sh, _phase_taps(kh, sh, (a + ph) % sh)
            for b in range(sw):
                wb, jv = (w - b + sw - 1) // sw, _phase_taps(kw, sw, (b + pw) % sw)
                out.append(_rule_phase(o, ow, ju, jv, wb) if ha > 0 and wb > 0 else None)
        phases = _cache[key] = tuple(out)
    return phases


def _choose(knob, rule, eligible, what):
    forced = _k(knob)
    if forced is None:
        return rule
    if forced not in eligible:
        raise ValueError(f"tuning({knob}={forced!r}): not eligible for {what}; eligible: "
                         f"{sorted(eligible)}")
    return forced


# ---- the planner -------------------------------------------------------------------------------

_cache = {}


def _level(level):
    if level is None:
        from . import isa

        return isa.LEVEL
    return level


def _threads(threads):
    if threads is None:
        from . import threads as _th

        return _th.get_num_threads()
    return threads


def conv2d(n, c, h, w, o, kh, kw, sh, sw, ph, pw, oh, ow, f32, need_dw, level, threads):
    """The Plan of conv2d x (n, c, h, w) -> (n, o, oh, ow) (``need_dw``: dW is computed with
    dx, which may share its threads), cached per arguments and tuning state."""
    key = ("c", n, c, h, w, o, kh, kw, sh, sw, ph, pw, oh, ow, f32, need_dw, level, threads,
           _tuning.generation)
    plan = _cache.get(key)
    if plan is None:
        if len(_cache) > 4096:
            _cache.clear()
        g = _Geometry(n, c, h, w, o, kh, kw, sh, sw, ph, pw, oh, ow, f32, level, threads)
        what = f"conv2d {(n, c, h, w)} -> {(n, o, oh, ow)} kernel {(kh, kw)} stride {(sh, sw)} " \
               f"padding {(ph, pw)} {'float32' if f32 else 'float64'} at {level}"
        forward = _choose("conv_forward", _rule_forward(g), _eligible_forward(g), what)
        dw = _choose("conv_dw", _rule_dw(g), _eligible_dw(g), what)
        dx = _choose("conv_dx", _rule_dx(g, dw if need_dw else None),
                     _eligible_dx(g, dw if need_dw else None), what)
        plan = _cache[key] = Plan(forward, dx, dw)
    return plan


def exact_forward(n, c, h, w, o, kh, kw, sh, sw, ph, pw, oh, ow, f32, level, threads):
    """The forward route of this geometry other than winograd(_s2)(/3x3): where a Winograd route met a
    NaN or infinite output, the call is recomputed there (a non-finite input then reaches only
    the outputs whose window holds it)."""
    return _rule_forward(_Geometry(n, c, h, w, o, kh, kw, sh, sw, ph, pw, oh, ow, f32, level,
                                   threads), winograd=False)


def exact_dw(n, c, h, w, o, kh, kw, sh, sw, ph, pw, oh, ow, f32, level, threads):
    """conv2d's dW route other than winograd_dw (where its taps came out NaN or infinite)."""
    return _rule_dw(_Geometry(n, c, h, w, o, kh, kw, sh, sw, ph, pw, oh, ow, f32, level,
                              threads), winograd=False)


def exact_dw_convt(n, cin, h, w, cout, kh, kw, sh, sw, ph, pw, oh, ow, f32, level, threads):
    """conv_transpose2d's dW route other than winograd_s2_dw (where its taps came out NaN or
    infinite)."""
    return _rule_dw(_Geometry(n, cout, oh, ow, cin, kh, kw, sh, sw, ph, pw, h, w, f32, level,
                              threads), dwt=False, winograd=False)


def _is_pixel_transpose(n, h, w, kh, kw, ph, pw, oh, ow):
    return h == 1 and w == 1 and ph == 0 and pw == 0 and oh == kh and ow == kw and n > 0


def conv_transpose2d(n, cin, h, w, cout, kh, kw, sh, sw, ph, pw, oh, ow, f32, level, threads):
    """The Plan of conv_transpose2d x (n, cin, h, w) -> (n, cout, oh, ow), cached."""
    key = ("t", n, cin, h, w, cout, kh, kw, sh, sw, ph, pw, oh, ow, f32, level, threads,
           _tuning.generation)
    plan = _cache.get(key)
    if plan is None:
        if len(_cache) > 4096:
            _cache.clear()
        what = f"conv_transpose2d {(n, cin, h, w)} -> {(n, cout, oh, ow)} kernel {(kh, kw)} " \
               f"stride {(sh, sw)} padding {(ph, pw)} {'float32' if f32 else 'float64'} at {level}"
        if _is_pixel_transpose(n, h, w, kh, kw, ph, pw, oh, ow):
            # one dense GEMM per pass: the only route planned for this geometry
            for knob in ("convt_forward", "convt_dx", "convt_dw"):
                _choose(knob, "pixel_transpose", {"pixel_transpose"}, what)
            plan = _cache[key] = Plan("pixel_transpose", "pixel_transpose", "pixel_transpose")
            return plan
        # the forward is conv2d's dx of out (n, cout, oh, ow) -> x; dx and dW are conv2d's
        # forward and dW of dy (n, cout, oh, ow) -> x's grid with weight (cin, cout, kh, kw)
        g = _Geometry(n, cout, oh, ow, cin, kh, kw, sh, sw, ph, pw, h, w, f32, level, threads)
        if _winograd_s2_dx_rule(g):
            rule_fwd = "winograd_s2_dx"
        elif _winograd_s2_dx_3x3_rule(g):
            rule_fwd = "winograd_s2_dx/3x3"
        elif _subpixel_pays(g):
            rule_fwd = "subpixel"
        else:
            rule_fwd = _col2im(g)
        eligible_fwd = _eligible_convt_forward(g)
        forward = _choose("convt_forward", rule_fwd, eligible_fwd, what)
        rule_dx = (("winograd_s2" if _winograd_s2_rule(g) else None)
                   or ("winograd_s2/3x3" if _winograd_s2_3x3_rule(g) else None)
                   or (_k("convt_dx_strided") and _strided_route(g)) or _im2col_forward(g))
        eligible_dx = {r for r in _eligible_forward(g) if not r.startswith("s1_")}
        dx = _choose("convt_dx", rule_dx, eligible_dx, what)
        dw = _choose("convt_dw", _rule_dw(g, dwt=False), _eligible_dw_convt(g), what)
        plan = _cache[key] = Plan(forward, dx, dw)
    return plan


def _eligible_convt_forward(g):
    """conv_transpose2d's forward: conv2d's dx routes of g that take a bias."""
    return ({_col2im(g)} | ({"subpixel"} if _subpixel_ok(g) else set())
            | ({"winograd_s2_dx"} if _winograd_s2_ok(g) else set())
            | ({"winograd_s2_dx/3x3"} if _winograd_s2_3x3_ok(g) else set()))


def _eligible_dw_convt(g):
    return {r for r in _eligible_dw(g) if not r.startswith("dwt_s1") and r != "winograd_dw"}


# ---- for tests and tools -----------------------------------------------------------------------

def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def plan_conv2d(x_shape, w_shape, stride=1, padding=0, dtype="float32", level=None,
                threads=None, need_dw=True):
    """The Plan of conv2d of x (N, C, H, W) with weight (O, C, KH, KW) at ``level`` (default:
    the one in use) on ``threads`` OpenMP threads (default: fastnn.get_num_threads())."""
    n, c, h, w = x_shape
    o, _, kh, kw = w_shape
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    return conv2d(n, c, h, w, o, kh, kw, sh, sw, ph, pw, conv_out_size(h, kh, sh, ph), conv_out_size(w, kw, sw, pw),
                  str(dtype) == "float32", need_dw, _level(level), _threads(threads))


def plan_conv_transpose2d(x_shape, w_shape, stride=1, padding=0, output_padding=0,
                          dtype="float32", level=None, threads=None):
    """The Plan of conv_transpose2d of x (N, Cin, H, W) with weight (Cin, Cout, KH, KW)."""
    n, cin, h, w = x_shape
    _, cout, kh, kw = w_shape
    (sh, sw), (ph, pw), (oph, opw) = _pair(stride), _pair(padding), _pair(output_padding)
    oh, ow = (h - 1) * sh - 2 * ph + kh + oph, (w - 1) * sw - 2 * pw + kw + opw
    return conv_transpose2d(n, cin, h, w, cout, kh, kw, sh, sw, ph, pw, oh, ow,
                            str(dtype) == "float32", _level(level), _threads(threads))


def eligible(op, pass_, x_shape, w_shape, stride=1, padding=0, output_padding=0,
             dtype="float32", level=None, threads=None, need_dw=True):
    """The routes pass ``pass_`` ("forward", "dx", "dw") of ``op`` ("conv2d",
    "conv_transpose2d") can take for this geometry, sorted (``fastnn bench --routes``);
    ``need_dw``: conv2d's dx is computed with dW (subpixel/beside_dw shares its tasks)."""
    level, threads = _level(level), _threads(threads)
    f32 = str(dtype) == "float32"
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    if op == "conv2d":
        n, c, h, w = x_shape
        o, _, kh, kw = w_shape
        g = _Geometry(n, c, h, w, o, kh, kw, sh, sw, ph, pw, conv_out_size(h, kh, sh, ph),
                      conv_out_size(w, kw, sw, pw), f32, level, threads)
        if pass_ == "forward":
            return sorted(_eligible_forward(g))
        if pass_ == "dw":
            return sorted(_eligible_dw(g))
        return sorted(_eligible_dx(g, _rule_dw(g) if need_dw else None))
    n, cin, h, w = x_shape
    _, cout, kh, kw = w_shape
    oph, opw = _pair(output_padding)
    oh, ow = (h - 1) * sh - 2 * ph + kh + oph, (w - 1) * sw - 2 * pw + kw + opw
    if _is_pixel_transpose(n, h, w, kh, kw, ph, pw, oh, ow):
        return ["pixel_transpose"]
    g = _Geometry(n, cout, oh, ow, cin, kh, kw, sh, sw, ph, pw, h, w, f32, level, threads)
    if pass_ == "forward":
        return sorted(_eligible_convt_forward(g))
    if pass_ == "dw":
        return sorted(_eligible_dw_convt(g))
    return sorted(r for r in _eligible_forward(g) if not r.startswith("s1_"))


# ---- the general family (conv_general.py: dilation, groups, asymmetric padding) -----------------
GENERAL_ROUTES = ("depthwise", "im2col")


def conv2d_family(dilation, groups, pads):
    """"dense" (``_conv``'s routes, planned above) for one group, no dilation and symmetric
    padding ``(top, bottom, left, right)``; "general" (``conv_general``) otherwise."""
    pt, pb, pl, pr = pads
    dense = tuple(dilation) == (1, 1) and groups == 1 and pt == pb and pl == pr
    return "dense" if dense else "general"


def plan_conv2d_general(in_channels, groups):
    """The route of ``conv_general`` for every pass: "depthwise" (direct sliding windows) when
    each group has one input channel, else "im2col" (per sample and group, + BLAS)."""
    return "depthwise" if groups == in_channels else "im2col"

