"""`ibpo-fast eval`: accuracy, extended share and inference cost of a trained model, per difficulty level.

    ibpo-fast eval --checkpoint runs/tiny                        # the adaptive prompt: the model chooses
    ibpo-fast eval --checkpoint runs/tiny --prompt_format sv     # a forced format
    ibpo-fast eval --checkpoint runs/tiny --method sc --k 4      # self-consistency: 4 regular answers, a vote

Method "sample": each problem is answered `samples_per_problem` times with `prompt_format` (the adaptive
prompt by default, as trained, or a forced one) and every response is scored on its own. Method "sc"
(self-consistency, the paper's main comparator): K independent regular-format answers per problem, the
majority of their final answers (ties to the first seen) is the problem's answer, and its cost is all K
responses' tokens. Inference cost = mean generated tokens per problem, also relative to the mean length
of the regular responses in the same eval where there are some. "Extended" is `grouping.response_groups`,
the definition training uses.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ibpo_fast.grouping import response_groups
from ibpo_fast.models import encode_prompts, load_model
from ibpo_fast.rollout import Grader, HFSampler, majority, make_task, prompt_text
from ibpo_fast.seeding import derive_seed
from ibpo_fast.train import checkpoint, distributed
from ibpo_fast.train.config import EvalConfig, TrainConfig


def load_trained(path: str, device: torch.device):
    """(model, tokenizer, train config) from a run folder (its model.pt, else its checkpoint: a run stopped
    early), a model.pt or a checkpoint folder."""
    saved = checkpoint.SavedWeights(path)
    cfg = TrainConfig(**saved.config)
    model, tokenizer = load_model(cfg.model, dtype=cfg.torch_dtype, device=device, seed=cfg.seed)
    saved.load_into(model)
    return model.eval(), tokenizer, cfg


def test_problems(task, cfg: TrainConfig, problems_per_level: int, seed: int) -> list:
    """`problems_per_level` test problems of each level for the arithmetic task; other tasks have no
    level control: problems_per_level · len(levels) problems of `task`, reported by the level they carry."""
    if cfg.task != "arithmetic":
        return task.problems("test", problems_per_level * len(cfg.levels), seed=seed)
    return [problem for level in cfg.levels
            for problem in make_task("arithmetic", [level]).problems("test", problems_per_level, seed=seed)]


@dataclass
class Answers:
    """n responses per problem, problem-major ([P, n] arrays)."""
    correct: np.ndarray  # float64, 1 for a right final answer (a truncated response is wrong, as in training)
    extended: np.ndarray  # bool
    tokens: np.ndarray  # float64, generated tokens
    final: list[list[str | None]]  # the final answers


def answer(model, tokenizer, task, problems, fmt: str, n: int, *, cfg: TrainConfig, max_new_tokens: int,
           temperature: float, seed: int, progress: bool = True) -> Answers:
    """Sample n responses per problem under the prompt format `fmt` and grade them. Response j of problem i
    sees its own view of the problem (`Task.view`, as in training) and has its own seed, both from (seed, i,
    j): every model evaluated with the same seed answers the same views."""
    sampler = HFSampler(model, tokenizer, max_new_tokens=max_new_tokens, temperature=temperature,
                        kv_cache_gib=cfg.generate_kv_gib, engine=cfg.generate_engine, progress=progress)
    pairs = [(i, j) for i in range(len(problems)) for j in range(n)]
    views = [task.view(problems[i], derive_seed(seed, "view", i, j)) for i, j in pairs]
    prompts = encode_prompts(tokenizer, [prompt_text(v, fmt, verbose=cfg.verbose_prompts) for v in views])
    rollouts = sampler.generate(prompts, 1, seed=[derive_seed(seed, "sample", i, j) for i, j in pairs])
    scores = Grader(task).score([problems[i] for i, _ in pairs], [r.text for r in rollouts])
    truncated = np.array([r.truncated for r in rollouts])
    final = [None if cut else a for a, cut in zip(scores.final_answer, truncated)]
    shape = (len(problems), n)
    return Answers(correct=(scores.reward * ~truncated).astype(np.float64).reshape(shape),
                   extended=(response_groups([r.text for r in rollouts], (cfg.extended_trials,)) > 0).reshape(shape),
                   tokens=np.array([len(r.response_ids) for r in rollouts], np.float64).reshape(shape),
                   final=[final[i * n:(i + 1) * n] for i in range(len(problems))])


def self_consistency(task, problems, answers: Answers, k: int) -> tuple[np.ndarray, np.ndarray]:
    """SC@k from the first k responses of each problem: (correct [P], tokens [P] = the k responses' sum)."""
    if not 1 <= k <= answers.tokens.shape[1]:
        raise ValueError(f"k must be in [1, {answers.tokens.shape[1]}], got {k}")
    voted = [majority(finals[:k]) for finals in answers.final]
    correct = np.array([float(task.is_correct(p, a)) for p, a in zip(problems, voted)])
    return correct, answers.tokens[:, :k].sum(axis=1)


def summarize(problems, correct, extended, tokens, regular_tokens: float) -> dict:
    """Overall and per-level accuracy, extended share and tokens per problem; arrays are [P] or [P, n]."""
    level = np.array([p.level for p in problems])
    result = {"accuracy": float(correct.mean()), "extended_share": float(extended.mean()),
              "tokens_per_problem": float(tokens.mean()), "cost_vs_regular": float(tokens.mean() / regular_tokens),
              "levels": {}}
    for lvl in sorted(set(level.tolist())):
        at = level == lvl
        result["levels"][str(lvl)] = {"accuracy": float(correct[at].mean()), "extended_share": float(extended[at].mean()),
                                      "tokens_per_problem": float(tokens[at].mean())}
    return result


def evaluate(ecfg: EvalConfig) -> dict:
    world = distributed.init(ecfg.device)
    model, tokenizer, cfg = load_trained(ecfg.checkpoint, world.device)
    task = make_task(cfg.task, cfg.levels)
    problems = test_problems(task, cfg, ecfg.problems_per_level, ecfg.seed)
    sc = ecfg.method == "sc"
    fmt, n = ("regular", ecfg.k) if sc else (ecfg.prompt_format, ecfg.samples_per_problem)
    answers = answer(model, tokenizer, task, problems, fmt, n, cfg=cfg, max_new_tokens=ecfg.max_new_tokens or cfg.max_new_tokens,
                     temperature=ecfg.temperature, seed=ecfg.seed)
    regular = ~answers.extended
    regular_tokens = float(answers.tokens[regular].mean()) if regular.any() else float("nan")
    if sc:
        correct, tokens = self_consistency(task, problems, answers, ecfg.k)
        figures = summarize(problems, correct, np.zeros(len(problems), bool), tokens, regular_tokens)
    else:
        figures = summarize(problems, answers.correct, answers.extended, answers.tokens, regular_tokens)
    result = {"checkpoint": str(ecfg.checkpoint), "mode": cfg.mode, "q": cfg.budget, "method": ecfg.method,
              "prompt_format": fmt, "k": ecfg.k if sc else None, "samples": int(answers.tokens.size), **figures}
    folder = Path(ecfg.checkpoint) if Path(ecfg.checkpoint).is_dir() else Path(ecfg.checkpoint).parent
    out = Path(ecfg.out) if ecfg.out else folder / "eval.json"
    out.write_text(json.dumps(result, indent=1))
    return result
