"""The C kernels the .pyx files embed come in two branches: the AVX-512 one (``#if
FNN_MK_AVAILABLE`` / ``__AVX512F__``) and empty stubs for every other build (FASTNN_NO_NATIVE=1,
machines without AVX-512), which the Python side never calls but must still link. A function
declared to Cython and defined only in the AVX-512 branch builds fine on this machine and fails
to import everywhere else (undefined symbol), so every such function needs its stub: checked
here on the sources, without a second build."""
import os
import re

import pytest

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fastnn", "_core")
PYX = sorted(f for f in os.listdir(SRC) if f.endswith(".pyx")) if os.path.isdir(SRC) else []


def extern_blocks(text):
    """[(C code, names declared to Cython)] of each ``cdef extern from *`` block with inline C."""
    blocks = []
    for m in re.finditer(r'^cdef extern from \*:\n    """\n(.*?)\n    """\n((?:    [^\n]*\n|\n)*)', text,
                         re.M | re.S):
        names = re.findall(r"^    [\w \*]*?\b(\w+)\(", m.group(2), re.M)
        blocks.append((m.group(1), names))
    return blocks


def branches(code):
    """[(if-branch, else-branch)] of the code's top-level #if ... #else ... #endif."""
    out, depth, part, cur = [], 0, None, {"if": [], "else": []}
    for line in code.splitlines():
        directive = line.strip()
        if directive.startswith("#if"):
            depth += 1
            if depth == 1:
                part, cur = "if", {"if": [], "else": []}
                continue
        elif directive.startswith("#endif"):
            depth -= 1
            if depth == 0:
                out.append(("\n".join(cur["if"]), "\n".join(cur["else"])))
                part = None
                continue
        elif directive.startswith("#else") and depth == 1:
            part = "else"
            continue
        if part is not None:
            cur[part].append(line)
    return out


def defines(code, name):
    return re.search(r"\b%s\s*\([^;{]*\)\s*\{" % re.escape(name), code, re.S) is not None


@pytest.mark.skipif(not PYX, reason="needs the source tree beside the tests")
@pytest.mark.parametrize("pyx", PYX)
def test_every_avx512_kernel_has_a_stub(pyx):
    with open(os.path.join(SRC, pyx)) as f:
        text = f.read()
    missing = []
    for code, names in extern_blocks(text):
        for fast, stub in branches(code):
            missing += [n for n in names if defines(fast, n) and not defines(stub, n)]
    assert not missing, f"{pyx}: defined only for AVX-512 builds (add a stub): {missing}"


def test_the_check_finds_a_missing_stub():
    text = ('cdef extern from *:\n    """\n    #if FNN_MK_AVAILABLE\n'
            '    static void fnn_a(int n) { work(n); }\n    static void fnn_b(int n) { work(n); }\n'
            '    #else\n    static void fnn_a(int n) {}\n    #endif\n    """\n'
            '    void fnn_a(int n) noexcept nogil\n    void fnn_b(int n) noexcept nogil\n\n')
    (code, names), = extern_blocks(text)
    assert names == ["fnn_a", "fnn_b"]
    (fast, stub), = branches(code)
    assert [n for n in names if defines(fast, n) and not defines(stub, n)] == ["fnn_b"]
