"""`ibpo-fast eval`: accuracy, extended share and inference cost of a trained model, per difficulty level.

The model answers held-out test problems with the prompt it was trained with (the ASV "auto" prompt:
it chooses regular or voting itself), or with a forced format (`prompt_format`). Inference cost = mean
generated tokens per problem (over all its samples), also given relative to the mean length of the
regular-format responses in the same eval (the paper's "x regular" budgets).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ibpo_fast.models import encode_prompts, load_model
from ibpo_fast.rollout import Grader, HFSampler, prompt_text
from ibpo_fast.train import checkpoint, distributed
from ibpo_fast.train.components import make_task
from ibpo_fast.train.config import EvalConfig, TrainConfig


def load_trained(path: str, device: torch.device):
    """(model, tokenizer, train config) from a run folder (its model.pt) or a .pt file."""
    file = Path(path)
    file = file / checkpoint.MODEL if file.is_dir() else file
    if not file.is_file():
        raise ValueError(f"checkpoint: no model file {str(file)!r} (train to the end first)")
    state = checkpoint.load_file(file)
    cfg = TrainConfig(**state["config"])
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.dtype]
    model, tokenizer = load_model(cfg.model, dtype=dtype, device=device, seed=cfg.seed)
    model.load_state_dict(checkpoint.model_weights(state))
    return model.eval(), tokenizer, cfg


def test_problems(task, cfg: TrainConfig, ecfg: EvalConfig) -> list:
    """`problems_per_level` test problems of each level for the arithmetic task; other tasks have no
    level control: problems_per_level · len(levels) problems of `task`, reported by the level they carry."""
    if cfg.task != "arithmetic":
        return task.problems("test", ecfg.problems_per_level * len(cfg.levels), seed=ecfg.seed)
    return [problem for level in cfg.levels
            for problem in make_task("arithmetic", [level]).problems("test", ecfg.problems_per_level, seed=ecfg.seed)]


def evaluate(ecfg: EvalConfig) -> dict:
    world = distributed.init(ecfg.device)
    model, tokenizer, cfg = load_trained(ecfg.checkpoint, world.device)
    task = make_task(cfg.task, cfg.levels)
    sampler = HFSampler(model, tokenizer, max_new_tokens=ecfg.max_new_tokens or cfg.max_new_tokens,
                        temperature=ecfg.temperature, kv_cache_gib=cfg.generate_kv_gib,
                        engine=cfg.generate_engine, progress=True)
    problems = test_problems(task, cfg, ecfg)
    prompts = encode_prompts(tokenizer, [prompt_text(p, ecfg.prompt_format, verbose=cfg.verbose_prompts) for p in problems])
    rollouts = sampler.generate(prompts, ecfg.samples_per_problem, seed=ecfg.seed)
    owners = [problems[r.prompt_index] for r in rollouts]
    scores = Grader(task).score(owners, [r.text for r in rollouts])
    correct = scores.reward * ~np.array([r.truncated for r in rollouts])  # as in training
    extended = scores.num_trials >= cfg.extended_trials
    tokens = np.array([len(r.response_ids) for r in rollouts], np.float64)
    level = np.array([p.level for p in owners])
    regular_tokens = tokens[scores.num_trials == 0].mean() if (scores.num_trials == 0).any() else float("nan")
    result = {"checkpoint": str(ecfg.checkpoint), "mode": cfg.mode, "q": cfg.budget, "prompt_format": ecfg.prompt_format,
              "samples": len(rollouts),
              "accuracy": float(correct.mean()), "extended_share": float(extended.mean()),
              "tokens_per_problem": float(tokens.mean()), "cost_vs_regular": float(tokens.mean() / regular_tokens),
              "levels": {}}
    for lvl in sorted(set(level.tolist())):
        at = level == lvl
        result["levels"][str(lvl)] = {"accuracy": float(correct[at].mean()), "extended_share": float(extended[at].mean()),
                                      "tokens_per_problem": float(tokens[at].mean())}
    folder = Path(ecfg.checkpoint) if Path(ecfg.checkpoint).is_dir() else Path(ecfg.checkpoint).parent
    out = Path(ecfg.out) if ecfg.out else folder / "eval.json"
    out.write_text(json.dumps(result, indent=1))
    return result
