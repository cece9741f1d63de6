"""numba, when installed, and the compile settings every CPU kernel module uses.

Without numba the names stay importable (the decorators return the function unchanged,
``prange`` is ``range``) and nothing compiled is called: the package then runs on the
dense backend.
"""

from __future__ import annotations

try:
    import numba
except ImportError:  # the package works without numba, on the dense backend
    numba = None

if numba is not None:
    #: A compiled function run on the calling thread.
    jit = numba.njit(fastmath=False, cache=True)
    #: A compiled function whose ``prange`` loops run on numba's thread pool.
    parallel = numba.njit(parallel=True, fastmath=False, cache=True)
    #: A compiled helper inlined into its callers.
    helper = numba.njit(inline="always", fastmath=False, cache=True)
    #: For dot products: reassociation lets LLVM vectorise the sums (another summation
    #: order, as any BLAS uses).
    dot_helper = numba.njit(fastmath={"reassoc", "contract"}, cache=True)
    prange = numba.prange
else:

    def jit(fn):
        return fn

    parallel = helper = dot_helper = jit
    prange = range
