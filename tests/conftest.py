import os

# The Triton kernels run on the CPU through the interpreter; it must be chosen before any kernel is
# decorated, i.e. before ibpo_fast.ops.triton_backend is imported.
os.environ.setdefault("TRITON_INTERPRET", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

import ibpo_fast  # noqa: E402


def subprocess_env(**extra: str) -> dict:
    """Environment for a `python -m ibpo_fast...` child that imports the very package under test (the
    installed one under CI, compiled extension included), not the source tree next to the tests. Run
    the child outside the checkout: `-m` puts its working directory first on sys.path."""
    package_root = str(Path(ibpo_fast.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": package_root, **extra}


@pytest.fixture(scope="session")
def warm_tiny(tmp_path_factory) -> str:
    """model.pt of a tiny model warmed up by SFT on demonstrations of the easiest arithmetic level until it
    answers most of them right (measured: 97 % of level-1 test problems after these 200 steps, ~10 s on one
    core), so that IBPO steps started from it (`init_from`, `levels=[1]`) select and update. Runs that start
    from it keep learning rates small (a fresh AdamW moves every weight by about lr in its first steps:
    two warm-up steps at 3e-3 undo the warm-up)."""
    from ibpo_fast.train import TrainConfig, train

    out = tmp_path_factory.mktemp("warm_tiny")
    train(TrainConfig(model="tiny", levels=[1], warmup_steps=200, warmup_batch=16, warmup_lr=3e-3, steps=0,
                      progress=False, tensorboard=False, out=str(out)))
    return str(out / "model.pt")
