"""``gemm`` for Numba kernels: BLAS's matrix product on row-major views with any row stride.

Numba's ``np.dot`` inside a kernel calls BLAS too (SciPy's ``cython_blas``), but only on whole
arrays: no scale factor, no accumulation into the output, and operands must be contiguous, so a
kernel that works on the heads of a packed ``(B, L, 3, H, Dh)`` projection first copies each head
into a scratch tile, and copies and adds the results back. ``gemm`` passes the row stride of each
view to BLAS as its leading dimension and exposes ``alpha`` and ``beta``:

    c = alpha * op(a) @ op(b) + beta * c        op(x) = x.T if trans_x else x

for 2-D float32 or float64 views whose last axis is contiguous (stride of one element), e.g.
``q[b, h]`` of a strided ``(B, H, L, D)`` view. The function pointers are SciPy's BLAS (the
library Numba's own ``np.dot`` uses), looked up once; Fortran BLAS is column-major, so the
row-major product is computed as its transpose, ``c.T = op(b).T @ op(a).T``.

Kernels call ``gemm`` on small tiles from inside their own split over the cores, so they run
under ``one_blas_thread()``: a BLAS that started threads of its own for each tile (OpenBLAS does
above about 64^3 multiply-adds) would fight the kernel's threads for the same cores.
"""
import contextlib
import ctypes
import functools
import glob
import os

import numpy as np
from numba import njit, types
from numba.extending import overload
from numba.np.linalg import _BLAS

__all__ = ["gemm", "gemm_scratch", "one_blas_thread", "rows_are_contiguous"]

# Numba's own wrapper of SciPy's Fortran gemm (the one its np.dot calls): an external symbol of
# Numba's helper library, so the kernels that call it can be cached (a ctypes function pointer
# would be a "dynamic global" and make every kernel recompile in each process).
_GEMM = {types.float32: (_BLAS().numba_xxgemm(types.float32), ord("s")),
         types.float64: (_BLAS().numba_xxgemm(types.float64), ord("d"))}
_N, _T = ord("N"), ord("T")


def _fortran_gemm(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Fortran ``?gemm`` on the pointers of a, b, c (arrays) and alpha, beta (1-element
    arrays), the routine chosen by c's dtype when a kernel is compiled."""


@overload(_fortran_gemm)
def _fortran_gemm_of_dtype(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    if c.dtype not in _GEMM:
        return None
    fn, kind = _GEMM[c.dtype]

    def impl(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        fn(kind, transa, transb, m, n, k, alpha.ctypes, a.ctypes, lda, b.ctypes, ldb,
           beta.ctypes, c.ctypes, ldc)
    return impl


@njit(inline="always")
def gemm_scratch(like):
    """The two scalars (alpha, beta) ``gemm`` passes by pointer, for products of arrays of
    ``like``'s dtype: allocated once per kernel call, not per product."""
    return np.empty(2, dtype=like.dtype)


@njit(inline="always")
def _leading(x):
    """Row stride of a 2-D view in elements (at least its row length, as BLAS requires, which a
    single-row view's arbitrary stride may not be)."""
    if x.shape[0] > 1:
        return max(1, x.strides[0] // x.itemsize)
    return max(1, x.shape[1])


@njit(cache=True)
def gemm(alpha, a, trans_a, b, trans_b, beta, c, scalars):
    """``c = alpha op(a) op(b) + beta c`` in place; see the module docstring. Shapes must agree
    (the caller's kernel guarantees it; BLAS would read out of bounds otherwise)."""
    m, n = c.shape
    k = a.shape[0] if trans_a else a.shape[1]
    if m == 0 or n == 0:
        return
    scalars[0] = alpha
    scalars[1] = beta
    # column-major: c.T = op(b).T op(a).T, so b comes first
    _fortran_gemm(_T if trans_b else _N, _T if trans_a else _N, n, m, k, scalars[0:1], b,
                  _leading(b), a, _leading(a), scalars[1:2], c, _leading(c))


def rows_are_contiguous(*arrays):
    """Whether the 2-D slices over the last two axes of every array can go to ``gemm`` as they
    are: elements of a row adjacent (stride of one element) and rows apart by at least a row's
    length (a positive leading dimension BLAS accepts). Axes of length one have any stride."""
    for a in arrays:
        if a.ndim < 2:
            return False
        rows, cols = a.shape[-2:]
        if cols > 1 and a.strides[-1] != a.itemsize:
            return False
        if rows > 1 and a.strides[-2] < max(1, cols) * a.itemsize:
            return False
    return True


# The thread controls of SciPy's bundled OpenBLAS under the names its builds have used.
_THREAD_CONTROL_NAMES = (("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
                         ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
                         ("openblas_get_num_threads", "openblas_set_num_threads"))

def _loaded_openblas_paths(maps="/proc/self/maps"):
    """Paths of the OpenBLAS libraries this process has loaded, as Linux lists its mappings (an
    OpenBLAS that SciPy links from outside its package, as conda's and distributions' builds
    do); empty where there is no such list."""
    try:
        with open(maps) as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower()}
    except OSError:
        return []
    return sorted(p for p in paths if "openblas" in os.path.basename(p).lower())


def _find_thread_controls():
    """(get, set) of the thread count of the BLAS ``gemm`` calls, or None. SciPy's wheels bundle
    OpenBLAS beside the package (``scipy.libs``, ``scipy/.dylibs``); other builds link an
    OpenBLAS the process has loaded from elsewhere. Another BLAS (MKL, Accelerate) has no such
    controls here, and its products then run as that library decides."""
    import scipy   # Numba's BLAS is SciPy's; loaded already when this module was imported
    package = os.path.dirname(scipy.__file__)
    bundled = [path for folder in (package + ".libs", os.path.join(package, ".dylibs"))
               for path in sorted(glob.glob(os.path.join(folder, "*openblas*")))]
    for path in bundled + _loaded_openblas_paths():
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for get_name, set_name in _THREAD_CONTROL_NAMES:
            get, set_ = getattr(library, get_name, None), getattr(library, set_name, None)
            if get is not None and set_ is not None:
                get.restype, get.argtypes = ctypes.c_int, []
                set_.restype, set_.argtypes = None, [ctypes.c_int]
                return get, set_
    return None


@functools.cache
def blas_thread_controls():
    """The (get, set) pair of ``_find_thread_controls``, looked up once per process."""
    return _find_thread_controls()


@contextlib.contextmanager
def one_blas_thread():
    """Inside the block, the BLAS behind ``gemm`` runs every product on the calling thread; its
    thread count is restored afterwards. tinyfw launches kernels from one Python thread."""
    controls = blas_thread_controls()
    before = controls[0]() if controls is not None else 1
    if before == 1:
        yield
        return
    controls[1](1)
    try:
        yield
    finally:
        controls[1](before)
