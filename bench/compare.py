"""fastmnist side by side with PyTorch, Keras and scikit-learn (BENCHMARKS.md).

The same as ``fastmnist bench``; the harness lives in ``fastmnist.benchmark`` so that the
installed command has it too. Full run (about half an hour on 2 cores, results into
docs/benchmarks/): ``python bench/compare.py``; smoke run: ``python bench/compare.py --quick``.
"""

from fastmnist.benchmark import main

if __name__ == "__main__":
    raise SystemExit(main())
