"""bf16 compute keeps f32 master weights and optimizer state, so small updates are not lost (DESIGN.md §5).

At lr 1e-6 on weights of size ~0.02 an AdamW step moves a weight by ~1e-6, below half a bf16 ulp: with
bf16 parameters (the trainer before mixed precision) about 98 % of the weights never changed. Here a
`dtype: bfloat16` run (autocast in one process, FSDP2's MixedPrecisionPolicy under torchrun) must move the
f32 master weights as the f32 run does, to bf16 rounding: both runs start from the warm-started tiny
model, take 3 warm-up SFT steps and 2 IBPO steps (sampled in bf16) at lr 1e-6.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import subprocess_env

from ibpo_fast.train import TrainConfig, train
from ibpo_fast.train.config import load_config

SETTINGS = dict(model="tiny", levels=[1], warmup_steps=3, warmup_batch=8, warmup_lr=1e-6, steps=2, lr=1e-6,
                prompts_per_step=2, samples_per_prompt=2, explore_per_group=1, max_new_tokens=64, progress=False,
                tensorboard=False)


def _config(**more) -> TrainConfig:
    return load_config(TrainConfig, preset="tiny", overrides={**SETTINGS, **more})  # as the torchrun run


def _change(out: Path, init_from: str) -> torch.Tensor:
    """The master weights' change over the run, flat; they must be f32."""
    start = torch.load(init_from, weights_only=False)["model"]
    final = torch.load(out / "model.pt", weights_only=False)["model"]
    assert {value.dtype for value in final.values()} == {torch.float32}
    return torch.cat([(final[key] - start[key]).flatten() for key in start])


def _ibpo_records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def assert_moves_like(change: torch.Tensor, reference: torch.Tensor) -> None:
    changed, reference_changed = (change != 0).double().mean(), (reference != 0).double().mean()
    assert reference_changed > 0.9  # ~3 % are embedding rows of characters the task never uses
    assert abs(changed - reference_changed) < 0.005, (changed, reference_changed)
    relative = (change - reference).norm() / reference.norm()
    cosine = torch.nn.functional.cosine_similarity(change, reference, dim=0)
    assert relative < 0.1 and cosine > 0.99, (relative, cosine)


@pytest.fixture(scope="module")
def f32_change(tmp_path_factory, warm_tiny) -> torch.Tensor:
    out = tmp_path_factory.mktemp("f32")
    train(_config(dtype="float32", init_from=warm_tiny, out=str(out)))
    return _change(out, warm_tiny)


def test_bf16_autocast_in_one_process_moves_f32_master_weights_as_f32_does(tmp_path, f32_change, warm_tiny):
    train(_config(dtype="bfloat16", init_from=warm_tiny, out=str(tmp_path)))
    assert all(r["num_selected"] > 0 and not r["update_skipped"] for r in _ibpo_records(tmp_path))
    assert_moves_like(_change(tmp_path, warm_tiny), f32_change)


def test_bf16_fsdp_mixed_precision_moves_f32_master_weights_as_f32_does(tmp_path, f32_change, warm_tiny):
    # positional floats: YAML reads "1e-06" as a string
    args = [f"--{key}={np.format_float_positional(value) if isinstance(value, float) else value}"
            for key, value in SETTINGS.items()]
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "ibpo_fast.train", "--preset", "tiny", *args, "--dtype=bfloat16", f"--init_from={warm_tiny}",
                             f"--out={tmp_path}"],
                            cwd=tmp_path, env=subprocess_env(OMP_NUM_THREADS="1"), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert all(r["num_selected"] > 0 and not r["update_skipped"] for r in _ibpo_records(tmp_path))
    assert_moves_like(_change(tmp_path, warm_tiny), f32_change)
