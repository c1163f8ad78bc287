"""The ``fastmnist`` command line."""

from __future__ import annotations

import argparse
import time

import numpy as np

from . import __version__
from .datasets import load_fashion_mnist, load_mnist

_LOADERS = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastmnist", description=__doc__)
    parser.add_argument("--version", action="version", version=f"fastmnist {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="load the datasets and print a summary")
    data.add_argument("--dataset", choices=[*_LOADERS, "both"], default="both")
    data.add_argument("--data-home", default=None, help="directory holding <dataset>/*.gz")
    data.add_argument("--no-download", action="store_true", help="fail if files are missing")

    args = parser.parse_args(argv)
    return _summarise_data(args)


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
