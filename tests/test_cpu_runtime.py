"""The CPU backend's speed machinery stays in backend/cpu/runtime/: kernel files launch through
``runtime/launch.py`` and define no parallel drivers or thresholds of their own, and
``runtime.configure()`` sets OpenBLAS's spin before NumPy loads (or leaves a user's choice)."""
import ast
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from numba import njit

from conftest import force_helper_threads
from tinyfw.backend.cpu.runtime import launch

CPU_DIR = pathlib.Path(__file__).resolve().parents[1] / "tinyfw" / "backend" / "cpu"
KERNEL_FILES = sorted(p for p in CPU_DIR.glob("*.py") if p.name != "__init__.py")
# what only launch.py may own: module constants named like a launch threshold
THRESHOLD_NAME = re.compile(r"(PARALLEL|SPLIT|POOL|THREAD).*|.*_MIN_(WORK|ELEMENTS)")


def _tree(path):
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def test_the_kernel_files_are_found():
    names = {p.name for p in KERNEL_FILES}
    assert {"core_kernels.py", "norms.py", "rms_norm.py", "attention.py", "fast_weights.py",
            "safu.py", "bias.py", "warmstart_counts.py"} <= names


@pytest.mark.parametrize("path", KERNEL_FILES, ids=lambda p: p.name)
def test_kernel_files_have_no_parallel_drivers_or_thresholds(path):
    tree = _tree(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            assert not node.name.startswith("_parallel_"), f"{path.name}: {node.name}"
            for decorator in node.decorator_list:
                for keyword in getattr(decorator, "keywords", []):
                    assert not (keyword.arg == "parallel"
                                and getattr(keyword.value, "value", False) is True), \
                        f"{path.name}: {node.name} is a parallel=True function"
        if isinstance(node, ast.Name):
            assert node.id != "prange", f"{path.name}:{node.lineno} uses prange"
        if isinstance(node, ast.Attribute):
            assert node.attr not in ("get_num_threads", "run_split", "n_parts"), \
                f"{path.name}:{node.lineno} decides threads itself ({node.attr})"
        if isinstance(node, ast.ImportFrom):
            imported = {alias.name for alias in node.names}
            assert not imported & {"prange", "get_num_threads", "run_split", "n_parts"}, \
                f"{path.name}:{node.lineno} imports {imported}"
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    assert not THRESHOLD_NAME.fullmatch(target.id), \
                        f"{path.name}: threshold {target.id} belongs in runtime/launch.py"


def test_runtime_configuration_imports_no_numpy():
    """configure() runs before NumPy loads, so neither it nor its package may import NumPy."""
    for name in ("__init__.py", "environment.py"):
        for node in ast.walk(_tree(CPU_DIR / "runtime" / name)):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                modules = [node.module]
            else:
                continue
            assert not any(m.split(".")[0] in ("numpy", "numba", "scipy") for m in modules), \
                f"runtime/{name} imports {modules}"


def _fresh_process(code, **env_changes):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_THREAD_TIMEOUT",
                                                             "TINYFW_BLAS_SPIN")}
    env.update(env_changes)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_importing_tinyfw_sets_a_short_blas_spin_unless_told_not_to():
    code = ("import os, tinyfw\n"
            "from tinyfw.backend.cpu import runtime\n"
            "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'), "
            "runtime.configure().blas_spin_is_short)")
    assert _fresh_process(code) == "16 True"
    assert _fresh_process(code, TINYFW_BLAS_SPIN="0") == "None False"
    assert _fresh_process(code, OPENBLAS_THREAD_TIMEOUT="25") == "25 False"
    # NumPy first: too late to change OpenBLAS's spin, so it is left alone
    assert _fresh_process("import numpy\n" + code) == "None False"


def test_pool_threads_follow_the_policy(monkeypatch):
    policy = launch.Policy(pool_min_work=100, split_min_work=None, ranges_per_thread=4)
    assert launch.pool_threads(policy, 10, 99) == 1
    assert launch.pool_threads(policy, 1, 10_000) == 1          # one unit: nothing to share
    monkeypatch.setattr(launch.numba, "get_num_threads", lambda: 3)
    assert launch.pool_threads(policy, 10, 100) == 3


@njit(nogil=True)
def count(hits, start, stop):
    for i in range(start, stop):
        hits[i] += 1


@pytest.mark.parametrize("claimed", [False, True])
@pytest.mark.parametrize("n,ranges_per_thread", [(1, 4), (7, 4), (50, 0), (1000, 16)])
def test_run_covers_every_unit_once_on_each_path(monkeypatch, claimed, n, ranges_per_thread):
    force_helper_threads(monkeypatch, threads=3)
    for pool_min, split_min in ((1 << 62, None), (1 << 62, 1), (0, None)):
        policy = launch.Policy(pool_min, split_min, ranges_per_thread, claimed)
        hits = np.zeros(n, dtype=np.int64)
        launch.run(policy, count, (hits,), n, n)
        np.testing.assert_array_equal(hits, 1)


def test_unit_range_cuts_nearly_equal_ranges():
    bounds = [launch.unit_range(10, 4, r) for r in range(4)]
    assert bounds == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert launch.unit_range(2, 4, 3) == (2, 2)                  # more ranges than units


@pytest.mark.parametrize("path", ["serial", "parallel"])
def test_always_pool_kernels_match_their_references_on_both_paths(monkeypatch, path):
    """The fast-weight recurrences and SAFU block attention (policy ALWAYS_POOL) give the
    reference's results on the calling thread as in Numba's pool."""
    from conftest import launch_path
    from tinyfw.backend import cpu, reference
    launch_path(monkeypatch, "ALWAYS_POOL", path)
    rng = np.random.default_rng(0)
    q, k, v, do = (rng.standard_normal((2, 3, 9, 4)) for _ in range(4))
    beta = rng.uniform(0.1, 0.9, (2, 3, 9))
    tol = dict(rtol=1e-10, atol=1e-12)
    for got, want in [
            (cpu.linear_attention_forward(q, k, v), reference.linear_attention_forward(q, k, v)),
            (cpu.delta_rule_forward(q, k, v, beta), reference.delta_rule_forward(q, k, v, beta))]:
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, **tol)
    ds = np.zeros((2, 3, 4, 4))
    for a, b in zip(cpu.linear_attention_backward(do, ds, q, k, v),
                    reference.linear_attention_backward(do, ds, q, k, v)):
        np.testing.assert_allclose(a, b, **tol)
    _, _, r = reference.delta_rule_forward(q, k, v, beta)
    for a, b in zip(cpu.delta_rule_backward(do, ds, q, k, v, beta, None, r),
                    reference.delta_rule_backward(do, ds, q, k, v, beta, None, r)):
        np.testing.assert_allclose(a, b, **tol)
    x, qs, dh = (rng.standard_normal((2, 11, 5)) for _ in range(3))
    h, a = cpu.safu_block_attention_forward(x, qs, 3)
    h_ref, a_ref = reference.safu_block_attention_forward(x, qs, 3)
    np.testing.assert_allclose(h, h_ref, **tol)
    np.testing.assert_allclose(a, a_ref, **tol)
    for got, want in zip(cpu.safu_block_attention_backward(dh, None, x, qs, a, 3),
                         reference.safu_block_attention_backward(dh, None, x, qs, a_ref, 3)):
        np.testing.assert_allclose(got, want, **tol)
