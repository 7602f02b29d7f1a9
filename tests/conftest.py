"""Test-session setup.

Without an NVIDIA GPU the CUDA backend's tests run in Numba's CUDA simulator; the variable must
be set before numba.cuda is first imported, which is why it is set here, at the very start.
On a machine with a GPU the real device is used (set NUMBA_ENABLE_CUDASIM=1 to force the
simulator anyway).
"""
import os
import shutil

import pytest

if "NUMBA_ENABLE_CUDASIM" not in os.environ and not (
        os.path.exists("/dev/nvidia0") or shutil.which("nvidia-smi")):
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

# Under CI (the CI variable set, to anything, as in Hypothesis's own check; .ci/run sets it)
# Hypothesis derandomises: each property test draws the same examples on every run (fixed per
# test function and Hypothesis version), so a red CI run reproduces with
# ``CI=1 python -m pytest ...``. Local runs keep drawing new examples, which is how property tests
# go on finding bugs (Hypothesis replays local failures from .hypothesis/). No deadline: timings
# are never asserted, and a shared CI machine is slow at random.
try:
    from hypothesis import settings as _hypothesis_settings
except ImportError:  # the property tests skip themselves without Hypothesis
    pass
else:
    _hypothesis_settings.register_profile(
        "tinyfw-ci", derandomize=True, database=None, deadline=None, print_blob=True)
    if "CI" in os.environ:
        _hypothesis_settings.load_profile("tinyfw-ci")


def force_helper_threads(monkeypatch, threads=3):
    """Split every kernel call that can be split with helper threads (helper_threads.py), into up
    to ``threads`` ranges (3: uneven ranges), whatever the machine and its BLAS."""
    from tinyfw.backend.cpu.runtime import helper_threads
    monkeypatch.setattr(helper_threads, "ENABLED", True)
    monkeypatch.setattr(helper_threads, "_threads", lambda: threads)


def launch_path(monkeypatch, policy, path):
    """Make the launch policy named ``policy`` (backend/cpu/runtime/launch.py) run every call on
    the calling thread ('serial'), split with helper threads ('split') or in Numba's pool
    ('parallel'), whatever its size."""
    from tinyfw.backend.cpu.runtime import launch
    huge = 1 << 62
    pool_min, split_min = {"serial": (huge, huge), "split": (huge, 0), "parallel": (0, huge)}[path]
    monkeypatch.setattr(launch, policy, getattr(launch, policy)._replace(
        pool_min_work=pool_min, split_min_work=split_min))
    if path == "split":
        force_helper_threads(monkeypatch)
    return path


@pytest.fixture(autouse=True)
def _numba_threads_as_found():
    """A test (or a demo it runs in-process, such as ``demos/capacity.py``) that sets Numba's
    thread count leaves it as it found it: later tests' launch decisions depend on it."""
    import numba
    before = numba.get_num_threads()
    yield
    if numba.get_num_threads() != before:
        numba.set_num_threads(before)
