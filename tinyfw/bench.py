"""``python -m tinyfw bench``: the entry to the benchmark suite, which lives in the repository's
``bench/`` directory (next to this package) so that installing tinyfw never installs PyTorch
peers or benchmark code. See ``bench/README.md`` and ``docs/BENCH.md``.
"""
import os
import sys


def _find_suite():
    """Import ``bench.run`` from the source checkout this package sits in (or the current
    directory); None when there is no checkout."""
    try:
        from bench import run
        return run
    except ImportError:
        pass
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for root in (here, os.getcwd()):
        if os.path.isfile(os.path.join(root, "bench", "run.py")):
            if root not in sys.path:
                sys.path.insert(0, root)
            from bench import run
            return run
    return None


def main(argv=None):
    """Run the benchmark suite with ``argv`` (the arguments after ``bench``); exit status."""
    suite = _find_suite()
    if suite is None:
        print("tinyfw bench: the benchmark suite lives in bench/ of a tinyfw source checkout; "
              "run this from the repository (git clone, then python -m tinyfw bench)",
              file=sys.stderr)
        return 2
    return suite.main(sys.argv[1:] if argv is None else list(argv))


if __name__ == "__main__":
    sys.exit(main())
