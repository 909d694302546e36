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

def zstd_library() -> str:
    """Link libzstd by its dev name if present, else by its runtime soname."""
    import ctypes.util

    found = ctypes.util.find_library("zstd")
    if found is None:
        raise SystemExit(
            "h5record needs the zstd shared library (libzstd.so.1); install it, e.g. "
            "`apt-get install libzstd1` or your system's zstd package"
        )
    for folder in ("/usr/lib", "/usr/lib64", "/usr/local/lib", "/usr/lib/x86_64-linux-gnu",
                   "/usr/lib/aarch64-linux-gnu", "/lib/x86_64-linux-gnu"):
        if os.path.exists(os.path.join(folder, "libzstd.so")):
            return "zstd"
    return ":" + found


extensions = [
    Extension(
        "h5record._fast",
        ["h5record/_fast.pyx"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3"],
        libraries=[zstd_library()],
    ),
    Extension("h5record._io", ["h5record/_io.pyx"], extra_compile_args=["-O2"]),
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives))
