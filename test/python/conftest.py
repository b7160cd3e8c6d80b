"""pytest loads this before the test modules: tapegrok is imported first so that it chooses OpenBLAS's
kernels (as the tapegrok executables do) before NumPy loads the same OpenBLAS; the bit-for-bit
comparisons with the CLI depend on it."""

import tapegrok  # noqa: F401
