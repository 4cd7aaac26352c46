"""Results of a suite run: the JSON file, the Markdown tables, the PNG chart and ``--compare``."""
import json
import math
import os

SCHEMA = 1


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


# ---- Markdown -------------------------------------------------------------------------------------
def machine_line(results):
    m = results.get("machine", {})
    v = m.get("versions", {})
    sp = results.get("sgemm_peak", {})
    peak = sp.get("gflops")
    if "start_gflops" in sp:
        peak_text = f"{_num(peak)} GFLOP/s (best of start {_num(sp['start_gflops'])}, end {_num(sp['end_gflops'])})"
    else:
        peak_text = f"{_num(peak)} GFLOP/s"
    flags = ", ".join(f for f in m.get("flags", []) if f.startswith("avx") or f == "fma")
    libs = ", ".join(f"{k} {v[k]}" for k in ("python", "numpy", "numba", "scipy", "torch") if v.get(k))
    blas = sorted({f"{p.get('internal_api')} {p.get('version')} ({p.get('architecture')})"
                   for p in m.get("thread_pools", []) if p.get("user_api") == "blas"})
    return (f"{m.get('cpu', '?')}, {m.get('usable_cpus', '?')} cores ({flags}); "
            f"{results.get('settings', {}).get('threads', '?')} threads; "
            f"sgemm peak {peak_text}; load average {_num(m.get('load_average'), 2)} -> "
            f"{_num(m.get('load_average_end'), 2)}; "
            f"{libs}; BLAS {', '.join(blas) or '?'}; fastnn {m.get('git_commit') or '?'}"
            + _heap_text(results.get("heap")))


def _heap_text(heap):
    if not heap:
        return ""
    return (f"; glibc heap thresholds fixed (mmap {heap['mmap_threshold'] >> 20} MB, "
            f"trim {heap['trim_threshold'] >> 20} MB)")


def models_table(results):
    """The main table: one row per model."""
    header = ["model", "batch", "fastnn ms/step (IQR)", "fastnn samples/s", "torch samples/s",
              "vs torch", "NumPy-ref samples/s", "vs NumPy", "GFLOP/s", "% sgemm peak"]
    peak = results.get("sgemm_peak", {}).get("gflops")
    rows = []
    for name, r in results["models"].items():
        if r.get("status") != "ok":
            rows.append([name, r.get("batch", "-"), f"error: {r.get('error', '?')}"] + ["-"] * 7)
            continue
        f, t, n = r["fastnn"], r.get("torch"), r.get("reference")
        vs_torch = f"{r['speedup_vs_torch']:.2f}x" if _ok(t) else ("error" if t else "-")
        if _ok(t) and r.get("loss_rel_diff_torch", 0) > 1e-3:  # the twins disagree: flag it
            vs_torch += " (loss differs!)"
        rows.append([
            name, r["batch"],
            f"{_num(f['median_s'] * 1e3)} ({_num(f['iqr_s'] * 1e3, 2)})",
            _num(f["samples_per_s"]),
            _num(t["samples_per_s"]) if _ok(t) else "-",
            vs_torch,
            _num(n["samples_per_s"]) if _ok(n) else ("error" if n else "-"),
            f"{r['speedup_vs_reference']:.1f}x" if _ok(n) else "-",
            _num(r["gflops"]),
            f"{100 * r['gflops'] / peak:.0f}%" if peak else "-",
        ])
    return _table(header, rows)


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
    """GEMM-like kernels in GFLOP/s (with the fraction of the sgemm peak ``peak``), memory-bound
    ones (rows with ``fastnn_gbps``) in GB/s."""
    rows = []
    for k in kernels.get("rows", []):
        if "fastnn_gbps" in k:
            rows.append([k["kernel"], _num(k["fastnn_gbps"]), _num(k["baseline_gbps"]), "GB/s", "-",
                         f"{k['speedup']:.2f}x"])
        else:
            rows.append([k["kernel"], _num(k["fastnn_gflops"]), _num(k["baseline_gflops"]), "GFLOP/s",
                         f"{100 * k['fastnn_gflops'] / peak:.0f}%" if peak else "-", f"{k['speedup']:.2f}x"])
    header = ["kernel (benchmarks/kernels.py)", "fastnn", "baseline", "unit", "% sgemm peak", "speed-up"]
    return ("Baselines: numpy for gemm and dense, the NumPy reference for conv, conv-transpose, LSTM, "
            "pooling and batch norm. GB/s counts each array read or written once.\n\n" + _table(header, rows))


def model_convs_table(model_convs, peak=None):
    """benchmarks/convs.py's results: one row per model (all its convolutions, forward and
    backward) and one per layer, in GFLOP/s and % of ``peak``, and per model also as % of the
    numpy sgemm rate measured alongside; torch's columns when it ran."""
    if not model_convs:
        return ""
    torch = all("torch_s" in m for m in model_convs.values())

    def pct(gflops):
        return f"{100 * gflops / peak:.0f}%" if peak else "-"

    def alongside(m, who):
        return f"{100 * m[who + '_gflops'] / m['sgemm_gflops']:.0f}%" if m.get("sgemm_gflops") else "-"

    head = ["model", "convs", "fastnn ms (fwd+bwd)", "fastnn GFLOP/s", "% sgemm peak",
            "sgemm alongside GFLOP/s", "% of it"]
    head += ["torch ms", "torch GFLOP/s", "torch % peak", "torch % alongside", "vs torch"] if torch else []
    rows = []
    for name, m in model_convs.items():
        row = [name, len(m["layers"]), _num(m["fastnn_s"] * 1e3), f"{m['fastnn_gflops']:.0f}", pct(m["fastnn_gflops"]),
               f"{m['sgemm_gflops']:.0f}" if m.get("sgemm_gflops") else "-", alongside(m, "fastnn")]
        if torch:
            row += [_num(m["torch_s"] * 1e3), f"{m['torch_gflops']:.0f}", pct(m["torch_gflops"]),
                    alongside(m, "torch"), f"{m['torch_s'] / m['fastnn_s']:.2f}x"]
        rows.append(row)
    layer_head = ["model", "layer", "fastnn fwd ms", "fastnn bwd ms", "fastnn GFLOP/s", "% sgemm peak"]
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


def markdown(results):
    """The whole report as Markdown."""
    s = results.get("settings", {})
    parts = ["# fastnn benchmark", "", machine_line(results), "",
             f"Training step (zero_grad, forward, loss, backward, Adam), float32; median of "
             f"{s.get('repeats')} samples after {s.get('warmup')} warm-up steps "
             f"(NumPy reference: {s.get('ref_repeats')}), fastnn and torch interleaved in one process (each sample after one untimed step of its own), the reference timed after them. "
             "'vs X' = X's step time / fastnn's (above 1: fastnn is faster). GFLOP/s counts "
             "2*M*N*K per GEMM-like op, x3 for forward and backward (x2 for the first layer with weights: no dX).", "",
             models_table(results)]
    sections = [("Thread scaling (fastnn)", "thread_scaling", scaling_table),
                ("Cold start (fresh processes)", "cold_start", cold_start_table),
                ("Memory (fresh process per model)", "memory", memory_table),
                ("Kernels", "kernels",
                 lambda k: kernels_table(k, results.get("sgemm_peak", {}).get("gflops"))),
                ("Convolutions of the conv-heavy models (benchmarks/convs.py)", "model_convs",
                 lambda m: model_convs_table(m, results.get("sgemm_peak", {}).get("gflops")))]
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
    peaks = (old.get("sgemm_peak", {}).get("gflops"), new.get("sgemm_peak", {}).get("gflops"))
    head = [f"old: {old.get('machine', {}).get('date', '?')} ({old.get('machine', {}).get('git_commit')}), "
            f"new: {new.get('machine', {}).get('date', '?')} ({new.get('machine', {}).get('git_commit')}); "
            f"sgemm peak {_num(peaks[0])} -> {_num(peaks[1])} GFLOP/s"]
    head += [f"warning: {n}" for n in notes]
    return "\n".join(["## Comparison", ""] + head + ["", _table(header, rows)]) + "\n"


# ---- chart ----------------------------------------------------------------------------------------
def chart(results, path):
    """samples/s per model (log scale) for fastnn, torch and the NumPy reference, and fastnn's
    GFLOP/s as a fraction of the sgemm peak. Returns False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = [n for n, r in results["models"].items() if r.get("status") == "ok"]
    if not names:
        return False
    peak = results.get("sgemm_peak", {}).get("gflops")
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
            ax1.bar(xs, ys, width, label={"reference": "NumPy reference"}.get(who, who), color=color)
    ax1.set_yscale("log")
    ax1.set_xticks(range(len(names)), names, rotation=30)
    ax1.set_ylabel("training samples / s")
    ax1.legend()
    ax1.set_title("training step throughput")
    if peak:
        fractions = [100 * results["models"][n]["gflops"] / peak for n in names]
        ax2.bar(range(len(names)), fractions, color="tab:blue")
        ax2.set_ylabel("% of measured sgemm peak")
        ax2.set_title(f"fastnn GFLOP/s vs sgemm peak ({peak:.0f} GFLOP/s)")
        ax2.set_xticks(range(len(names)), names, rotation=30)
    fig.suptitle(results.get("machine", {}).get("cpu", ""), fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
