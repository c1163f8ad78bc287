"""Cold-compile and warm-start times of every kernel, each in a fresh process.

"cold": an empty Numba cache directory, so every kernel compiles. "warm": the same process
started again, loading every kernel from that cache. Both report the import time of
fastmnist and the time of ``fastmnist.warmup()`` per kernel module (float32).

Usage: python bench/compile_times.py
"""

import json
import os
import subprocess
import sys
import tempfile

PROBE = """
import json, time
start = time.perf_counter()
import fastmnist
imported = time.perf_counter() - start
per_module = fastmnist.warmup()
print(json.dumps({"import": imported, "warmup": sum(per_module.values()), **per_module}))
"""


def measure(cache_dir: str) -> dict[str, float]:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, FASTMNIST_CACHE="1")
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def main() -> None:
    with tempfile.TemporaryDirectory() as cache_dir:
        cold = measure(cache_dir)
        warm = measure(cache_dir)
    print("| seconds | cold (empty cache) | warm (cache filled) |")
    print("| --- | ---: | ---: |")
    for key in cold:
        print(f"| {key} | {cold[key]:.2f} | {warm[key]:.3f} |")


if __name__ == "__main__":
    main()
