"""From raw runs to what a reader sees: derived metrics, medians, targets, markdown, charts.

Everything here is a pure function of the JSON record (charts aside), so a saved
``compare.json`` can be rendered again, and tests can render a synthetic one.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from .models import MODELS, n_params, train_flops

FRAMEWORKS = ("fastmnist", "pytorch", "keras", "sklearn")
NAMES = {"fastmnist": "fastmnist", "pytorch": "PyTorch", "keras": "Keras",
         "sklearn": "scikit-learn"}
# Medians over repetitions; for time_to_target_s "never reached" (None) counts as infinite.
METRICS = ("warm_epoch_s", "first_epoch_s", "fit_s", "fit_warm_s", "import_s", "startup_s",
           "accuracy", "time_to_target_s", "data_rss_mb", "peak_rss_mb", "fit_rss_mb",
           "predict_images_per_s", "latency_s", "gflops")


def derive(run: dict) -> dict:
    """The per-run figures the table shows, from a worker's raw measurements.

    Epoch times are differences of the cumulative ``epoch_end_s``; the first epoch holds
    model construction, compilation and first-call costs, so "warm" is the median of
    epochs 2..N and start-up = import time + (first epoch - warm epoch).
    """
    ends, accuracies = run["epoch_end_s"], run["test_accuracy"]
    epochs = [end - before for end, before in zip(ends, [0.0, *ends], strict=False)]
    warm = statistics.median(epochs[1:]) if len(epochs) > 1 else None
    spec = MODELS[run["model"]]
    reached = [end for end, accuracy in zip(ends, accuracies, strict=True)
               if accuracy >= spec.target]
    return {
        "epoch_s": epochs,
        "first_epoch_s": epochs[0],
        "warm_epoch_s": warm,
        "startup_s": run["import_s"] + epochs[0] - warm if warm is not None else None,
        "accuracy": accuracies[-1],
        "time_to_target_s": reached[0] if reached else None,
        # What the fits added to the process once the (shared, identical) data was in.
        "fit_rss_mb": run["peak_rss_mb"] - run["data_rss_mb"],
        "predict_images_per_s": run["n_test"] / statistics.median(run["predict_10k_s"]),
        "gflops": train_flops(spec) * run["n_train"] / warm / 1e9 if warm else None,
    }


def _median(values: list, none_is_inf: bool):
    if none_is_inf:
        middle = statistics.median(float("inf") if v is None else v for v in values)
        return None if middle == float("inf") else middle
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(runs: list[dict]) -> dict:
    """``{model: {framework: {status, reason, repetitions, median}}}`` over repetitions.

    A framework counts as run where at least one repetition succeeded; failed ones are
    counted and their first reason kept.
    """
    results: dict = {}
    for run in runs:
        results.setdefault(run["model"], {}).setdefault(run["framework"], []).append(run)
    summary = {}
    for model, by_framework in results.items():
        summary[model] = {}
        for framework, group in by_framework.items():
            ok = [r for r in group if r["status"] == "ok"]
            entry = {"status": "ok" if ok else group[0]["status"], "repetitions": len(ok),
                     "failed": sum(r["status"] == "failed" for r in group)}
            reasons = [r["reason"] for r in group if r.get("reason")]
            if reasons:
                entry["reason"] = reasons[0]
            if ok:
                entry["median"] = {m: _median([r.get(m) for r in ok], m == "time_to_target_s")
                                   for m in METRICS}
            summary[model][framework] = entry
    return summary


# --- targets (issue 5) -------------------------------------------------------------------

def _figures(results: dict, model: str, framework: str):
    """``(medians, None)`` for a framework that ran, else ``(None, why not)``."""
    entry = results.get(model, {}).get(framework)
    if model not in results:
        return None, f"n/a: {model} not run"
    if entry is None:
        return None, f"n/a: {NAMES[framework]} not run"
    if entry["status"] != "ok":
        return None, f"n/a: {NAMES[framework]} {entry['status']}: {entry.get('reason', '')}"
    return entry["median"], None


def _target(text, values="", ratio=None, met=None, why_not=None, kind="ratio") -> dict:
    """One target's line; ``kind`` "difference" for accuracy (in fractions, not a ratio)."""
    status = why_not or ("met" if met else "NOT met")
    return {"target": text, "measured": values, kind: ratio, "status": status}


def _versus_peer(results, model, metric, peer, limit, what, unit) -> dict:
    """fastmnist's ``metric`` at most ``limit`` times the peer's (times, memory)."""
    text = f"{model}: {what} ≤ 1/{round(1 / limit)} of {NAMES[peer]}'s"
    mine, why = _figures(results, model, "fastmnist")
    theirs, why_peer = _figures(results, model, peer)
    why = why or why_peer
    if why is None and (mine[metric] is None or theirs[metric] is None):
        why = f"n/a: {what} not measured"
    if why:
        return _target(text, why_not=why)
    ratio = mine[metric] / theirs[metric]
    values = (f"fastmnist {_value(mine[metric], unit)}, "
              f"{NAMES[peer]} {_value(theirs[metric], unit)}")
    return _target(text, values, ratio, ratio <= limit)


def _best_peer(results, model, metric):
    """``(framework, medians)`` of the peer with the highest ``metric``, or ``None``."""
    peers = [(f, e["median"]) for f, e in results.get(model, {}).items()
             if f != "fastmnist" and e["status"] == "ok" and e["median"][metric] is not None]
    return max(peers, key=lambda peer: peer[1][metric], default=None)


def _versus_best_peer(results, model, metric, text, check, kind="ratio") -> dict:
    """fastmnist's ``metric`` against the best peer's; ``check(mine, best)`` -> ratio, met."""
    mine, why = _figures(results, model, "fastmnist")
    best = _best_peer(results, model, metric)
    if why is None and best is None:
        why = "n/a: no peer ran"
    if why:
        return _target(text, why_not=why, kind=kind)
    peer, theirs = best
    unit = "%" if metric == "accuracy" else "img/s"
    values = (f"fastmnist {_value(mine[metric], unit)}, best peer {NAMES[peer]} "
              f"{_value(theirs[metric], unit)}")
    return _target(text, values, *check(mine[metric], theirs[metric]), kind=kind)


def _cold_start(results, model, limit) -> dict:
    text = (f"{model}: fit in a fresh process (warm kernel cache) ≤ {limit}x the same fit "
            "repeated in the same process")
    mine, why = _figures(results, model, "fastmnist")
    if why:
        return _target(text, why_not=why)
    ratio = mine["fit_s"] / mine["fit_warm_s"]
    values = f"fresh {_value(mine['fit_s'], 's')}, repeated {_value(mine['fit_warm_s'], 's')}"
    return _target(text, values, ratio, ratio <= limit)


def evaluate_targets(results: dict) -> list[dict]:
    """Issue 5's targets, each with the measured values, the ratio and met / NOT met."""
    within = 0.003  # 0.3 points of accuracy

    def accuracy_check(mine, best):
        return mine - best, mine >= best - within

    targets = [
        _versus_peer(results, "mlp-seed", "warm_epoch_s", "pytorch", 1 / 4, "warm epoch", "s"),
        _versus_peer(results, "mlp-seed", "warm_epoch_s", "sklearn", 1 / 5, "warm epoch", "s"),
        _versus_best_peer(results, "mlp-seed", "accuracy", "mlp-seed: test accuracy within "
                          "0.3 points of the best peer's", accuracy_check, "difference"),
        _versus_peer(results, "cnn-keras", "warm_epoch_s", "pytorch", 1 / 2, "warm epoch",
                     "s"),
        _versus_best_peer(results, "cnn-keras", "accuracy", "cnn-keras: test accuracy within "
                          "0.3 points of the best peer's", accuracy_check, "difference"),
    ]
    for model in ("mlp-seed", "cnn-keras"):
        targets.append(_versus_peer(results, model, "latency_s", "pytorch", 1 / 4,
                                    "1-image latency", "µs"))
        targets.append(_versus_best_peer(
            results, model, "predict_images_per_s",
            f"{model}: predict 10k throughput ≥ 1.5x the best peer's",
            lambda mine, best: (mine / best, mine >= 1.5 * best)))
    targets.append(_cold_start(results, "mlp-seed", 1.5))
    for model in ("mlp-seed", "cnn-keras"):
        targets.append(_versus_peer(results, model, "peak_rss_mb", "pytorch", 1 / 2,
                                    "peak RSS", "MB"))
        targets.append(_versus_peer(results, model, "fit_rss_mb", "pytorch", 1 / 2,
                                    "framework + fit memory (peak RSS - RSS with the data "
                                    "loaded)", "MB"))
    return targets


# --- markdown ----------------------------------------------------------------------------

def _value(x, unit: str) -> str:
    """A figure with its unit, to the precision the noise of a shared machine allows."""
    if x is None:
        return "—"
    if unit == "s":
        return f"{x:.0f} s" if x >= 100 else f"{x:.3g} s"
    if unit == "µs":
        return f"{x * 1e6:,.0f} µs"
    if unit == "%":
        return f"{x * 100:.2f} %"
    return f"{x:,.0f} {unit}"


def _number(x, pattern: str) -> str:
    return "—" if x is None else format(x, pattern)


def _seconds(x) -> str:
    return _value(x, "s").removesuffix(" s")


COLUMNS = ("framework", "warm epoch s", "peer / fastmnist", "fit s (fresh process)",
           "start-up s", "test acc %", "time to {target} s", "peak RSS MB",
           "fit memory MB", "predict 10k img/s", "1-image latency µs", "GFLOP/s (% of peak)")


def _row(framework: str, entry: dict, reference: dict | None, peak: float | None) -> list:
    if entry["status"] != "ok":
        return [NAMES[framework], f"{entry['status']}: {entry.get('reason', '')}",
                *["—"] * (len(COLUMNS) - 2)]
    m = entry["median"]
    name = NAMES[framework] + (f" ({entry['failed']} run(s) failed)" if entry["failed"] else "")
    ratio = None
    if reference and m["warm_epoch_s"] and reference["warm_epoch_s"]:
        ratio = m["warm_epoch_s"] / reference["warm_epoch_s"]
    gflops = _number(m["gflops"], ".1f")
    if m["gflops"] and peak:
        gflops += f" ({m['gflops'] / peak:.0%})"
    to_target = _seconds(m["time_to_target_s"]) if m["time_to_target_s"] else "not reached"
    return [name, _seconds(m["warm_epoch_s"]), _number(ratio, ".2f"),
            _seconds(m["fit_s"]), _seconds(m["startup_s"]),
            _number(m["accuracy"] and m["accuracy"] * 100, ".2f"), to_target,
            _number(m["peak_rss_mb"], ",.0f"), _number(m["fit_rss_mb"], ",.0f"),
            _number(m["predict_images_per_s"], ",.0f"),
            _number(m["latency_s"] and m["latency_s"] * 1e6, ",.0f"), gflops]


def _table(header: list, rows: list[list], numeric_from: int = 1) -> list[str]:
    """A markdown table, columns from ``numeric_from`` on right-aligned."""
    align = ["---"] * numeric_from + ["---:"] * (len(header) - numeric_from)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    return lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows]


def _model_section(name: str, by_framework: dict, settings: dict, peak) -> list[str]:
    spec = MODELS[name]
    epochs = settings["epochs"][name]
    lines = [f"## {name}", "",
             f"{spec.describe()} ({n_params(spec):,} parameters); Adam lr 1e-3, batch "
             f"{spec.batch_size}, {epochs} epochs, {settings['n_train']:,} training images; "
             f"{train_flops(spec) / 1e6:.2f} MFLOP per training image.", ""]
    fast = by_framework.get("fastmnist", {})
    reference = fast.get("median") if fast.get("status") == "ok" else None
    header = [c.format(target=f"{spec.target:.0%}".replace("%", " %")) for c in COLUMNS]
    rows = [_row(f, by_framework[f], reference, peak) for f in FRAMEWORKS if f in by_framework]
    return lines + _table(header, rows) + [""]


def render_markdown(record: dict) -> str:
    """The page docs/benchmarks/compare.md: context, one table per model, the targets."""
    env, settings = record["environment"], record["settings"]
    peak = record["gemm"]["gflops"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    lines = ["# fastmnist side by side with PyTorch, Keras and scikit-learn", "",
             f"{record['date']} · {env['cpu']} · {settings['threads']} threads for every "
             f"framework · medians of {settings['repeats']} repetition(s), each in a fresh "
             "process", "",
             f"Versions: {versions}.", "", *_load_line(env),
             f"float32 GEMM peak measured in this run: {peak:.0f} GFLOP/s (numpy "
             f"{record['gemm']['n']}² matmul, {settings['threads']} threads, "
             f"{record['gemm']['blas']}).", "",
             *_cache_line(record), f"Command: `{record['command']}`", ""]
    for model in settings["models"]:
        if model in record["results"]:
            lines += _model_section(model, record["results"][model], settings, peak)
    targets = evaluate_targets(record["results"])
    lines += ["## Targets (issue 5)", ""]
    lines += _table(["target", "measured (medians)", "ratio", "result"],
                    [[t["target"], t["measured"] or "—", _comparison(t),
                      t["status"] if t["status"].startswith("n/a") else f"**{t['status']}**"]
                     for t in targets], numeric_from=2)
    lines += ["", METHOD]
    return "\n".join(lines) + "\n"


def _comparison(target: dict) -> str:
    if target.get("difference") is not None:
        return f"{target['difference'] * 100:+.2f} points"
    return _number(target.get("ratio"), ".3g")


def _load_line(env: dict) -> list[str]:
    if "load_average" not in env:
        return []
    load = env["load_average"][0]
    warning = (" Something else was using the CPU: treat these times, and even the "
               "ratios, with care." if load > 0.5 else "")
    return [f"Load average (1 min) when the run began: {load:.2f} on {env['cores']} cores."
            f"{warning}", ""]


def _cache_line(record: dict) -> list[str]:
    warmup = record.get("kernel_cache_warmup")
    if warmup is None:
        return []
    if "error" in warmup:
        return [f"Filling fastmnist's kernel cache before the runs failed: {warmup['error']}",
                ""]
    return [f"fastmnist's kernel cache was filled before the runs ({warmup['seconds']:.1f} s),"
            " so its fresh processes load compiled kernels, as after a first use.", ""]


METHOD = """## How each figure is measured

- **warm epoch**: median of epochs 2..N of the first fit in a fresh process; test accuracy
  is evaluated after every epoch with the clock paused.
- **fit (fresh process)**: the whole first `fit` in a new process (model construction,
  compilation and first calls included, import and evaluation excluded); **start-up** =
  framework import time (a separate fresh process) + first epoch − warm epoch.
- **test acc**: after the last epoch of that fit; **time to target**: its cumulative fit
  time at the end of the first epoch whose test accuracy reached the target.
- **peak RSS**: `ru_maxrss` of the worker after both fits (data included: the same float32
  arrays for every framework), before any prediction is timed; **fit memory**: that peak
  minus the peak once the data was loaded, before the framework was imported: what the
  framework's libraries and its training added. scikit-learn imports pandas wherever it is
  installed, 30 MB more in fastmnist's and scikit-learn's processes: the versions above
  list pandas when it was.
- **predict 10k**: median of 5 one-call predictions of the 10,000 test images (labels);
  **1-image latency**: median of 200 single-row calls (PyTorch: the module under
  `inference_mode`; Keras: `model(x, training=False)` for one row, `model.predict` for 10k;
  fastmnist, scikit-learn: `predict`).
- **GFLOP/s**: 6 × forward multiply-adds per image (dense and conv layers) × training images
  / warm epoch; the peak is a numpy float32 matmul on the same threads.
"""


# --- charts ------------------------------------------------------------------------------

def write_charts(record: dict, out_dir: Path) -> list[Path]:
    """Bar charts of warm epoch time and predict throughput; [] without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        print("charts skipped: matplotlib is not installed (pip install 'fastmnist[plot]')")
        return []
    matplotlib.use("Agg")
    charts = [("compare_epoch.png", "warm_epoch_s", "warm epoch, s (lower is better)"),
              ("compare_predict.png", "predict_images_per_s",
               "predict 10k, images/s (higher is better)")]
    return [_bar_chart(record, metric, label, out_dir / name)
            for name, metric, label in charts]


def _bar_chart(record: dict, metric: str, label: str, path: Path) -> Path:
    """One panel per model on its own linear scale (times differ 30x between models)."""
    import matplotlib.pyplot as plt

    models = [m for m in record["settings"]["models"] if m in record["results"]]
    fig, axes = plt.subplots(1, len(models), figsize=(0.6 + 2.6 * len(models), 3.6),
                             squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        by_framework = record["results"][model]
        frameworks = [f for f in FRAMEWORKS if f in by_framework]
        values = [(by_framework[f].get("median") or {}).get(metric) for f in frameworks]
        bars = ax.bar(range(len(frameworks)), [v or 0 for v in values],
                      color=[f"C{FRAMEWORKS.index(f)}" for f in frameworks])
        ax.bar_label(bars, labels=[_compact(v) for v in values], fontsize=8)
        ax.set_xticks(range(len(frameworks)), [NAMES[f] for f in frameworks],
                      rotation=30, fontsize=8)
        ax.set_title(model, fontsize=10)
        ax.margins(y=0.15)
    axes[0][0].set_ylabel(label, fontsize=9)
    fig.suptitle(f"{record['date'][:10]}, {record['settings']['threads']} threads, "
                 f"{record['environment']['cpu']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _compact(x) -> str:
    """A bar's label: 3 significant digits, k / M for throughputs, n/a where none ran."""
    if x is None:
        return "n/a"
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if x >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.3g}"
