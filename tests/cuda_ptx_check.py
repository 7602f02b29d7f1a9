"""Compile every CUDA kernel launch of the test suite to PTX for a real GPU -- no GPU needed.

The simulator runs kernels as plain Python, so code that a real GPU's compiler rejects (untyped
constructs, unsupported calls, inconsistent types) passes simulator tests silently. Under the
simulator the backend records every launch's kernel and argument types
(``tinyfw.backend.cuda.runtime.recorded_launches``). This script

1. runs the CUDA tests under the simulator and saves those launches (``--record``), then
2. without the simulator, rebuilds each kernel from its factory and compiles it with
   ``numba.cuda.compile_ptx`` (``--compile``), listing every kernel that fails.

Usage: ``python tests/cuda_ptx_check.py`` (``tests/test_cuda_ptx.py`` runs it; it is marked
slow). It needs NVVM and NVRTC: a CUDA toolkit, or ``pip install "cuda-toolkit[nvvm,nvrtc]"``
with ``LD_LIBRARY_PATH`` (or ``CUDA_HOME``) pointing at them.
Exit status: 0 all compiled, 1 failures (listed), 3 NVVM unavailable.
"""
import glob
import importlib
import os
import pickle
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
#: Compute capability to compile for: sm_75 (Turing), the oldest target of CUDA 13.
CC = (7, 5)
NO_NVVM = 3


def _env(simulator):
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    if simulator:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(HERE), env.get("PYTHONPATH", "")])
    return env


def record(path, test_files):
    """Run ``test_files`` under the simulator in this process; pickle the recorded launches."""
    import pytest
    status = pytest.main(["-q", "-p", "no:cacheprovider", "-m", "cuda and not slow",
                          *test_files])
    from tinyfw.backend.cuda import runtime
    with open(path, "wb") as f:
        pickle.dump(runtime.recorded_launches(), f)
    return int(status)


def compile_all(path):
    """Compile every recorded (kernel, argument types) to PTX; 0 if all compile."""
    from numba import cuda
    try:
        cuda.compile_ptx(lambda a: None, "void(float32[::1])", cc=CC)
    except Exception as e:  # noqa: BLE001  any failure here means no usable NVVM
        print(f"NVVM unavailable: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
        return NO_NVVM
    if path is None:
        return 0
    cuda.is_available = lambda: True  # the backend refuses to import without a GPU
    with open(path, "rb") as f:
        launches = pickle.load(f)
    failures = []
    for (module, factory, key), argtypes in sorted(launches, key=repr):
        kernel = getattr(importlib.import_module(module), factory)(*key)
        try:
            cuda.compile_ptx(kernel.py_func, argtypes, cc=CC)
        except Exception as e:  # noqa: BLE001  report every failing kernel, not the first
            failures.append(f"{module}.{factory}{key} {argtypes}: {type(e).__name__}: "
                            f"{str(e)[:2000]}")
    for failure in failures:
        print(failure, end="\n\n")
    print(f"compiled {len(launches) - len(failures)} of {len(launches)} kernel signatures "
          f"to PTX for sm_{CC[0]}{CC[1]}")
    return 1 if failures else 0


def main(argv):
    if argv[:1] == ["--record"]:
        return record(argv[1], argv[2:])
    if argv[:1] == ["--compile"]:
        return compile_all(argv[1] if len(argv) > 1 else None)
    me = [sys.executable, os.path.abspath(__file__)]
    probe = subprocess.run(me + ["--compile"], env=_env(False))
    if probe.returncode:
        return probe.returncode
    test_files = [f for f in sorted(glob.glob(os.path.join(HERE, "test_cuda_*.py")))
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
