"""The side-by-side benchmark: fastmnist against PyTorch, Keras and scikit-learn.

``fastmnist bench`` or ``python bench/compare.py``; BENCHMARKS.md (the project's shared
notes) defines the models, the peers and the fairness rules, which this implements:

- every (repetition, model, framework) runs alone in its own fresh process
  (``fastmnist.benchmark.worker``), one after the other, repetitions outermost so that
  the frameworks of one repetition meet the same machine conditions;
- the same thread budget for every framework, through each framework's own setting
  (recorded per run), the same float32 [0, 1] arrays, batch size, epochs and Adam;
- medians of ``--repeats`` repetitions, ratios taken within the run; a peer that is not
  installed, or cannot run a model, is reported as skipped with the reason.

Before the runs, one process fills fastmnist's on-disk kernel cache (``warmup``), so that
fresh processes measure a warm cache, as users run after the first time; its time is
recorded. Each framework's import time is measured once per repetition in a separate fresh
process. Workers read the data through ``fastmnist.datasets`` alone, which imports neither
scikit-learn nor Numba: a peer's peak RSS carries no part of fastmnist's (it did until
2026-11-21, about 190 MB more for every peer).

Writes ``compare.json`` (environment, settings, every raw run, medians, targets),
``compare.md`` and ``compare_*.png`` into ``--out-dir`` (default docs/benchmarks/; with
``--quick``, a temporary folder, so a smoke run never overwrites the published results).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from .models import MODELS
from .report import (
    FRAMEWORKS,
    derive,
    evaluate_targets,
    render_markdown,
    summarise,
    write_charts,
)

# What each worker imports before its first fit (fastmnist's package itself loads lazily)
IMPORTS = {"fastmnist": "from fastmnist import CNNClassifier, MLPClassifier",
           "pytorch": "import torch", "keras": "import tensorflow, keras",
           "sklearn": "from sklearn.neural_network import MLPClassifier"}
# pandas is no framework's dependency, but scikit-learn imports it wherever it is installed:
# 30 MB more in fastmnist's and scikit-learn's processes. The versions say whether it was.
VERSIONS = ("fastmnist", "numpy", "numba", "scipy", "scikit-learn", "torch", "tensorflow",
            "tensorflow-cpu", "keras", "threadpoolctl", "pandas")
QUICK = {"models": "mlp-seed", "frameworks": "fastmnist,sklearn", "epochs": 2,
         "limit": 5000, "repeats": 1}
DEFAULTS = {"models": ",".join(MODELS), "frameworks": ",".join(FRAMEWORKS), "epochs": None,
            "limit": None, "repeats": 3}
GEMM_N = 2048


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options, shared by ``python bench/compare.py`` and ``fastmnist bench``."""
    parser.add_argument("--models", help=f"comma list of {', '.join(MODELS)} (default: all)")
    parser.add_argument("--frameworks",
                        help=f"comma list of {', '.join(FRAMEWORKS)} (default: all)")
    parser.add_argument("--repeats", type=int, help="fresh-process repetitions (default 3)")
    parser.add_argument("--threads", type=int, default=2,
                        help="thread budget of every framework (default 2)")
    parser.add_argument("--epochs", type=int,
                        help="override every model's epochs (default: BENCHMARKS.md's)")
    parser.add_argument("--limit", type=int, help="train on the first N training images")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run under a minute: " + ", ".join(
                            f"{k} {v}" for k, v in QUICK.items()) + " unless given")
    parser.add_argument("--out-dir", help="where the JSON, markdown and charts go "
                                          "(default docs/benchmarks; --quick: a temp folder)")
    parser.add_argument("--no-charts", action="store_true", help="skip the PNG charts")
    parser.add_argument("--data-home", help="folder holding mnist/ (default: as load_mnist)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="compare.py", description=__doc__.splitlines()[0])
    return run(add_arguments(parser).parse_args(argv))


def _settings(args: argparse.Namespace) -> dict:
    """The options with --quick's and the standard defaults filled in, validated."""
    defaults = QUICK if args.quick else DEFAULTS
    chosen = {key: getattr(args, key) if getattr(args, key) is not None else default
              for key, default in defaults.items()}
    models = [m.strip() for m in chosen["models"].split(",") if m.strip()]
    frameworks = [f.strip() for f in chosen["frameworks"].split(",") if f.strip()]
    unknown = sorted(set(models) - set(MODELS)) + sorted(set(frameworks) - set(FRAMEWORKS))
    if unknown:
        raise SystemExit(f"unknown model or framework: {', '.join(unknown)}")
    if chosen["repeats"] < 1 or args.threads < 1 or (chosen["epochs"] or 1) < 1:
        raise SystemExit("--repeats, --threads and --epochs must be >= 1")
    n_train = min(chosen["limit"] or 60000, 60000)
    epochs = {m: chosen["epochs"] or MODELS[m].epochs for m in models}
    return {"models": models, "frameworks": frameworks, "repeats": chosen["repeats"],
            "threads": args.threads, "epochs": epochs, "epochs_override": chosen["epochs"],
            "limit": chosen["limit"], "n_train": n_train, "quick": args.quick,
            "data_home": args.data_home}


def _command(settings: dict) -> str:
    """The explicit command that repeats this run, however it was spelled."""
    words = ["fastmnist", "bench", "--models", ",".join(settings["models"]), "--frameworks",
             ",".join(settings["frameworks"]), "--repeats", str(settings["repeats"]),
             "--threads", str(settings["threads"])]
    for option, key in (("--epochs", "epochs_override"), ("--limit", "limit")):
        if settings[key] is not None:
            words += [option, str(settings[key])]
    return shlex.join(words)


def _out_dir(args: argparse.Namespace) -> Path:
    if args.out_dir:
        path = Path(args.out_dir)
    elif args.quick:
        path = Path(tempfile.gettempdir()) / "fastmnist-bench-quick"
    else:
        path = Path("docs/benchmarks")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    """CPU, load, Python and library versions (from package metadata: nothing imported).

    The load average says whether something else was running when the benchmark began.
    """
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
            "load_average": os.getloadavg(),
            "versions": {"python": platform.python_version(),
                         **{name: _version(name) for name in VERSIONS}}}


def gemm_peak(threads: int, n: int = GEMM_N, repeats: int = 5) -> dict:
    """The machine's float32 matmul rate through numpy's BLAS, on the thread budget."""
    import numpy as np
    from threadpoolctl import threadpool_info, threadpool_limits

    a, b = np.random.default_rng(0).random((2, n, n), dtype=np.float32)
    with threadpool_limits(limits=threads, user_api="blas"):
        a @ b  # noqa: B018 -- untimed: first-call and page-fault costs
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b  # noqa: B018
            times.append(time.perf_counter() - start)
    blas = [f"{lib['internal_api']} {lib['version']} {lib.get('architecture') or ''}".strip()
            for lib in threadpool_info() if lib["user_api"] == "blas"]
    return {"n": n, "times_s": times, "gflops": 2 * n ** 3 / statistics.median(times) / 1e9,
            "blas": ", ".join(blas) or "unknown BLAS"}


def _last_line(stderr: str, fallback: str) -> str:
    """What a failed process said last: the exception, for a Python traceback."""
    lines = stderr.strip().splitlines()
    return lines[-1] if lines else fallback


def _seconds_in_fresh_python(statement: str, env=None) -> tuple[float | None, str | None]:
    """``(seconds, None)`` that ``statement`` takes in a new interpreter, or ``(None, why)``."""
    code = (f"import time; start = time.perf_counter(); {statement}; "
            "print(time.perf_counter() - start)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env)
    if done.returncode:
        return None, _last_line(done.stderr, f"exit code {done.returncode}")
    return float(done.stdout.split()[-1]), None


def probe_import(statement: str) -> tuple[float | None, str | None]:
    """Import time of a framework in a fresh process; its error where it is not installed."""
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    return _seconds_in_fresh_python(statement, env)


def warm_kernel_cache() -> dict:
    """Compile or load every fastmnist kernel once, so workers start with a warm cache."""
    seconds, error = _seconds_in_fresh_python("import fastmnist; fastmnist.warmup()")
    return {"seconds": seconds} if error is None else {"error": error}


def run_worker(job: dict) -> dict:
    """One job in a fresh process: its result, or ``status: failed`` and stderr's tail."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "result.json"
        done = subprocess.run(
            [sys.executable, "-m", "fastmnist.benchmark.worker", json.dumps(job), str(path)],
            capture_output=True, text=True)
        if done.returncode or not path.exists():
            return {"status": "failed", "stderr": done.stderr[-4000:],
                    "reason": _last_line(done.stderr, f"exit code {done.returncode}")}
        return {"status": "ok", **json.loads(path.read_text())}


def _skip_reason(model: str, framework: str, import_error: str | None) -> str | None:
    if framework == "sklearn" and MODELS[model].is_cnn:
        return "scikit-learn has no convolutional layers (MLP rows only)"
    if import_error:
        return f"not installed ({import_error})"
    return None


def _progress(run: dict) -> str:
    head = f"  {run['model']:<10} {run['framework']:<10}"
    if run["status"] != "ok":
        return f"{head} {run['status']}: {run.get('reason', '')}"
    warm = run["warm_epoch_s"]
    return (f"{head} warm epoch {warm:.3f} s, " if warm else f"{head} ") + (
        f"fit {run['fit_s']:.2f} s, test accuracy {run['accuracy']:.2%}, "
        f"peak RSS {run['peak_rss_mb']:,.0f} MB")


def measure(settings: dict) -> list[dict]:
    """Every run, in order: repetitions, then models, then frameworks."""
    runs = []
    for repetition in range(settings["repeats"]):
        print(f"repetition {repetition + 1} of {settings['repeats']}", flush=True)
        imports = {f: probe_import(IMPORTS[f]) for f in settings["frameworks"]}
        for model in settings["models"]:
            for framework in settings["frameworks"]:
                import_s, import_error = imports[framework]
                run = {"model": model, "framework": framework, "repetition": repetition,
                       "seed": repetition, "import_s": import_s}
                reason = _skip_reason(model, framework, import_error)
                if reason:
                    run.update(status="skipped", reason=reason)
                else:
                    job = {"model": model, "framework": framework, "seed": repetition,
                           "epochs": settings["epochs"][model], "limit": settings["limit"],
                           "threads": settings["threads"], "data_home": settings["data_home"]}
                    run.update(run_worker(job))
                    if run["status"] == "ok":
                        run.update(derive(run))
                runs.append(run)
                print(_progress(run), flush=True)
    return runs


def run(args: argparse.Namespace) -> int:
    """Measure, then write compare.json / .md / *.png and print the markdown."""
    settings = _settings(args)
    out_dir = _out_dir(args)
    record = {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
              "command": _command(settings),
              "environment": environment(), "settings": settings}
    print(f"float32 GEMM peak on {settings['threads']} threads ...", flush=True)
    record["gemm"] = gemm_peak(settings["threads"])
    if "fastmnist" in settings["frameworks"]:
        record["kernel_cache_warmup"] = warm_kernel_cache()
    record["runs"] = measure(settings)
    record["results"] = summarise(record["runs"])
    record["targets"] = evaluate_targets(record["results"])
    markdown = render_markdown(record)
    (out_dir / "compare.json").write_text(json.dumps(record, indent=1) + "\n")
    (out_dir / "compare.md").write_text(markdown)
    charts = [] if args.no_charts else write_charts(record, out_dir)
    print("\n" + markdown)
    written = ["compare.json", "compare.md", *(p.name for p in charts)]
    print(f"wrote {', '.join(written)} to {out_dir}")
    return 0
