"""Build the Cython extensions of fastmnist.

Everything else about the package lives in pyproject.toml; this file only exists because
compiled extensions need a list of sources, include paths and compiler directives.

Set ``FASTMNIST_CYTHON_DEBUG=1`` to build with bounds and wrap-around checks turned back on
(slower, but an out-of-range index raises IndexError instead of corrupting memory).
"""

import os

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTMNIST_CYTHON_DEBUG", "0") == "1"

# The same directives scikit-learn builds with: the tight loops index only inside checked
# bounds, so the checks are pure overhead in a release build.
DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
}

OPENMP = ["-fopenmp"]

extensions = [
    Extension(
        "fastmnist.datasets._idx",
        ["src/fastmnist/datasets/_idx.pyx"],
        libraries=["z"],
        # ZLIB_CONST makes zlib's next_in a const pointer, matching our const memoryview.
        define_macros=[("ZLIB_CONST", None)],
    ),
    Extension(
        "fastmnist.datasets._batch",
        ["src/fastmnist/datasets/_batch.pyx"],
        include_dirs=[np.get_include()],
        extra_compile_args=OPENMP,
        extra_link_args=OPENMP,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
]

setup(ext_modules=cythonize(extensions, compiler_directives=DIRECTIVES))
