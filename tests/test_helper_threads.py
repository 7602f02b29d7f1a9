"""Helper threads (tinyfw/backend/cpu/runtime/helper_threads.py): a split call covers every unit exactly
once, waits for its helpers, reports their errors, never nests, and survives a fork."""
import os
import signal
import threading

import numpy as np
import pytest
from numba import njit

from conftest import force_helper_threads
from tinyfw.backend.cpu.runtime import helper_threads as H


@njit(nogil=True, cache=True)
def _count(hits, start, stop):
    for i in range(start, stop):
        hits[i] += 1


@pytest.mark.parametrize("n,parts", [(1, 1), (2, 2), (7, 3), (10, 4), (5, 5)])
def test_every_unit_once(n, parts):
    hits = np.zeros(n, dtype=np.int64)
    H.run_split(_count, (hits,), n, parts)
    assert hits.tolist() == [1] * n


def test_ranges_go_to_other_threads_and_the_first_stays_here():
    seen = {}

    def record(start, stop):
        seen[start] = threading.get_ident()

    H.run_split(record, (), 9, 3)
    assert sorted(seen) == [0, 3, 6]
    assert seen[0] == threading.get_ident()
    assert seen[3] != threading.get_ident() and seen[6] != threading.get_ident()


@pytest.mark.parametrize("failing_start", [0, 4])
def test_an_error_is_raised_after_every_range_is_done(failing_start):
    done = []
    gate = threading.Event()

    def kernel(start, stop):
        if start == failing_start:
            raise ValueError(f"range {start}")
        gate.wait(5)          # the other range finishes only after the error was raised
        done.append(start)

    threading.Timer(0.05, gate.set).start()
    with pytest.raises(ValueError, match=f"range {failing_start}"):
        H.run_split(kernel, (), 8, 2)
    assert done == [4 - failing_start]   # run_split waited for it before raising


def test_n_parts(monkeypatch):
    force_helper_threads(monkeypatch, threads=4)
    assert H.n_parts(100, 10_000, 1_000) == 4        # limited by the threads
    assert H.n_parts(100, 2_500, 1_000) == 2         # by the work per range
    assert H.n_parts(3, 10_000, 1_000) == 3          # by the units
    assert H.n_parts(100, 999, 1_000) == 1
    assert H.n_parts(1, 10_000, 1) == 1
    monkeypatch.setattr(H, "ENABLED", False)
    assert H.n_parts(100, 10_000, 1_000) == 1


def test_a_helper_does_not_split_again(monkeypatch):
    force_helper_threads(monkeypatch, threads=2)
    inner = []

    def kernel(start, stop):
        inner.append(H.n_parts(100, 100, 1))

    H.run_split(kernel, (), 2, 2)
    assert sorted(inner) == [1, 2]     # 2 on the calling thread, 1 on the helper


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_helpers():
    H.run_split(_count, (np.zeros(2, dtype=np.int64),), 2, 2)    # parent's pool exists
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                                                # child: its pool has no threads
        signal.alarm(20)                                        # a hang would kill it, not wait
        try:
            hits = np.zeros(6, dtype=np.int64)
            H.run_split(_count, (hits,), 6, 3)
            os.write(write, b"ok" if hits.tolist() == [1] * 6 else b"bad")
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.read(read, 16) == b"ok" and status == 0


def test_mid_size_kernels_are_split_and_others_are_not(monkeypatch):
    from tinyfw.backend.cpu import attention, core_kernels
    force_helper_threads(monkeypatch, threads=2)
    calls = []
    run_split = H.run_split
    monkeypatch.setattr(H, "run_split", lambda kernel, args, n, parts: (
        calls.append(parts), run_split(kernel, args, n, parts)))
    x = np.random.default_rng(0).standard_normal((12, 64, 512)).astype(np.float32)   # W1's MLP
    core_kernels.gelu_forward(x, "none")
    core_kernels.gelu_forward(x[:1, :8], "none")
    q = np.random.default_rng(1).standard_normal((12, 4, 64, 32)).astype(np.float32)  # W1's heads
    attention.attention_forward(q, q, q, 0.2, True)
    attention.attention_forward(q[:1, :, :4], q[:1, :, :4], q[:1, :, :4], 0.2, True)
    assert calls == [2, 1, 2, 1]


@pytest.mark.parametrize("n,parts,weight", [(48, 2, 1.25), (7, 3, 1.25), (10, 4, 1.0), (3, 3, 2.0),
                                            (393216, 2, 1.25)])
def test_bounds_cover_the_range_in_order_and_the_first_is_weighted(n, parts, weight):
    b = H._bounds(n, parts, weight)
    assert len(b) == parts + 1 and b[0] == 0 and b[-1] == n
    assert all(x <= y for x, y in zip(b, b[1:]))
    sizes = np.diff(b)
    assert abs(sizes[0] - n * weight / (weight + parts - 1)) <= 1
