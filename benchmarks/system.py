"""The machine and the measurements around the training steps: machine info, the sgemm peak the
GFLOP/s figures are divided by, thread scaling, cold start and peak memory.

Cold start and memory run in fresh subprocesses (``python -c`` calling :func:`_child_main`), so
nothing the suite has already imported, compiled or allocated leaks into them.
"""
import ctypes
import ctypes.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

import fastnn as fnn

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "amx_tile", "amx_bf16", "asimd", "sve")


# ---- heap -----------------------------------------------------------------------------------------
HEAP_MMAP_THRESHOLD = 32 << 20  # glibc's upper limit for M_MMAP_THRESHOLD on 64-bit
HEAP_TRIM_THRESHOLD = 512 << 20


def steady_heap():
    """Fix glibc malloc's mmap and trim thresholds for the rest of the process; returns them, or
    None where there is no glibc mallopt.

    A step that allocates its activations (PyTorch does, fastnn mostly reuses buffers) gets them
    either from the heap or as fresh zeroed pages from the kernel, and which one depends on what
    the process freed before: glibc moves both thresholds after each large free. Measured on the
    2-core VM: torch's dcgan-d step 21-22 ms timed after fastnn's steps alone, 19-20 ms after the
    NumPy reference step had freed its big arrays (fastnn 20-21 ms either way), so the ratio
    depended on the order the suite ran things in. Fixed thresholds give both libraries the
    no-page-fault steady state of a long training loop, whatever ran first."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return None
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    if mallopt(m_mmap_threshold, HEAP_MMAP_THRESHOLD) != 1 or mallopt(m_trim_threshold, HEAP_TRIM_THRESHOLD) != 1:
        return None
    return {"mmap_threshold": HEAP_MMAP_THRESHOLD, "trim_threshold": HEAP_TRIM_THRESHOLD}


# ---- machine --------------------------------------------------------------------------------------
# (vendor, family, model or None for any) -> core name, for the CPUs the suite has met; lscpu's
# "Model name" of a VM often says only "AMD EPYC"
CPU_CORES = {("AuthenticAMD", 25, None): "Zen 3/Zen 4", ("AuthenticAMD", 26, None): "Zen 5",
             ("GenuineIntel", 6, 143): "Sapphire Rapids", ("GenuineIntel", 6, 207): "Emerald Rapids"}
for _m in (*range(0x10, 0x20), *range(0x60, 0x80), *range(0xA0, 0xB0)):
    CPU_CORES[("AuthenticAMD", 25, _m)] = "Zen 4"


def torch_available():
    """Whether PyTorch imports (absent or broken installs run without it)."""
    try:
        import torch  # noqa: F401
    except Exception:  # noqa: BLE001 - absent or broken install: run without it
        return False
    return True


def layer_bench_setup(parser, argv=None):
    """The common set-up of the per-layer benchmark scripts: adds --repeats/--threads/--no-torch
    to ``parser``, parses ``argv``, applies the thread count and `steady_heap`; returns the
    arguments and whether PyTorch takes part."""
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even when it is importable")
    args = parser.parse_args(argv)
    if args.threads is not None:
        fnn.set_num_threads(args.threads)
    steady_heap()
    return args, not args.no_torch and torch_available()


def _cpuinfo():
    """(model name, flags, {vendor, family, model, stepping}) of the first CPU in /proc/cpuinfo."""
    model, flags, ident = platform.processor() or platform.machine(), set(), {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key in ("model name", "Model") and model in ("", platform.machine(), platform.processor()):
                    model = value
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
                elif key in ("vendor_id", "cpu family", "model", "stepping") and key not in ident:
                    ident[key] = value
    except OSError:
        pass
    cpu = {"vendor": ident.get("vendor_id")}
    for key, name in (("cpu family", "family"), ("model", "model"), ("stepping", "stepping")):
        cpu[name] = int(ident[key]) if ident.get(key, "").isdigit() else None
    cpu["core"] = CPU_CORES.get((cpu["vendor"], cpu["family"], cpu["model"]),
                                CPU_CORES.get((cpu["vendor"], cpu["family"], None)))
    return model, flags, cpu


def cpu_text(machine):
    """'AMD EPYC (family 25, model 17: Zen 4)' from machine_info's fields."""
    ident = machine.get("cpu_id") or {}
    if ident.get("family") is None:
        return machine.get("cpu", "?")
    core = f": {ident['core']}" if ident.get("core") else ""
    return f"{machine.get('cpu', '?')} (family {ident['family']}, model {ident['model']}{core})"


def _cxx_version():
    """The first line of ``c++ --version`` (inductor's C++ codegen needs a compiler), or None."""
    try:
        out = subprocess.run(["c++", "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.splitlines()[0] if out.returncode == 0 and out.stdout else None


def _version(module_name):
    try:
        module = __import__(module_name)
    except Exception:  # noqa: BLE001 - absent or broken: report it as such
        return None
    return getattr(module, "__version__", "unknown")


def _git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info(with_torch=True):
    """CPU, cores, SIMD flags, library versions and the thread pools threadpoolctl sees."""
    from threadpoolctl import threadpool_info

    from fastnn import _core

    _core.gemm  # load the Cython BLAS wrapper (and scipy's BLAS) so threadpoolctl lists it
    _core.relu_forward  # and numba
    model, flags, cpu_id = _cpuinfo()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    versions = {"python": platform.python_version(), "numpy": np.__version__,
                "numba": _version("numba"), "scipy": _version("scipy"),
                "threadpoolctl": _version("threadpoolctl"), "fastnn": fnn.__version__,
                "torch": _version("torch") if with_torch else None}
    pools = [{k: lib.get(k) for k in ("user_api", "internal_api", "version", "num_threads",
                                       "threading_layer", "architecture", "filepath")}
             for lib in threadpool_info()]
    env = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
                                            "OMP_NUM_THREADS", "FASTNN_NUM_THREADS") if os.environ.get(k)}
    return {"cpu": model, "cpu_id": cpu_id, "machine": platform.machine(), "system": platform.platform(),
            "numpy_blas": numpy_blas(), "environment": env, "cxx": _cxx_version() if with_torch else None,
            "logical_cpus": os.cpu_count(), "usable_cpus": usable,
            "flags": [f for f in CPU_FLAGS if f in flags], "versions": versions,
            "fastnn_threads": fnn.get_num_threads(), "thread_pools": pools,
            "load_average": _load_average(), "git_commit": _git_commit(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def _load_average():
    """1-minute load average: other work on the machine makes every number here noisier."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - not Unix
        return None


def numpy_blas():
    """The BLAS numpy's matmul runs on, as threadpoolctl sees it: library, version and the kernel
    family it picked for this CPU (``architecture``, e.g. Haswell = AVX2, SkylakeX = AVX-512),
    plus OPENBLAS_CORETYPE when the environment forces one."""
    from threadpoolctl import threadpool_info

    np.ones((2, 2), np.float32) @ np.ones((2, 2), np.float32)  # numpy's BLAS is loaded
    roots = tuple(os.path.dirname(os.path.abspath(np.__file__)) + tail for tail in (os.sep, ".libs" + os.sep))
    pools = [p for p in threadpool_info()
             if p.get("user_api") == "blas" and os.path.abspath(p.get("filepath") or "").startswith(roots)]
    pool = pools[0] if pools else {}
    return {"library": pool.get("internal_api"), "version": pool.get("version"),
            "architecture": pool.get("architecture"), "filepath": pool.get("filepath"),
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}


def _gemm_contenders(with_torch):
    """name -> (label, make(n) -> a zero-argument float32 n^3 GEMM call, set_threads)."""
    from fastnn._core import _blas

    def numpy_make(n, rng):
        a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
        out = np.empty((n, n), np.float32)
        return lambda: np.matmul(a, b, out=out)

    def fastnn_make(n, rng):
        a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
        out = np.empty((n, n), np.float32)
        return lambda: fnn._core.gemm(a, b, out)

    blas = numpy_blas()
    label = f"numpy.matmul ({blas['library'] or '?'} {blas['version'] or ''}, {blas['architecture'] or '?'} kernel"
    label += f", OPENBLAS_CORETYPE={blas['OPENBLAS_CORETYPE']})" if blas["OPENBLAS_CORETYPE"] else ")"
    mk = _blas._dense_microkernel_active()
    contenders = {
        "numpy": (label, numpy_make, fnn.set_num_threads),
        "fastnn": ("fastnn _core.gemm (" + (f"its {__import__('fastnn').config()['isa']} microkernel" if mk else "scipy's BLAS sgemm") + ")",
                   fastnn_make, fnn.set_num_threads),
    }
    if with_torch:
        import torch

        def torch_make(n, rng):
            a, b = (torch.from_numpy(rng.standard_normal((n, n), dtype=np.float32)) for _ in range(2))
            out = torch.empty((n, n), dtype=torch.float32)
            return lambda: torch.mm(a, b, out=out)

        config = torch.__config__.show()
        lib = "MKL" if "BLAS_INFO=mkl" in config else "its BLAS"
        contenders["torch"] = (f"torch.mm ({lib}, torch {torch.__version__})", torch_make, torch.set_num_threads)
    return contenders


def gemm_peak(sizes=(512, 1024, 2048), repeats=10, with_torch=True):
    """The machine's practical float32 GEMM peak on ``fnn.get_num_threads()`` threads: the best
    GFLOP/s among numpy's matmul, torch.mm (when ``with_torch``) and fastnn's own GEMM on square
    matrices of ``sizes``. Every "% of peak" divides by it, so no GEMM-like work measured in the
    same run can be credited much above 100%.

    The contenders alternate call by call at each size (each timed call after an untimed one of
    its own), best of ``repeats``: a best-of figure, which load from elsewhere can only lower. A
    multithreaded GEMM sharing a core with another busy process collapses (its threads wait for
    each other), so each contender's single-thread rate counts too (n threads can always do
    what one does). The suite measures this at the start and at the end of a run."""
    rng = np.random.default_rng(0)
    threads = fnn.get_num_threads()
    contenders = _gemm_contenders(with_torch)
    by = {name: {} for name in contenders}
    torch_threads = None
    if with_torch:
        import torch

        torch_threads = torch.get_num_threads()
    try:
        for n_threads in sorted({threads, 1}, reverse=True):
            for _, _, set_threads in contenders.values():
                set_threads(n_threads)
            for n in sizes:
                calls = {name: make(n, rng) for name, (_, make, _) in contenders.items()}
                best = {name: float("inf") for name in calls}
                order = list(calls)
                for call in calls.values():
                    call()  # warm-up: thread start, page faults
                for _ in range(repeats):
                    for name in order:
                        calls[name]()
                        best[name] = min(best[name], _timed(calls[name]))
                    order.reverse()
                for name, t in best.items():
                    by[name].setdefault(str(n_threads), {})[str(n)] = 2.0 * n ** 3 / t / 1e9
    finally:
        fnn.set_num_threads(threads)
        if torch_threads is not None:
            import torch

            torch.set_num_threads(torch_threads)
    result = {"contenders": {}, "threads": threads, "sizes": list(sizes)}
    for name, (label, _, _) in contenders.items():
        best_by_threads = {k: max(v.values()) for k, v in by[name].items()}
        result["contenders"][name] = {"label": label, "gflops": max(best_by_threads.values()),
                                      "by_threads": by[name], "best_by_threads": best_by_threads}
    return _with_best(result)


def _with_best(peak):
    """Set ``gflops`` and ``best`` (the winning contender) of a gemm_peak result."""
    winner = max(peak["contenders"], key=lambda k: peak["contenders"][k]["gflops"])
    peak["best"] = winner
    peak["gflops"] = peak["contenders"][winner]["gflops"]
    return peak


def merge_peaks(start, end):
    """The run's peak from its start and end measurements: each contender's better figure."""
    merged = {"contenders": {}, "threads": start["threads"], "sizes": start["sizes"]}
    for name, first in start["contenders"].items():
        last = end["contenders"].get(name, first)
        better = max(first, last, key=lambda c: c["gflops"])
        merged["contenders"][name] = {**better, "start_gflops": first["gflops"], "end_gflops": last["gflops"]}
    merged = _with_best(merged)
    merged["start_gflops"], merged["end_gflops"] = _with_best(start)["gflops"], _with_best(end)["gflops"]
    return merged


def gemm_call(name, n, rng=None):
    """A zero-argument n^3 float32 GEMM of contender ``name`` (numpy, fastnn or torch)."""
    rng = rng or np.random.default_rng(0)
    return _gemm_contenders(name == "torch")[name][1](n, rng)


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ---- thread scaling -------------------------------------------------------------------------------
def thread_scaling(model_names, thread_counts, repeats=10, warmup=2):
    """fastnn step time per thread count, the counts interleaved round by round (one sample of
    each count per round, after one untimed step to wake the pools) so that load from elsewhere
    hits every count alike. The caller's thread count is restored."""
    from .models import BATCH, FastnnStep, make_batch, zoo

    before = fnn.get_num_threads()
    results = {}
    try:
        for name in model_names:
            try:
                model, input_shape, loss_name = zoo.build(name)
                x, target = make_batch(model, input_shape, loss_name, BATCH[name])
                step = FastnnStep(model, loss_name, x, target)
                for _ in range(max(warmup, 1)):
                    dt = _timed(step)
                inner = max(1, int(np.ceil(0.002 / max(dt, 1e-9))))
                times = {n: [] for n in thread_counts}
                order = list(thread_counts)
                for _ in range(repeats):
                    for n in order:
                        fnn.set_num_threads(n)
                        step()
                        times[n].append(_timed(lambda: [step() for _ in range(inner)]) / inner)
                    order.reverse()
                rows = {str(n): {"median_s": float(np.median(t)), "samples_per_s": BATCH[name] / float(np.median(t))}
                        for n, t in times.items()}
                base = rows[str(thread_counts[0])]["median_s"]
                for row in rows.values():
                    row["speedup"] = base / row["median_s"]
                results[name] = rows
            except Exception as exc:  # noqa: BLE001
                results[name] = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
            finally:
                fnn.set_num_threads(before)
    finally:
        fnn.set_num_threads(before)
    return results


# ---- subprocess measurements ----------------------------------------------------------------------
def _run_child(task, args, env_extra=None, timeout=600):
    """Run :func:`_child_main` in a fresh interpreter; its JSON answer (last stdout line)."""
    env = dict(os.environ)
    # The child must import this very fastnn (installed or built in place) and this suite; fastnn's
    # root goes first so a source checkout next to an installed fastnn cannot shadow it, and the
    # child runs outside the checkout because ``python -c`` puts its working directory on sys.path.
    fastnn_root = os.path.dirname(os.path.dirname(os.path.abspath(fnn.__file__)))
    suite_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if __package__ != "benchmarks":  # installed as fastnn.bench
        suite_root = os.path.dirname(suite_root)
    env["PYTHONPATH"] = os.pathsep.join([fastnn_root, suite_root, env.get("PYTHONPATH", "")])
    env["FASTNN_NUM_THREADS"] = str(fnn.get_num_threads())
    env.update(env_extra or {})
    # fastnn is imported (and timed) before the suite's system module, which imports it too
    code = ("import time; t0 = time.perf_counter(); import fastnn; "
            f"import_s = time.perf_counter() - t0; from {__package__}.system import _child_main; "
            f"_child_main({task!r}, {args!r}, import_s)")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], cwd=tempfile.gettempdir(), env=env, capture_output=True,
                          text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        raise RuntimeError(f"child {task} {args} exited with {proc.returncode}: {tail}")
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    answer["process_wall_s"] = wall
    return answer


def _child_main(task, args, import_s):
    """Entry point of the measuring subprocesses; prints one JSON line."""
    if task == "import":
        answer = {"import_s": import_s}
    elif task == "first_step":
        answer = {"import_s": import_s, **_first_step(args["model"])}
    elif task == "memory":
        answer = _memory(args["model"], args["steps"])
    else:
        raise ValueError(f"unknown child task {task!r}")
    print(json.dumps(answer))


def _first_step(name):
    from . import models

    t0 = time.perf_counter()
    model, input_shape, loss_name = models.zoo.build(name)
    x, target = models.make_batch(model, input_shape, loss_name, models.BATCH[name])
    step = models.FastnnStep(model, loss_name, x, target)
    step()
    first = time.perf_counter() - t0
    later = []
    for _ in range(5):
        t1 = time.perf_counter()
        step()
        later.append(time.perf_counter() - t1)
    return {"first_step_s": first, "steady_step_s": float(np.median(later))}


def _proc_status_mb(field):
    """VmRSS / VmHWM of this process in MiB (Linux), None elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _reset_peak_rss():
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _memory(name, steps):
    import resource
    import tracemalloc

    from fastnn import _core

    from . import models

    _core.gemm, _core.relu_forward  # libraries loaded before the baseline  # noqa: B018
    baseline = _proc_status_mb("VmRSS")
    reset = _reset_peak_rss()
    model, input_shape, loss_name = models.zoo.build(name)
    x, target = models.make_batch(model, input_shape, loss_name, models.BATCH[name])
    step = models.FastnnStep(model, loss_name, x, target)
    for _ in range(steps):
        step()
    peak = _proc_status_mb("VmHWM") if reset else None
    if peak is None:  # ru_maxrss (KiB on Linux) includes the import-time high-water mark
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    tracemalloc.start()  # numpy reports its buffers to tracemalloc
    step()
    _, step_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"baseline_rss_mb": baseline, "peak_rss_mb": peak,
            "training_rss_mb": None if baseline is None else peak - baseline,
            "step_alloc_peak_mb": step_peak / 2 ** 20,
            "parameters_mb": sum(p.data.nbytes for p in model.parameters()) / 2 ** 20}


def cold_start(model_names, import_repeats=3):
    """``import fastnn`` in fresh interpreters, and time to the first training step (model build,
    batch, step) with an empty and with a warm numba cache (NUMBA_CACHE_DIR: a fresh temp dir)."""
    imports = [_run_child("import", {}) for _ in range(import_repeats)]
    result = {"import_fastnn_s": float(np.median([r["import_s"] for r in imports])),
              "bare_process_s": float(np.median([r["process_wall_s"] for r in imports])),
              "models": {}}
    for name in model_names:
        with tempfile.TemporaryDirectory(prefix="fastnn-numba-cache-") as cache:
            env = {"NUMBA_CACHE_DIR": cache}
            try:
                cold = _run_child("first_step", {"model": name}, env)
                warm = _run_child("first_step", {"model": name}, env)
                result["models"][name] = {"cold_cache": cold, "warm_cache": warm}
            except Exception as exc:  # noqa: BLE001
                result["models"][name] = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    return result


def peak_memory(model_names, steps=3):
    """Peak RSS and per-step allocation peak of a fastnn training loop, one subprocess per model."""
    result = {}
    for name in model_names:
        try:
            result[name] = _run_child("memory", {"model": name, "steps": steps})
        except Exception as exc:  # noqa: BLE001
            result[name] = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    return result
