"""The trainer's loop on the tiny model: odd batches behave as documented in `train/phases.py`, and a
run killed with Ctrl-C resumes to the same metrics as an uninterrupted one."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import subprocess_env
import torch

from ibpo_fast import budget
from ibpo_fast.models import char_tokenizer, tiny_model
from ibpo_fast.rollout import ArithmeticTask, Problem, Rollout
from ibpo_fast.train import TrainConfig, train
from ibpo_fast.train.config import load_config
from ibpo_fast.train import phases
from ibpo_fast.train.distributed import World
from ibpo_fast.train.policy import Policy

SMALL = dict(model="tiny", warmup_steps=2, warmup_batch=4, steps=2, prompts_per_step=2, samples_per_prompt=2,
             max_new_tokens=16, progress=False, tensorboard=False)
WORLD = World(0, 1, torch.device("cpu"))
# Figures that depend on the computation only (not on wall time).
DETERMINISTIC = ("step", "loss", "train_tokens", "reward_mean", "sampled_extended_share", "selected_extended_share",
                 "response_tokens_mean", "num_selected")


def _lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _samples(rewards, groups, prompts, tokenizer):
    pairs = [(tokenizer("auto:1+2\n").input_ids, tokenizer("[TRIAL]3[/TRIAL]" if g else "3").input_ids) for g in groups]
    n = len(rewards)
    return phases.Samples(pairs, np.array(prompts), np.ones(n, np.int64), np.array(rewards, float),
                          np.array(groups), np.full(n, np.nan), np.zeros(n))


def test_every_response_truncated_gives_a_zero_loss_step_that_is_still_logged(tmp_path):
    train(TrainConfig(**{**SMALL, "warmup_steps": 0, "max_new_tokens": 1}, out=str(tmp_path)))
    records = _lines(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1]
    for r in records:
        assert r["loss"] == 0.0 and r["update_skipped"] and r["num_selected"] == 0 and r["reward_mean"] == 0.0
        assert r["ilp_status"] == "optimal" and r["selected_extended_share"] <= r["q"]


def test_zero_budget_with_only_extended_correct_selects_nothing():
    tokenizer = char_tokenizer()
    policy = Policy(tiny_model(len(tokenizer), seed=0))
    for q, selected in ((0.0, 0), (0.5, 1)):
        samples = _samples([0, 1, 0, 1], [0, 1, 0, 1], [0, 0, 1, 1], tokenizer)
        cfg = TrainConfig(q=q)
        gathered, selection = phases.select(WORLD, samples, budget.SampleBuffer(1), cfg)
        assert int(gathered["weight"].sum()) == selected and selection.status == "optimal"
        figures = phases.update(policy, samples, gathered["weight"], gathered["tokens"], WORLD, cfg)
        assert figures["skipped"] == (selected == 0)
        assert (float(figures["loss"]) == 0.0) == (selected == 0)
        policy.zero_grad()


def test_rank_with_nothing_selected_runs_a_zero_weight_forward():
    tokenizer = char_tokenizer()
    policy = Policy(tiny_model(len(tokenizer), seed=0))
    samples = _samples([0, 0], [0, 0], [0, 0], tokenizer)
    # Another rank selected 5 tokens' worth; this rank none.
    figures = phases.update(policy, samples, np.array([0.0, 0.0, 1.0]), np.array([3, 3, 5]), WORLD, TrainConfig())
    assert not figures["skipped"] and float(figures["loss"]) == 0.0
    assert all(p.grad is None or not p.grad.any() for p in policy.parameters())


def test_nan_reward_raises():
    class NanTask(ArithmeticTask):
        def is_correct(self, problem, answer):
            return float("nan")

    problem = Problem("p", "1+2", "3", 1)
    rollout = Rollout(0, [1, 5], [6, 2], "\\boxed{3}", np.zeros(2, np.float32), False)
    with pytest.raises(ValueError, match="NaN"):
        phases.grade(NanTask(), [problem], [rollout], 0)


def test_malformed_responses_grade_zero_and_group_by_trials():
    tokenizer = char_tokenizer()
    problem = Problem("p", "1+2", "3", 1)
    texts = ["", "no answer at all", "[TRIAL]\\boxed{4}[/TRIAL][TRIAL]\\boxed{3", "\\boxed{3}", "[TRIAL]\\boxed{3}[/TRIAL]" * 3]
    truncated = [False, False, False, True, False]
    rollouts = [Rollout(0, [1, 5], tokenizer(t, add_special_tokens=False).input_ids, t, np.zeros(1, np.float32), cut)
                for t, cut in zip(texts, truncated)]
    samples = phases.grade(ArithmeticTask(), [problem], rollouts, first=0)
    phases.assign_groups(samples, [tokenizer.convert_tokens_to_ids("[TRIAL]")], extended_trials=2)
    assert samples.reward.tolist() == [0, 0, 0, 0, 1]  # the right answer cut by max_new_tokens counts 0
    assert samples.group.tolist() == [0, 0, 1, 0, 1]


@pytest.fixture
def one_thread():
    # The interrupted run is a subprocess: it must use as many threads as this one, or a different
    # reduction order moves a loss by an ulp.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {"OMP_NUM_THREADS": "1"}
    torch.set_num_threads(threads)


def test_sigint_then_resume_matches_an_uninterrupted_run(tmp_path, one_thread):
    overrides = {**SMALL, "warmup_steps": 3, "steps": 4}
    # Both runs from the same preset: the tiny preset's row layout differs from the dataclass defaults,
    # and a different packing layout may move a loss by an ulp.
    preset = lambda **more: load_config(TrainConfig, preset="tiny", overrides={**overrides, **more})  # noqa: E731
    train(preset(out=str(tmp_path / "whole")))
    args = [f"--{k}={v}" for k, v in overrides.items()] + [f"--out={tmp_path / 'cut'}"]
    env = subprocess_env(**one_thread)
    process = subprocess.Popen([sys.executable, "-m", "ibpo_fast.train", "--preset", "tiny", *args], env=env,
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    warmup = tmp_path / "cut" / "warmup.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (warmup.exists() and warmup.read_text().strip()):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 0, output
    # Stopped early (model.pt is written only at the end), with a checkpoint to resume from.
    assert not (tmp_path / "cut" / "model.pt").exists() and (tmp_path / "cut" / "checkpoint.pt").exists()
    assert len(_lines(warmup)) + len(_lines(tmp_path / "cut" / "metrics.jsonl")) < 7
    train(preset(out=str(tmp_path / "cut"), resume=True))
    for name in ("warmup.jsonl", "metrics.jsonl"):
        whole, cut = _lines(tmp_path / "whole" / name), _lines(tmp_path / "cut" / name)
        assert [{k: r.get(k) for k in DETERMINISTIC} for r in cut] == [{k: r.get(k) for k in DETERMINISTIC} for r in whole]


def test_init_from_model_or_checkpoint_starts_from_those_weights(tmp_path):
    train(TrainConfig(**{**SMALL, "steps": 0}, out=str(tmp_path / "source")))
    source = torch.load(tmp_path / "source" / "model.pt", weights_only=False)["model"]
    for name in ("model.pt", "checkpoint.pt"):
        out = tmp_path / name
        # no step at all: the saved model is the one init_from loaded
        train(TrainConfig(**{**SMALL, "warmup_steps": 0, "steps": 0}, init_from=str(tmp_path / "source" / name),
                          out=str(out)))
        loaded = torch.load(out / "model.pt", weights_only=False)["model"]
        assert loaded.keys() == source.keys()
        assert all(torch.equal(loaded[key], source[key]) for key in source)


def test_any_seed_runs(tmp_path):
    # seeds were once multiplied into int64 overflow from seed 19 on; one helper derives them all now
    from ibpo_fast.seeding import derive_seed
    assert len({derive_seed(seed, "data", step) for seed in (0, 19, 2**62, 10**30) for step in (0, 1)}) == 8
    with pytest.raises(ValueError, match="seed"):
        derive_seed(-1)
    train(TrainConfig(**{**SMALL, "warmup_steps": 1, "steps": 1}, seed=10**12, out=str(tmp_path)))
    assert [r["step"] for r in _lines(tmp_path / "metrics.jsonl")] == [0]
