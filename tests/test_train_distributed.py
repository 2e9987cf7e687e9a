"""FSDP2 under torchrun: 2 gloo processes on the CPU take the same steps as one process.

The warm-up steps check the sharded update (global normaliser, gradient averaging, optimizer); the IBPO
steps check sharded sampling (each prompt seeded by its global index), the all-gathered global
ILP and the sampler replica. Losses match to float rounding (gradients are reduced in another order).
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import subprocess_env

from ibpo_fast.train import TrainConfig, train

SETTINGS = dict(model="tiny", warmup_steps=2, warmup_batch=4, steps=2, prompts_per_step=2, samples_per_prompt=2,
                max_new_tokens=16, progress=False, tensorboard=False)


def _lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_two_process_torchrun_matches_one_process(tmp_path):
    args = [f"--{key}={value}" for key, value in SETTINGS.items()] + [f"--out={tmp_path / 'two'}"]
    env = subprocess_env(OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "ibpo_fast.train", "--preset", "tiny", *args],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=80)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    train(TrainConfig(**SETTINGS, out=str(tmp_path / "one")))
    for name in ("warmup.jsonl", "metrics.jsonl"):
        two, one = _lines(tmp_path / "two" / name), _lines(tmp_path / "one" / name)
        assert [r["step"] for r in two] == [r["step"] for r in one] == [0, 1]
        for a, b in zip(two, one):
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-7)
            assert a["train_tokens"] == b["train_tokens"]
            for key in ("reward_mean", "sampled_extended_share", "selected_extended_share", "response_tokens_mean"):
                assert a.get(key) == b.get(key), key
    assert (tmp_path / "two" / "model.pt").is_file()
