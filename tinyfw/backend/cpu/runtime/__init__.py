"""The CPU backend's speed machinery, kept apart from the kernels: a reader of a kernel file sees
the mathematics and one ``launch.run(...)`` call; everything about threads, memory and BLAS is
here.

- ``environment.py``: process-wide settings (Numba's threading layer, OpenBLAS's idle spin,
  malloc), applied once by ``configure()`` when the CPU backend loads;
- ``launch.py``: every parallel threshold, the choice between the calling thread, helper threads
  and Numba's pool, and the generic parallel drivers;
- ``helper_threads.py``: splitting a mid-size call between the calling thread and helpers;
- ``atomics.py``: atomic add and acquire-load for kernels run by several threads;
- ``allocator.py``: cache-line-aligned copies;
- ``blas.py``: BLAS's gemm on strided views, callable from kernels.

Importing this package imports no NumPy (``configure`` must run before NumPy loads); the modules
above are imported by name where they are used.
"""
from .environment import configure

__all__ = ["configure"]
