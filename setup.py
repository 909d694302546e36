"""Build the compiled kernels; all metadata lives in pyproject.toml."""

import os

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

# H5RECORD_SAFE=1 builds with bounds checks on, for debugging and one CI pass.
SAFE = os.environ.get("H5RECORD_SAFE", "") not in ("", "0")

directives = {
    "language_level": 3,
    "boundscheck": SAFE,
    "wraparound": SAFE,
    "cdivision": not SAFE,
    "initializedcheck": SAFE,
    "embedsignature": True,
}

extensions = [
    Extension(
        "h5record._fast",
        ["h5record/_fast.pyx"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3"],
    )
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives))
