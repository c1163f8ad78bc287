"""Median-time ratios (reference / fastmnist) per group of a pytest-benchmark JSON file.

Usage: python bench/ratios.py .benchmarks/loaders.json [--markdown]
"""

import argparse
import json
from collections import defaultdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json_file")
    args = parser.parse_args()
    with open(args.json_file) as f:
        report = json.load(f)
    medians = defaultdict(dict)
    for bench in report["benchmarks"]:
        medians[bench["group"]][bench["extra_info"]["impl"]] = bench["stats"]["median"]
    machine = report["machine_info"]
    print(f"{report['datetime'][:10]}, {machine['cpu']['brand_raw']}, "
          f"Python {machine['python_version']}\n")
    print("| benchmark | fastmnist median | reference median | speed-up |")
    print("| --- | ---: | ---: | ---: |")
    for group, times in medians.items():
        fast, ref = times["fastmnist"], times["reference"]
        print(f"| {group} | {_format(fast)} | {_format(ref)} | {ref / fast:.2f}x |")


def _format(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.1f} µs"


if __name__ == "__main__":
    main()
