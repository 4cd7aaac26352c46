"""fnn.config() / fnn.show_config(): how this fastnn was built and what it runs on (as
numpy.show_config() and torch.__config__.show() do)."""
import os
import platform
import sys


def config():
    """How this fastnn was built and what it runs on, as a dict.

    Keys: ``version``; ``isa`` (the kernels' instruction-set level in use: ``baseline``,
    ``avx2`` or ``avx512``), ``isa_compiled`` (the levels this build has), ``isa_cpu`` (the
    CPU's best level) and ``isa_max`` (``FASTNN_MAX_ISA``, or None); ``build`` (compiler flags
    per level); ``threads`` (fastnn's count, OpenMP's); ``numba`` (its CPU name and threads
    once imported); ``blas`` (threadpoolctl's info on the loaded BLAS and OpenMP libraries).
    """
    from threadpoolctl import threadpool_info

    from . import __version__
    from ._core import _openmp, isa, threads

    try:
        from ._core import _buildinfo
        build = {"compile_args": list(_buildinfo.COMPILE_ARGS), "isa_flags": dict(_buildinfo.ISA_FLAGS),
                 "boundscheck": _buildinfo.BOUNDSCHECK, "cc": _buildinfo.CC,
                 "cython": _buildinfo.CYTHON}
    except ImportError:  # built before setup.py recorded it
        build = {}
    numba_info = {"imported": "numba" in sys.modules,
                  "cpu_name_env": os.environ.get("NUMBA_CPU_NAME")}
    if "numba" in sys.modules:
        numba = sys.modules["numba"]
        numba_info.update(version=numba.__version__, cpu_name=numba.config.CPU_NAME,
                          num_threads=numba.get_num_threads())
    return {
        "version": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "isa": isa.LEVEL,
        "isa_compiled": isa.compiled_levels(),
        "isa_cpu": isa.cpu_level(),
        "isa_max": isa.max_level(),
        "build": build,
        "threads": {"fastnn": threads.get_num_threads(), "openmp": _openmp.get_num_threads(),
                    "env": os.environ.get("FASTNN_NUM_THREADS")},
        "numba": numba_info,
        "blas": threadpool_info(),
    }


def show_config():
    """Prints :func:`config`, one line per entry."""
    cfg = config()
    for key, value in cfg.items():
        if key == "blas":
            print("blas:")
            for lib in value:
                print(f"  {lib.get('user_api')}: {lib.get('internal_api')} {lib.get('version')} "
                      f"({lib.get('architecture')}, {lib.get('num_threads')} threads): "
                      f"{lib.get('filepath')}")
        elif isinstance(value, dict):
            print(f"{key}:")
            for k, v in value.items():
                print(f"  {k}: {v}")
        else:
            print(f"{key}: {value}")
