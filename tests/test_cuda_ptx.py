"""Every kernel the CUDA tests launch compiles for a real GPU (PTX for sm_75), not only in the
simulator. Needs NVVM (a CUDA toolkit or ``pip install "cuda-toolkit[nvvm,nvrtc]"``) but no
GPU; skipped without it. Slow (it reruns the CUDA tests, then compiles ~200 kernels): run with
``python -m pytest tests/test_cuda_ptx.py -m slow``.
"""
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.cuda, pytest.mark.slow]

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cuda_ptx_check.py")


def test_every_launched_kernel_compiles_to_ptx():
    result = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True)
    output = result.stdout + result.stderr
    if result.returncode == 3:
        pytest.skip(output.strip().splitlines()[-1])
    assert result.returncode == 0, output[-20000:]
