"""Compile every CUDA kernel launch of the test suite to PTX for real GPUs -- no GPU needed.

The simulator runs kernels as plain Python, so code that a real GPU's compiler rejects (untyped
constructs, unsupported calls, inconsistent types) passes simulator tests silently. Under the
simulator the backend records every launch's kernel and argument types
(``tinyfw.backend.cuda.runtime.recorded_launches``). This script

1. checks that a compiler is there: compiles an empty kernel for each target (``--probe``),
2. runs every test marked ``cuda`` under the simulator once and saves the launches
   (``--record``), then
3. without the simulator, rebuilds each kernel from its factory and compiles it with
   ``numba.cuda.compile_ptx`` for each target in ``TARGETS`` (``--compile``), listing every
   kernel that fails, and checking that the PTX names the requested target (the toolkit
   silently picks the nearest architecture it supports otherwise).

Usage: ``python tests/cuda_ptx_check.py`` (``tests/test_cuda_ptx.py`` runs it; it is marked
slow; ``.ci/run`` runs it directly). It needs libNVVM and NVRTC, e.g.
``pip install "numba-cuda[cu12]"``, which brings both as wheels, or a CUDA toolkit.

Exit status: 0 every signature compiled for every target; 1 a compile failed (listed), or the
compiler is there but broken; 77 no compiler (libNVVM or NVRTC not found: the automake
"skipped" code, clear of pytest's 0-5); otherwise the simulator run's pytest status.
"""
import glob
import importlib
import os
import pickle
import re
import subprocess
import sys
import tempfile
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
#: Compute capabilities to compile for: sm_75 (Turing, the oldest target of CUDA 13) and the
#: data-centre GPUs of today, sm_80 (A100) and sm_90 (H100).
TARGETS = ((7, 5), (8, 0), (9, 0))
FAILED = 1
NO_COMPILER = 77
#: Exceptions (by class name, so their packages need not be importable) that mean the CUDA
#: compiler libraries are missing, as opposed to present and failing. ImportError covers a
#: missing numba.cuda and numba's NvvmSupportError / NvrtcSupportError.
_MISSING_LIBRARY = ("DynamicLibNotFoundError", "DynamicLibNotAvailableError")


def _env(simulator):
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    if simulator:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(HERE), env.get("PYTHONPATH", "")])
    return env


def _compiler_missing(error):
    return isinstance(error, ImportError) or any(
        cls.__name__ in _MISSING_LIBRARY for cls in type(error).__mro__)


def _first_line(error):
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:300] if text else ''}"


def _ptx_target(ptx):
    """The ``sm_XY`` that a PTX module's ``.target`` directive names."""
    match = re.search(r"^\s*\.target\s+(sm_\d+a?)", ptx, re.MULTILINE)
    return match.group(1) if match else None


def _compile(kernel, argtypes, cc):
    """PTX of ``kernel`` for ``argtypes`` on ``cc``; raises if it names another target."""
    from numba import cuda
    ptx, _ = cuda.compile_ptx(kernel, argtypes, cc=cc)
    wanted, got = f"sm_{cc[0]}{cc[1]}", _ptx_target(ptx)
    if got != wanted:
        raise RuntimeError(f"asked for {wanted}, the PTX targets {got}")
    return ptx


def probe():
    """Compile an empty kernel for each target: 0, or NO_COMPILER, or FAILED."""
    try:
        for cc in TARGETS:
            _compile(lambda a: None, "void(float32[::1])", cc)
    except Exception as e:  # noqa: BLE001  sorted into "missing" and "broken" below
        if _compiler_missing(e):
            print(f"no CUDA compiler: {_first_line(e)}")
            return NO_COMPILER
        traceback.print_exc()
        print(f"the CUDA compiler is there but fails on an empty kernel: {_first_line(e)}")
        return FAILED
    return 0


def record(path, test_files):
    """Run the ``cuda`` tests of ``test_files`` under the simulator in this process; pickle the
    recorded launches to ``path``."""
    import pytest
    status = pytest.main(["-q", "-p", "no:cacheprovider", "-m", "cuda and not slow",
                          *test_files])
    from tinyfw.backend.cuda import runtime
    with open(path, "wb") as f:
        pickle.dump(runtime.recorded_launches(), f)
    return int(status)


def compile_all(path):
    """Compile every recorded (kernel, argument types) to PTX for every target; 0 if all do."""
    from numba import cuda
    cuda.is_available = lambda: True  # the backend refuses to import without a GPU
    with open(path, "rb") as f:
        launches = sorted(pickle.load(f), key=repr)
    if not launches:
        print("no kernel launches were recorded")
        return FAILED
    failures = []
    for (module, factory, key), argtypes in launches:
        kernel = getattr(importlib.import_module(module), factory)(*key)
        for cc in TARGETS:
            try:
                _compile(kernel.py_func, argtypes, cc)
            except Exception as e:  # noqa: BLE001  report every failing kernel, not the first
                failures.append(f"sm_{cc[0]}{cc[1]} {module}.{factory}{key} {argtypes}: "
                                f"{type(e).__name__}: {str(e)[:2000]}")
    for failure in failures:
        print(failure, end="\n\n")
    targets = ", ".join(f"sm_{major}{minor}" for major, minor in TARGETS)
    print(f"compiled {len(launches) * len(TARGETS) - len(failures)} of "
          f"{len(launches) * len(TARGETS)} (kernel signature, target) pairs to PTX: "
          f"{len(launches)} signatures for {targets}")
    return FAILED if failures else 0


def main(argv):
    if argv[:1] == ["--probe"]:
        return probe()
    if argv[:1] == ["--record"]:
        return record(argv[1], argv[2:])
    if argv[:1] == ["--compile"]:
        return compile_all(argv[1])
    me = [sys.executable, os.path.abspath(__file__)]
    status = subprocess.run(me + ["--probe"], env=_env(False)).returncode
    if status:
        return status
    test_files = [f for f in sorted(glob.glob(os.path.join(HERE, "test_*.py")))
                  if not f.endswith("test_cuda_ptx.py")]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "launches.pkl")
        recorded = subprocess.run(me + ["--record", path] + test_files, env=_env(True))
        if recorded.returncode:
            print("the simulator tests failed; fix them first")
            return recorded.returncode
        return subprocess.run(me + ["--compile", path], env=_env(False)).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
