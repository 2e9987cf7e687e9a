"""Benchmark suites: ``python -m benchmarks <suite>`` (see benchmarks/README.md).

Run from the repository root, ``python -m`` puts the checkout first on sys.path, so ``import ibpo_fast`` would
take the source tree, which lacks the compiled ``_native`` of a ``pip install .``: "auto" would fall back to torch
and every native row would vanish without a word. So where ibpo_fast is installed, the suites import that
installed copy (the one the tests import too); ``common.package_note()`` says which copy runs and whether the
native kernels are in it, and the CPU suites print it.
"""
import importlib.util
import sys
from pathlib import Path


def _import_installed_package() -> None:
    if "ibpo_fast" in sys.modules:
        return
    checkout = Path(__file__).resolve().parents[1]
    saved = sys.path[:]
    sys.path[:] = [entry for entry in saved if Path(entry or ".").resolve() != checkout]
    try:
        spec = importlib.util.find_spec("ibpo_fast")
        if spec is not None and spec.origin not in (None, "namespace"):  # a real package, not a stray folder
            import ibpo_fast  # noqa: F401  (in sys.modules from here on: its submodules come from the same copy)
    finally:
        sys.path[:] = saved


_import_installed_package()
