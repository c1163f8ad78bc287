"""The side-by-side benchmark (fastmnist.benchmark): arithmetic, rendering, a real quick run."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fastmnist.benchmark import driver, report
from fastmnist.benchmark.models import MODELS, forward_macs, n_params, train_flops
from fastmnist.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]


def test_mlp_seed_sizes_by_hand():
    spec = MODELS["mlp-seed"]
    assert n_params(spec) == 111_146
    macs = 784 * 128 + 128 * 64 + 64 * 32 + 32 * 10
    assert forward_macs(spec) == macs
    assert train_flops(spec) == 3 * 2 * macs


def test_cnn_keras_sizes_by_hand():
    spec = MODELS["cnn-keras"]
    assert n_params(spec) == 34_826
    # conv 1: 26x26 outputs x 32 filters x 3x3x1; conv 2: 11x11 x 64 x 3x3x32; dense 1600->10
    assert forward_macs(spec) == 26 * 26 * 32 * 9 + 11 * 11 * 64 * 9 * 32 + 5 * 5 * 64 * 10


def test_derive_takes_epochs_from_cumulative_ends():
    run = {"model": "mlp-seed", "import_s": 1.0, "n_train": 60_000, "n_test": 10_000,
           "epoch_end_s": [3.0, 4.0, 5.2, 6.0], "test_accuracy": [0.95, 0.965, 0.971, 0.97],
           "predict_10k_s": [0.02, 0.01, 0.03], "data_rss_mb": 430.0, "peak_rss_mb": 470.5}
    derived = report.derive(run)
    assert derived["epoch_s"] == pytest.approx([3.0, 1.0, 1.2, 0.8])
    assert derived["warm_epoch_s"] == pytest.approx(1.0)
    assert derived["startup_s"] == pytest.approx(1.0 + 3.0 - 1.0)
    assert derived["time_to_target_s"] == 5.2  # first epoch at >= 97 %, cumulative
    assert derived["accuracy"] == 0.97
    assert derived["predict_images_per_s"] == pytest.approx(10_000 / 0.02)  # median call
    assert derived["gflops"] == pytest.approx(train_flops(MODELS["mlp-seed"]) * 6e4 / 1e9)
    assert derived["fit_rss_mb"] == 40.5


def test_medians_count_never_reached_as_infinite():
    runs = [{"model": "mlp-seed", "framework": "pytorch", "status": "ok",
             "time_to_target_s": t, "warm_epoch_s": w} for t, w in
            [(2.0, 1.0), (None, 3.0), (None, 2.0)]]
    median = report.summarise(runs)["mlp-seed"]["pytorch"]["median"]
    assert median["time_to_target_s"] is None
    assert median["warm_epoch_s"] == 2.0


def _ok(**figures):
    median = dict.fromkeys(report.METRICS)
    median.update(figures)
    return {"status": "ok", "repetitions": 3, "failed": 0, "median": median}


def _synthetic_record():
    common = dict(fit_s=1.2, fit_warm_s=1.0, startup_s=0.9, time_to_target_s=None, gflops=20.0)
    results = {"mlp-seed": {
        "fastmnist": _ok(warm_epoch_s=0.2, accuracy=0.9745, peak_rss_mb=250.0, fit_rss_mb=40.0,
                         predict_images_per_s=2e6, latency_s=5e-6, **common),
        "pytorch": _ok(warm_epoch_s=1.0, accuracy=0.9727, peak_rss_mb=540.0, fit_rss_mb=100.0,
                       predict_images_per_s=8e5, latency_s=29e-6, **common),
        "keras": {"status": "skipped", "repetitions": 0, "failed": 0,
                  "reason": "not installed (No module named 'tensorflow')"},
        "sklearn": _ok(warm_epoch_s=0.9, accuracy=0.9742, peak_rss_mb=360.0,
                       predict_images_per_s=6.5e5, latency_s=118e-6, **common),
    }}
    return {"date": "2026-11-21 08:00 UTC", "command": "fastmnist bench --models mlp-seed",
            "environment": {"cpu": "Test CPU", "cores": 2, "load_average": [1.7, 1.2, 0.9],
                            "versions": {"python": "3.11", "torch": None}},
            "settings": {"models": ["mlp-seed"], "threads": 2, "repeats": 3,
                         "epochs": {"mlp-seed": 5}, "n_train": 60_000},
            "gemm": {"gflops": 200.0, "n": 2048, "blas": "openblas"},
            "results": results}


def test_markdown_table_and_targets_from_a_synthetic_record():
    markdown = report.render_markdown(_synthetic_record())
    lines = markdown.splitlines()
    assert "Test CPU · 2 threads for every framework · medians of 3" in lines[2]
    assert "torch" not in lines[4]  # versions of absent packages are left out
    assert lines[6].startswith("Load average (1 min) when the run began: 1.70 on 2 cores. "
                               "Something else was using the CPU")
    row = next(line for line in lines if line.startswith("| PyTorch |"))
    assert row.split(" | ")[1:3] == ["1", "5.00"]  # warm epoch, ratio to fastmnist
    assert "| fastmnist | 0.2 | 1.00 | 1.2 | 0.9 | 97.45 | not reached | 250 | 40 | 2,000,000 |" \
        " 5 | 20.0 (10%) |" in lines
    assert "| Keras | skipped: not installed (No module named 'tensorflow') |" in markdown
    targets = {line.split(" | ")[0][2:]: line for line in lines
               if line.startswith("| mlp-seed:") or line.startswith("| cnn-keras:")}
    assert targets["mlp-seed: warm epoch ≤ 1/4 of PyTorch's"].endswith("| 0.2 | **met** |")
    assert targets["mlp-seed: warm epoch ≤ 1/5 of scikit-learn's"].endswith(
        "| 0.222 | **NOT met** |")
    assert "+0.03 points | **met**" in targets[
        "mlp-seed: test accuracy within 0.3 points of the best peer's"]
    assert "best peer PyTorch 800,000 img/s | 2.5 | **met**" in targets[
        "mlp-seed: predict 10k throughput ≥ 1.5x the best peer's"]
    assert targets["mlp-seed: peak RSS ≤ 1/2 of PyTorch's"].endswith("| 0.463 | **met** |")
    assert targets["mlp-seed: framework + fit memory (peak RSS - RSS with the data loaded) "
                   "≤ 1/2 of PyTorch's"].endswith("| 0.4 | **met** |")
    assert targets["cnn-keras: warm epoch ≤ 1/2 of PyTorch's"].endswith(
        "| n/a: cnn-keras not run |")


def test_targets_name_a_skipped_peer():
    record = _synthetic_record()
    del record["results"]["mlp-seed"]["pytorch"]
    record["results"]["mlp-seed"]["sklearn"] = {"status": "skipped", "reason": "why"}
    statuses = {t["target"]: t["status"] for t in report.evaluate_targets(record["results"])}
    assert statuses["mlp-seed: warm epoch ≤ 1/4 of PyTorch's"] == "n/a: PyTorch not run"
    assert statuses["mlp-seed: warm epoch ≤ 1/5 of scikit-learn's"] == \
        "n/a: scikit-learn skipped: why"
    assert statuses["mlp-seed: test accuracy within 0.3 points of the best peer's"] == \
        "n/a: no peer ran"


def test_a_peer_worker_loads_the_data_without_fastmnist_estimators(fresh_python):
    # A peer's worker reads MNIST through fastmnist.datasets; scikit-learn and Numba
    # (~190 MB of RSS) must not come with it, or every peer's peak RSS would carry them.
    code = ("import sys\n"
            "from fastmnist.benchmark import worker\n"
            "X, y, X_test, y_test = worker.load_data(100, None)\n"
            "heavy = ('sklearn', 'numba', 'scipy', 'llvmlite')\n"
            "print(X.dtype, X.shape, X_test.shape, float(X.max()),\n"
            "      sorted(m for m in heavy if m in sys.modules))")
    assert fresh_python(code).split() == ["float32", "(100,", "784)", "(10000,", "784)",
                                          "1.0", "[]"]


def test_probe_import_reports_why_a_framework_is_missing():
    seconds, reason = driver.probe_import("import no_such_framework_fastmnist")
    assert seconds is None
    assert reason == "ModuleNotFoundError: No module named 'no_such_framework_fastmnist'"


def test_a_crashing_worker_is_recorded_not_raised():
    result = driver.run_worker({"model": "no-such-model"})
    assert result["status"] == "failed"
    assert result["reason"] == "KeyError: 'no-such-model'"


def test_quick_run_for_real(shared_data, tmp_path, capsys):
    """``fastmnist bench --quick`` end to end on 1,000 images: real, plausible numbers."""
    assert cli_main(["bench", "--quick", "--limit", "1000",
                     "--frameworks", "fastmnist,sklearn,keras", "--out-dir", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "compare.json").read_text())
    assert record["settings"]["threads"] == 2
    assert record["environment"]["versions"]["fastmnist"] == "0.1.0"
    assert record["gemm"]["gflops"] > 1
    runs = {run["framework"]: run for run in record["runs"]}
    for framework in ("fastmnist", "sklearn"):
        run = runs[framework]
        assert run["status"] == "ok", run.get("stderr")
        assert run["n_train"] == 1000 and run["n_test"] == 10_000
        assert len(run["epoch_s"]) == 2 and min(run["epoch_s"]) > 0
        assert 0.5 < run["accuracy"] <= 1  # 2 epochs on 1,000 images: far above chance
        assert run["fit_s"] > 0 and run["fit_warm_s"] > 0 and run["import_s"] > 0
        assert run["peak_rss_mb"] >= run["data_rss_mb"] > 0
        assert run["predict_images_per_s"] > 1000 and 0 < run["latency_s"] < 1
    assert runs["fastmnist"]["thread_settings"] == {"n_jobs": 2}
    assert runs["sklearn"]["thread_settings"] == {"blas": [2]}
    if importlib.util.find_spec("tensorflow") is None:
        assert runs["keras"]["status"] == "skipped"
        assert "tensorflow" in runs["keras"]["reason"]
    markdown = (tmp_path / "compare.md").read_text()
    assert "| fastmnist | " in markdown and "| scikit-learn | " in markdown
    assert "## Targets (issue 5)" in markdown
    assert "n/a: cnn-keras not run" in markdown
    assert markdown in capsys.readouterr().out
    charts = {"compare_epoch.png", "compare_predict.png"}
    if importlib.util.find_spec("matplotlib"):
        assert charts <= {p.name for p in tmp_path.iterdir()}


def test_bench_script_is_the_same_command():
    out = subprocess.run([sys.executable, str(REPO / "bench" / "compare.py"), "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--quick" in out and "--out-dir" in out
