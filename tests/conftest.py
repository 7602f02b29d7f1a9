"""Test-session setup.

Without an NVIDIA GPU the CUDA backend's tests run in Numba's CUDA simulator; the variable must
be set before numba.cuda is first imported, which is why it is set here, at the very start.
On a machine with a GPU the real device is used (set NUMBA_ENABLE_CUDASIM=1 to force the
simulator anyway).
"""
import os
import shutil

if "NUMBA_ENABLE_CUDASIM" not in os.environ and not (
        os.path.exists("/dev/nvidia0") or shutil.which("nvidia-smi")):
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
