"""Every kernel the CUDA tests launch compiles for real GPUs (PTX for sm_75, sm_80 and sm_90), not
only in the simulator. Needs libNVVM and NVRTC (``pip install "numba-cuda[cu12]"`` or a CUDA
toolkit) but no GPU; skipped without them, failed when they are there and a kernel does not
compile. Slow (it reruns the CUDA tests, then compiles ~250 kernel signatures three times): run
with ``python -m pytest tests/test_cuda_ptx.py -m slow``; ``.ci/run`` runs the script itself and
fails when the compiler is missing.
"""
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.cuda, pytest.mark.slow]

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cuda_ptx_check.py")
NO_COMPILER = 77  # cuda_ptx_check.NO_COMPILER


def test_every_launched_kernel_compiles_to_ptx():
    result = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True)
    output = result.stdout + result.stderr
    if result.returncode == NO_COMPILER:
        pytest.skip(output.strip().splitlines()[-1])
    assert result.returncode == 0, output[-20000:]
