"""Results of a suite run: the JSON file, the Markdown tables, the PNG chart and ``--compare``."""
import json
import math
import os

SCHEMA = 2  # 2: three torch setups, the GEMM peak of numpy/torch/fastnn ("gemm_peak")

# the NumPy column's name: fastnn's own step on its NumPy reference kernels, the oracle the tests
# compare the compiled kernels with (not a NumPy deep-learning framework)
ORACLE = "NumPy oracle"
LOSS_FLAG = 1e-4  # flag a contender whose first two losses differ from fastnn's by more (relative)


def write_json(results, path):
    with open(path, "w") as f:
        json.dump(results, f, indent=1, sort_keys=False)
        f.write("\n")


def load_json(path):
    with open(path) as f:
        results = json.load(f)
    if not isinstance(results, dict) or "models" not in results:
        raise ValueError(f"{path}: not a fastnn benchmark result (no 'models' key)")
    return results


# ---- formatting helpers ---------------------------------------------------------------------------
def _num(v, digits=3):
    """A number with about ``digits`` significant figures, '-' for None."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if v == 0:
        return "0"
    mag = math.floor(math.log10(abs(v)))
    decimals = max(0, digits - 1 - mag)
    return f"{v:,.{decimals}f}"


def _ok(part):
    return isinstance(part, dict) and part.get("status") == "ok"


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def peak_of(results):
    """The run's GEMM peak record (``sgemm_peak`` in schema-1 files), {} when absent."""
    return results.get("gemm_peak") or results.get("sgemm_peak") or {}


# ---- Markdown -------------------------------------------------------------------------------------
def peak_text(peak):
    """'GEMM peak 412 GFLOP/s (torch.mm (MKL...)); numpy.matmul (...) 390, ...' of a gemm_peak."""
    contenders = peak.get("contenders")
    if not contenders:  # schema 1: numpy alone
        return f"sgemm peak {_num(peak.get('gflops'))} GFLOP/s (numpy.matmul)"
    best = contenders[peak["best"]]
    others = "; ".join(f"{c['label']} {_num(c['gflops'])}" for k, c in contenders.items() if k != peak["best"])
    sizes = "/".join(f"{n}^3" for n in peak.get("sizes", []))
    text = (f"float32 GEMM peak {_num(peak['gflops'])} GFLOP/s: {best['label']}, best of {sizes}"
            + (f" at the start and end of the run ({_num(peak['start_gflops'])}, {_num(peak['end_gflops'])})"
               if "start_gflops" in peak else ""))
    return text + (f"; the others: {others} GFLOP/s" if others else "")


def machine_line(results):
    from .system import cpu_text

    m = results.get("machine", {})
    v = m.get("versions", {})
    flags = ", ".join(f for f in m.get("flags", []) if f.startswith("avx") or f == "fma")
    libs = ", ".join(f"{k} {v[k]}" for k in ("python", "numpy", "numba", "scipy", "torch") if v.get(k))
    return (f"{cpu_text(m)}, {m.get('usable_cpus', '?')} cores ({flags}); "
            f"{results.get('settings', {}).get('threads', '?')} threads; {m.get('date', '?')}; "
            f"load average {_num(m.get('load_average'), 2)} -> {_num(m.get('load_average_end'), 2)}; "
            f"{libs}; numpy's BLAS {blas_text(m)}; fastnn {m.get('git_commit') or '?'}"
            + (f"; C++ compiler {m['cxx']}" if m.get("cxx") else "")
            + _heap_text(results.get("heap")) + "\n\n" + peak_text(peak_of(results)))


def blas_text(machine):
    """'OpenBLAS 0.3.31 (SkylakeX kernel, OPENBLAS_CORETYPE unset)'."""
    b = machine.get("numpy_blas")
    if not b:  # schema 1
        pools = sorted({f"{p.get('internal_api')} {p.get('version')} ({p.get('architecture')})"
                        for p in machine.get("thread_pools", []) if p.get("user_api") == "blas"})
        return ", ".join(pools) or "?"
    core = b.get("OPENBLAS_CORETYPE")
    return (f"{b.get('library') or '?'} {b.get('version') or ''} ({b.get('architecture') or '?'} kernel, "
            + (f"forced by OPENBLAS_CORETYPE={core})" if core else "OPENBLAS_CORETYPE unset)"))


def _heap_text(heap):
    if not heap:
        return ""
    return (f"; glibc heap thresholds fixed (mmap {heap['mmap_threshold'] >> 20} MB, "
            f"trim {heap['trim_threshold'] >> 20} MB)")


TORCH_COLUMNS = (("torch_eager", "torch eager ms"), ("torch_fused", "torch fused Adam ms"),
                 ("torch_compiled", "torch.compile ms (compile s)"))


def _torch_cell(r, who):
    """One torch setup's median ms, its compile time, or why it has none."""
    part = r.get(who)
    if part is None:
        return "-"
    if not _ok(part):
        what = "compile failed" if who == "torch_compiled" else "failed"
        return f"{what}: {part.get('error', '?')[:120]}"
    text = _num(part["median_s"] * 1e3)
    if "compile_s" in part:
        extra = [f"{_num(part['compile_s'], 2)} s"]
        if part.get("fx_cache_hits") and not part.get("fx_cache_misses"):
            extra.append("cached")
        if part.get("graph_breaks"):
            extra.append(f"{part['graph_breaks']} graph break{'s' if part['graph_breaks'] > 1 else ''}")
        text += f" ({', '.join(extra)})"
    if r.get(f"loss_rel_diff_{who}", 0) > LOSS_FLAG:
        text += " (loss differs!)"
    return text


def models_table(results):
    """The main table: one row per model, every torch setup in its own column."""
    header = ["model", "batch", "fastnn ms/step (IQR)", "fastnn samples/s"] + [h for _, h in TORCH_COLUMNS]
    header += ["vs torch (best setup)", f"{ORACLE} ms", f"vs {ORACLE}", "GFLOP/s", "% of GEMM peak"]
    peak = peak_of(results).get("gflops")
    rows = []
    for name, r in results["models"].items():
        if r.get("status") != "ok":
            rows.append([name, r.get("batch", "-"), f"error: {r.get('error', '?')}"] + ["-"] * (len(header) - 3))
            continue
        f, t, n = r["fastnn"], r.get("torch"), r.get("reference")
        if _ok(t):
            vs_torch = f"{r['speedup_vs_torch']:.2f}x ({t.get('setup', '?')})"
        else:
            vs_torch = "error" if t else "-"
        ref = _num(n["median_s"] * 1e3) if _ok(n) else ("error" if n else "-")
        if _ok(n) and r.get("loss_rel_diff_reference", 0) > LOSS_FLAG:
            ref += " (loss differs!)"
        rows.append([
            name, r["batch"],
            f"{_num(f['median_s'] * 1e3)} ({_num(f['iqr_s'] * 1e3, 2)})",
            _num(f["samples_per_s"]),
            *[_torch_cell(r, who) for who, _ in TORCH_COLUMNS],
            vs_torch, ref,
            f"{r['speedup_vs_reference']:.1f}x" if _ok(n) else "-",
            _num(r["gflops"]),
            f"{100 * r['gflops'] / peak:.0f}%" if peak else "-",
        ])
    return _table(header, rows)


def compile_notes(results):
    """Lines on what torch.compile did not compile (graph breaks), per model; '' when nothing."""
    lines = []
    for name, r in results["models"].items():
        part = r.get("torch_compiled") or {}
        if part.get("graph_breaks"):
            lines.append(f"- {name}: {part['graph_breaks']} graph break(s), {part.get('graphs', 0)} graph(s) "
                         f"compiled; {'; '.join(part.get('break_reasons', []))}")
    if not lines:
        return ""
    return ("torch.compile ran part of these models eagerly (the rest compiled, with inductor's "
            "default settings):\n" + "\n".join(lines))


def closing_note(results):
    """One line: every model's ratio against torch's fastest setup in this run."""
    parts = []
    for name, r in results["models"].items():
        t = r.get("torch")
        if r.get("status") == "ok" and _ok(t):
            parts.append(f"{name} {r['speedup_vs_torch']:.2f}x ({t.get('setup', '?')})")
        else:
            parts.append(f"{name} -")
    return "fastnn vs torch's fastest setup, this run (above 1: fastnn faster): " + ", ".join(parts) + "."


def _intro(results):
    s = results.get("settings", {})
    return (f"Training step (zero_grad, forward, loss, backward, Adam), float32; median of "
            f"{s.get('repeats')} samples after {s.get('warmup')} warm-up steps ({ORACLE}: "
            f"{s.get('ref_repeats')}). fastnn and the torch setups interleaved in one process, same "
            "weights and batch (each sample after one untimed step of its own); torch eager = the "
            "default torch.optim.Adam (its for-loop kernel on CPU), fused Adam = Adam(fused=True), "
            "torch.compile = the compiled module (inductor, C++ codegen) with fused Adam, its compile "
            "time (the first step; 'cached': inductor reused its on-disk cache) in brackets and left out "
            "of the medians. "
            f"{ORACLE} = fastnn's own step on its NumPy reference kernels, the oracle its tests "
            "compare with (not a NumPy framework), timed after the others. 'vs X' = X's step time / "
            "fastnn's (above 1: fastnn is faster). GFLOP/s counts 2*M*N*K per GEMM-like product "
            "fastnn computes: forward, dX and dW (no dX for the first layer with weights; an "
            "Embedding-fed recurrent layer's input side over the table's rows, see benchmarks/README.md); "
            "% of GEMM peak divides by the best float32 GEMM measured in the run.")


def readme_block(results):
    """What the README's benchmark section shows of a run: the machine, the table, the note."""
    m = results.get("machine", {})
    v = m.get("versions", {})
    from .system import cpu_text

    head = (f"{cpu_text(m)}, {results.get('settings', {}).get('threads', '?')} threads, "
            f"{m.get('date', '?')[:10]}, fastnn {m.get('git_commit') or '?'}, torch {v.get('torch') or '-'}, "
            f"numpy {v.get('numpy')} on {blas_text(m)}; load average {_num(m.get('load_average'), 2)} -> "
            f"{_num(m.get('load_average_end'), 2)}; the whole run took {_num(results.get('elapsed_s', 0) / 60, 2)} min.")
    notes = compile_notes(results)
    return "\n".join([head, "", peak_text(peak_of(results)) + ".", "", models_table(results), "",
                       closing_note(results)] + (["", notes] if notes else [])) + "\n"


def scaling_table(scaling):
    counts = sorted({int(n) for rows in scaling.values() for n in rows if n.isdigit()})
    header = ["model"] + [f"{n} thr samples/s" for n in counts] + [f"speed-up {counts[-1]} vs {counts[0]}"]
    rows = []
    for name, by_n in scaling.items():
        if by_n.get("status") == "error":
            rows.append([name, f"error: {by_n.get('error', '?')}"] + ["-"] * len(counts))
            continue
        cells = [_num(by_n.get(str(n), {}).get("samples_per_s")) if "samples_per_s" in by_n.get(str(n), {})
                 else "error" for n in counts]
        last = by_n.get(str(counts[-1]), {}).get("speedup")
        rows.append([name] + cells + [f"{last:.2f}x" if last else "-"])
    return _table(header, rows)


def cold_start_table(cold):
    rows = []
    for name, r in cold.get("models", {}).items():
        if "cold_cache" not in r:
            rows.append([name, f"error: {r.get('error', '?')}", "-", "-"])
            continue
        rows.append([name, _num(r["cold_cache"]["first_step_s"]), _num(r["warm_cache"]["first_step_s"]),
                     _num(r["warm_cache"]["steady_step_s"] * 1e3)])
    text = (f"`import fastnn`: {_num(cold.get('import_fastnn_s', 0) * 1e3)} ms "
            f"(a bare interpreter with it: {_num(cold.get('bare_process_s', 0) * 1e3)} ms)\n\n")
    header = ["model", "first step, empty numba cache (s)", "first step, warm cache (s)", "steady step (ms)"]
    return text + _table(header, rows)


def memory_table(memory):
    rows = []
    for name, r in memory.items():
        if "peak_rss_mb" not in r:
            rows.append([name, f"error: {r.get('error', '?')}", "-", "-", "-"])
            continue
        rows.append([name, _num(r["peak_rss_mb"]), _num(r.get("training_rss_mb")),
                     _num(r["step_alloc_peak_mb"]), _num(r["parameters_mb"])])
    header = ["model", "peak RSS (MB)", "RSS growth while training (MB)", "allocated per step (MB)",
              "parameters (MB)"]
    return _table(header, rows)


def kernels_table(kernels, peak=None):
    """GEMM-like kernels in GFLOP/s (with the fraction of the GEMM peak ``peak``), memory-bound
    ones (rows with ``fastnn_gbps``) in GB/s."""
    rows = []
    for k in kernels.get("rows", []):
        if "fastnn_gbps" in k:
            rows.append([k["kernel"], _num(k["fastnn_gbps"]), _num(k["baseline_gbps"]), "GB/s", "-",
                         f"{k['speedup']:.2f}x"])
        else:
            rows.append([k["kernel"], _num(k["fastnn_gflops"]), _num(k["baseline_gflops"]), "GFLOP/s",
                         f"{100 * k['fastnn_gflops'] / peak:.0f}%" if peak else "-", f"{k['speedup']:.2f}x"])
    header = ["kernel (benchmarks/kernels.py)", "fastnn", "baseline", "unit", "% of GEMM peak", "speed-up"]
    return ("Baselines: numpy for gemm and dense, fastnn's NumPy reference kernels (the test oracle) for "
            "conv, conv-transpose, LSTM, pooling and batch norm. GB/s counts each array read or written "
            "once.\n\n" + _table(header, rows))


def model_convs_table(model_convs, peak=None):
    """benchmarks/convs.py's results: one row per model (all its convolutions, forward and
    backward) and one per layer, in GFLOP/s and % of ``peak``, and per model also as % of the
    GEMM rate measured alongside (the peak's winner); torch's columns when it ran."""
    if not model_convs:
        return ""
    torch = all("torch_s" in m for m in model_convs.values())

    def pct(gflops):
        return f"{100 * gflops / peak:.0f}%" if peak else "-"

    def alongside(m, who):
        return f"{100 * m[who + '_gflops'] / m['sgemm_gflops']:.0f}%" if m.get("sgemm_gflops") else "-"

    head = ["model", "convs", "fastnn ms (fwd+bwd)", "fastnn GFLOP/s", "% of GEMM peak",
            "GEMM alongside GFLOP/s", "% of it"]
    head += ["torch ms", "torch GFLOP/s", "torch % peak", "torch % alongside", "vs torch"] if torch else []
    rows = []
    for name, m in model_convs.items():
        row = [name, len(m["layers"]), _num(m["fastnn_s"] * 1e3), f"{m['fastnn_gflops']:.0f}", pct(m["fastnn_gflops"]),
               f"{m['sgemm_gflops']:.0f}" if m.get("sgemm_gflops") else "-", alongside(m, "fastnn")]
        if torch:
            row += [_num(m["torch_s"] * 1e3), f"{m['torch_gflops']:.0f}", pct(m["torch_gflops"]),
                    alongside(m, "torch"), f"{m['torch_s'] / m['fastnn_s']:.2f}x"]
        rows.append(row)
    layer_head = ["model", "layer", "fastnn fwd ms", "fastnn bwd ms", "fastnn GFLOP/s", "% of GEMM peak"]
    layer_head += ["torch fwd ms", "torch bwd ms", "torch GFLOP/s"] if torch else []
    layer_rows = []
    for name, m in model_convs.items():
        for r in m["layers"]:
            flops = r["fwd_flops"] + r["bwd_flops"]
            gflops = flops / (r["fastnn_fwd_s"] + r["fastnn_bwd_s"]) / 1e9
            row = [name, r["layer"], _num(r["fastnn_fwd_s"] * 1e3), _num(r["fastnn_bwd_s"] * 1e3),
                   f"{gflops:.0f}", pct(gflops)]
            if torch:
                row += [_num(r["torch_fwd_s"] * 1e3), _num(r["torch_bwd_s"] * 1e3),
                        f"{flops / (r['torch_fwd_s'] + r['torch_bwd_s']) / 1e9:.0f}"]
            layer_rows.append(row)
    return _table(head, rows) + "\n\n" + _table(layer_head, layer_rows)


def peak_table(peak):
    """The GEMM peak's contenders: GFLOP/s per size on the run's threads, best on one thread, and
    each one's best (start and end of the run)."""
    contenders = peak.get("contenders")
    if not contenders:
        return peak_text(peak)
    threads, sizes = str(peak["threads"]), [str(n) for n in peak["sizes"]]
    header = ["contender"] + [f"{n}^3, {threads} thr" for n in sizes] + ["best on 1 thread", "best (start, end)"]
    rows = []
    for name, c in contenders.items():
        at = c["by_threads"].get(threads, {})
        one = c["best_by_threads"].get("1")
        best = _num(c["gflops"])
        if "start_gflops" in c:
            best += f" ({_num(c['start_gflops'])}, {_num(c['end_gflops'])})"
        rows.append([c["label"] + (" **peak**" if name == peak["best"] else "")]
                    + [_num(at.get(n)) for n in sizes] + [_num(one), best])
    return ("GFLOP/s of float32 n^3 GEMMs, the contenders alternating call by call, best of the run's "
            "samples; every '% of GEMM peak' divides by the best.\n\n" + _table(header, rows))


def markdown(results):
    """The whole report as Markdown; its head (machine, table, closing note) is what
    ``python -m benchmarks --readme RUN.json`` prints for the README."""
    parts = ["# fastnn benchmark", "", machine_line(results), "", _intro(results), "", models_table(results), "",
             closing_note(results)]
    if compile_notes(results):
        parts += ["", compile_notes(results)]
    if peak_of(results):
        parts += ["", "## Float32 GEMM peak", "", peak_table(peak_of(results))]
    sections = [("Thread scaling (fastnn)", "thread_scaling", scaling_table),
                ("Cold start (fresh processes)", "cold_start", cold_start_table),
                ("Memory (fresh process per model)", "memory", memory_table),
                ("Kernels", "kernels",
                 lambda k: kernels_table(k, peak_of(results).get("gflops"))),
                ("Convolutions of the conv-heavy models (benchmarks/convs.py)", "model_convs",
                 lambda m: model_convs_table(m, peak_of(results).get("gflops")))]
    for title, key, fn in sections:
        if results.get(key):
            parts += ["", f"## {title}", "", fn(results[key])]
    errors = {k: v for k, v in (results.get("section_errors") or {}).items()}
    if errors:
        parts += ["", "## Sections that failed", ""] + [f"- {k}: {v}" for k, v in errors.items()]
    return "\n".join(parts) + "\n"


# ---- comparison -----------------------------------------------------------------------------------
def compare(old, new):
    """Markdown: per-model samples/s before and after, and the change."""
    notes = []
    om, nm = old.get("machine", {}), new.get("machine", {})
    if (om.get("cpu"), om.get("usable_cpus")) != (nm.get("cpu"), nm.get("usable_cpus")):
        notes.append(f"different machines: {om.get('cpu')} ({om.get('usable_cpus')} cores) vs "
                     f"{nm.get('cpu')} ({nm.get('usable_cpus')} cores)")
    if old.get("schema", 1) < 2 <= new.get("schema", 1):
        notes.append("'vs torch' of the old run is against torch's default Adam only, the new one against "
                     "torch's fastest setup (eager, fused Adam, torch.compile)")
    ot, nt = old.get("settings", {}).get("threads"), new.get("settings", {}).get("threads")
    if ot != nt:
        notes.append(f"different thread counts: {ot} vs {nt}")
    header = ["model", "old samples/s", "new samples/s", "change", "old vs torch", "new vs torch",
              "old GFLOP/s", "new GFLOP/s"]
    rows = []
    for name in list(dict.fromkeys(list(old["models"]) + list(new["models"]))):
        o, n = old["models"].get(name), new["models"].get(name)
        o_ok = bool(o) and o.get("status") == "ok"
        n_ok = bool(n) and n.get("status") == "ok"
        o_sps = o["fastnn"]["samples_per_s"] if o_ok else None
        n_sps = n["fastnn"]["samples_per_s"] if n_ok else None
        if o_ok and n_ok:
            change = f"{100 * (n_sps / o_sps - 1):+.1f}%"
        elif n_ok:
            change = "new" if o is None else "fixed"
        elif o_ok:
            change = "gone" if n is None else "now fails"
        else:
            change = "-"

        def vs_torch(r):
            return f"{r['speedup_vs_torch']:.2f}x" if r and "speedup_vs_torch" in r else "-"

        rows.append([name, _num(o_sps), _num(n_sps), change, vs_torch(o), vs_torch(n),
                     _num(o.get("gflops") if o_ok else None), _num(n.get("gflops") if n_ok else None)])
    peaks = (peak_of(old).get("gflops"), peak_of(new).get("gflops"))
    head = [f"old: {old.get('machine', {}).get('date', '?')} ({old.get('machine', {}).get('git_commit')}), "
            f"new: {new.get('machine', {}).get('date', '?')} ({new.get('machine', {}).get('git_commit')}); "
            f"GEMM peak {_num(peaks[0])} -> {_num(peaks[1])} GFLOP/s"]
    head += [f"warning: {n}" for n in notes]
    return "\n".join(["## Comparison", ""] + head + ["", _table(header, rows)]) + "\n"


# ---- chart ----------------------------------------------------------------------------------------
def chart(results, path):
    """samples/s per model (log scale) for fastnn, torch and the NumPy reference, and fastnn's
    GFLOP/s as a fraction of the GEMM peak. Returns False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = [n for n, r in results["models"].items() if r.get("status") == "ok"]
    if not names:
        return False
    peak = peak_of(results).get("gflops")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    width = 0.27
    for i, (who, color) in enumerate((("fastnn", "tab:blue"), ("torch", "tab:orange"),
                                      ("reference", "tab:gray"))):
        xs, ys = [], []
        for j, n in enumerate(names):
            part = results["models"][n].get(who)
            if _ok(part):
                xs.append(j + (i - 1) * width)
                ys.append(part["samples_per_s"])
        if xs:
            ax1.bar(xs, ys, width, label={"reference": ORACLE, "torch": "torch (fastest setup)"}.get(who, who),
                    color=color)
    ax1.set_yscale("log")
    ax1.set_xticks(range(len(names)), names, rotation=30)
    ax1.set_ylabel("training samples / s")
    ax1.legend()
    ax1.set_title("training step throughput")
    if peak:
        fractions = [100 * results["models"][n]["gflops"] / peak for n in names]
        ax2.bar(range(len(names)), fractions, color="tab:blue")
        ax2.set_ylabel("% of the measured float32 GEMM peak")
        ax2.set_title(f"fastnn GFLOP/s vs GEMM peak ({peak:.0f} GFLOP/s)")
        ax2.set_xticks(range(len(names)), names, rotation=30)
    fig.suptitle(results.get("machine", {}).get("cpu", ""), fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
