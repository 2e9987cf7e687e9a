"""The import graph: the command line, the configs and the task files need no torch; the public names load
on first use; the training entry point and evaluation import no module above or beside them."""
import subprocess
import sys
import textwrap

from conftest import subprocess_env


def _run(code: str, tmp_path) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=subprocess_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_configs_and_tasks_import_no_torch(tmp_path):
    assert _run("""
        import sys
        import ibpo_fast, ibpo_fast.cli, ibpo_fast.rollout, ibpo_fast.train
        from ibpo_fast.train.config import TrainConfig, load_config
        from ibpo_fast.rollout import make_task, FORMATS
        load_config(TrainConfig, preset="tiny", overrides=["--steps=3"])
        make_task("arithmetic").problems("train", 4, seed=0)
        print(sorted(m for m in ("torch", "transformers", "numba") if m in sys.modules))
    """, tmp_path) == "[]"


def test_public_names_load_on_first_use_and_nothing_imports_upward(tmp_path):
    # one child for both checks: each import of torch costs seconds
    assert _run("""
        import sys
        import ibpo_fast.train.__main__, ibpo_fast.train.evaluate
        print(sorted(m for m in ("ibpo_fast.cli", "ibpo_fast.train.components", "ibpo_fast.train.loop")
                     if m in sys.modules))
        import ibpo_fast, ibpo_fast.rollout, ibpo_fast.train
        from ibpo_fast import pack, weighted_sequence_loss, budget
        from ibpo_fast.rollout import HFSampler, Grader
        from ibpo_fast.train import TrainConfig, train
        assert {"pack", "token_logprobs"} <= set(dir(ibpo_fast)) and "HFSampler" in dir(ibpo_fast.rollout)
        try:
            ibpo_fast.no_such_name
        except AttributeError as e:
            print(e)
    """, tmp_path).splitlines() == ["[]", "module 'ibpo_fast' has no attribute 'no_such_name'"]
