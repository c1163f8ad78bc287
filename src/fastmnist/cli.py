"""The ``fastmnist`` command line: data summary, training, evaluation, benchmark."""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import joblib
import numpy as np

from . import __version__, benchmark
from .datasets import load_fashion_mnist, load_mnist

_LOADERS = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastmnist", description=__doc__)
    parser.add_argument("--version", action="version", version=f"fastmnist {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="load the datasets and print a summary")
    data.add_argument("--dataset", choices=[*_LOADERS, "both"], default="both")
    _add_data_options(data)

    train = commands.add_parser("train", help="train a model on the training set, "
                                              "report test accuracy, save it")
    train.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    train.add_argument("--dataset", choices=list(_LOADERS), default="mnist")
    train.add_argument("--hidden", type=_sizes, default=None,
                       help="hidden layer sizes, e.g. 128,64,32 (mlp default; cnn: none)")
    train.add_argument("--epochs", type=int, default=None, help="default: 5 mlp, 3 cnn")
    train.add_argument("--batch-size", type=int, default=None, help="default: 32 mlp, "
                                                                    "128 cnn")
    train.add_argument("--learning-rate", type=float, default=1e-3)
    train.add_argument("--n-jobs", type=int, default=None, help="threads (default: all)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", default="model.pkl", help="where to save the model")
    _add_data_options(train)

    evaluate = commands.add_parser("evaluate", help="test accuracy and confusion matrix "
                                                    "of a saved model")
    evaluate.add_argument("model", help="a file written by `fastmnist train`")
    evaluate.add_argument("--dataset", choices=list(_LOADERS), default="mnist")
    _add_data_options(evaluate)

    benchmark.add_arguments(commands.add_parser(
        "bench", help="time fastmnist against PyTorch, Keras and scikit-learn",
        description=benchmark.driver.__doc__.splitlines()[0]))

    args = parser.parse_args(argv)
    return {"data": _summarise_data, "train": _train, "evaluate": _evaluate,
            "bench": benchmark.run}[args.command](args)


def _add_data_options(parser):
    parser.add_argument("--data-home", default=None, help="directory holding <dataset>/*.gz")
    parser.add_argument("--no-download", action="store_true", help="fail if files are missing")


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected sizes like 128,64,32, got {text!r}") from None
    if any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError(f"layer sizes must be >= 1, got {text!r}")
    return sizes


def _load(args, subset):
    return _LOADERS[args.dataset](subset, data_home=args.data_home,
                                  download=not args.no_download, return_X_y=True)


def _summarise_data(args: argparse.Namespace) -> int:
    names = list(_LOADERS) if args.dataset == "both" else [args.dataset]
    print(f"{'dataset':<14} {'subset':<6} {'images':>17} {'pixel mean':>10} "
          f"{'label counts (0..9)':<52} {'load s':>6}")
    for name in names:
        for subset in ("train", "test"):
            start = time.perf_counter()
            bunch = _LOADERS[name](subset, data_home=args.data_home,
                                   download=not args.no_download)
            seconds = time.perf_counter() - start
            counts = np.bincount(bunch.target, minlength=len(bunch.target_names))
            shape = "x".join(map(str, bunch.images.shape))
            print(f"{name:<14} {subset:<6} {shape:>17} {bunch.data.mean():>10.2f} "
                  f"{' '.join(map(str, counts)):<52} {seconds:>6.3f}")
    return 0


def _make_model(args):
    common = dict(learning_rate_init=args.learning_rate, n_jobs=args.n_jobs,
                  random_state=args.seed, verbose=True, tol=0, alpha=0.0)
    if args.model == "mlp":
        from ._mlp import MLPClassifier

        return MLPClassifier(args.hidden or (128, 64, 32), batch_size=args.batch_size or 32,
                             max_iter=args.epochs or 5, **common)
    from ._cnn import CNNClassifier

    return CNNClassifier(hidden_layer_sizes=args.hidden or (), batch_size=args.batch_size or 128,
                         max_iter=args.epochs or 3, image_shape=(28, 28), **common)


def _train(args: argparse.Namespace) -> int:
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    X, y = _load(args, "train")
    X_test, y_test = _load(args, "test")
    model = _make_model(args)
    print(f"training {model!r} on {len(X):,} {args.dataset} images")
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a fixed epoch budget
        model.fit(X, y)
    seconds = time.perf_counter() - start
    print(model._state.network)
    accuracy = model.score(X_test, y_test)
    print(f"test accuracy {accuracy:.2%}; fit {seconds:.1f} s for {model.n_iter_} epochs "
          f"(first-call compilation included), "
          f"{len(X) * model.n_iter_ / seconds:,.0f} images/s")
    _save_atomically(model, args.out)
    print(f"saved to {args.out}")
    return 0


def _save_atomically(model, path: str) -> None:
    # A temporary file in the same folder, renamed into place: an interrupted save never
    # leaves a truncated model where a good one was.
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".fastmnist-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            joblib.dump(model, f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _evaluate(args: argparse.Namespace) -> int:
    from sklearn.metrics import confusion_matrix

    model = joblib.load(args.model)
    X_test, y_test = _load(args, "test")
    start = time.perf_counter()
    predicted = model.predict(X_test)
    seconds = time.perf_counter() - start
    accuracy = np.mean(predicted == y_test)
    print(f"test accuracy {accuracy:.2%} on {len(X_test):,} {args.dataset} images "
          f"({len(X_test) / seconds:,.0f} images/s)")
    labels = model.classes_
    matrix = confusion_matrix(y_test, predicted, labels=labels)
    width = max(5, len(str(matrix.max())) + 1)
    print("confusion matrix (rows: true class, columns: predicted)")
    print(" " * 6 + "".join(f"{label!s:>{width}}" for label in labels))
    for label, row in zip(labels, matrix, strict=True):
        print(f"{label!s:>5} " + "".join(f"{count:>{width}}" for count in row))
    return 0
