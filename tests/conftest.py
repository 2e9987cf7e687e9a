import os

# The Triton kernels run on the CPU through the interpreter; it must be chosen before any kernel is
# decorated, i.e. before ibpo_fast.ops.triton_backend is imported.
os.environ.setdefault("TRITON_INTERPRET", "1")

from pathlib import Path  # noqa: E402

import ibpo_fast  # noqa: E402


def subprocess_env(**extra: str) -> dict:
    """Environment for a `python -m ibpo_fast...` child that imports the very package under test (the
    installed one under CI, compiled extension included), not the source tree next to the tests. Run
    the child outside the checkout: `-m` puts its working directory first on sys.path."""
    package_root = str(Path(ibpo_fast.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": package_root, **extra}
