"""Median times per group of a pytest-benchmark JSON file, with ratios to fastmnist.

Each group holds one benchmark per implementation (``extra_info["impl"]``: "fastmnist",
"reference", "numpy", "torch", ...). The ratio column is peer median / fastmnist median,
so above 1 means fastmnist is faster. Where a benchmark records ``extra_info["flops"]``,
the achieved GFLOP/s is shown too.

Usage: python bench/ratios.py .benchmarks/kernels.json
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
    groups = defaultdict(dict)
    for bench in report["benchmarks"]:
        groups[bench["group"]][bench["extra_info"]["impl"]] = bench
    machine = report["machine_info"]
    print(f"{report['datetime'][:10]}, {machine['cpu']['brand_raw']}, "
          f"Python {machine['python_version']}\n")
    peers = sorted({impl for g in groups.values() for impl in g} - {"fastmnist"})
    header = ["benchmark", "fastmnist"] + [f"{p} (ratio)" for p in peers]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" + " ---: |" * (len(header) - 1))
    for group, by_impl in groups.items():
        fast = by_impl["fastmnist"]["stats"]["median"]
        cells = [group, _cell(by_impl["fastmnist"])]
        for peer in peers:
            if peer in by_impl:
                peer_median = by_impl[peer]["stats"]["median"]
                cells.append(f"{_cell(by_impl[peer])} ({peer_median / fast:.2f}x)")
            else:
                cells.append("—")
        print("| " + " | ".join(cells) + " |")


def _cell(bench) -> str:
    seconds = bench["stats"]["median"]
    text = f"{seconds * 1e3:.2f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.1f} µs"
    flops = bench["extra_info"].get("flops")
    return f"{text}, {flops / seconds / 1e9:.1f} GFLOP/s" if flops else text


if __name__ == "__main__":
    main()
