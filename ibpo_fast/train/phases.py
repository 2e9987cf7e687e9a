"""The phases of one step, each a function the loop calls in order (DESIGN.md §5).

Documented behaviour on odd batches:
* malformed responses (no answer, broken trials) grade 0 and a response cut at `max_new_tokens` grades
  0 too (learning from it would teach the model not to stop); they stay in the batch, so they count
  toward P and the budget's right side.
* a NaN or infinite reward raises ValueError before the ILP.
* nothing selected on any rank (no correct response, every response empty or truncated, or q = 0 when
  only extended responses are right): all weights are 0, the loss is 0, no forward / optimizer step
  is taken (the optimizer state stays as it was) and the step is logged as usual.
* a rank with nothing selected while others have some runs a zero-weight forward, so FSDP's
  collectives stay matched.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from ibpo_fast import budget, grouping
from ibpo_fast.models import encode_prompts
from ibpo_fast.packing import pack
from ibpo_fast.rollout import Grader, demonstration, prompt_text
from ibpo_fast.seeding import derive_seed
from ibpo_fast.train.distributed import World, all_gather_arrays


@dataclass
class Samples:
    """This rank's sampled (or demonstrated) responses of one step; per-sample arrays are [N]."""
    pairs: list[tuple[list[int], list[int]]]  # (prompt ids, response ids)
    prompt: np.ndarray  # int64, global prompt id within the step
    level: np.ndarray  # int64, difficulty of the prompt
    reward: np.ndarray  # float64
    group: np.ndarray  # int64, 0 regular, 1 extended
    sampler_logp: np.ndarray  # float64, sum over the response under the sampler (NaN for demonstrations)
    weight: np.ndarray  # float64, the ILP's 0/1 (or 1 for demonstrations)

    def response_tokens(self) -> np.ndarray:
        return np.array([len(response) for _, response in self.pairs], np.int64)


def shard(items: list, world: World) -> tuple[list, int]:
    """This rank's contiguous share of a step's items and the global index of its first one."""
    if len(items) % world.size:
        raise ValueError(f"{len(items)} items per step do not split evenly over {world.size} ranks")
    size = len(items) // world.size
    return items[world.rank * size:(world.rank + 1) * size], world.rank * size


def generate(sampler, tokenizer, problems, first, cfg, step: int) -> list:
    """n rollouts per problem with the ASV prompt (the policy chooses regular or voting), one sampling
    call; each prompt is seeded by (seed, step, its global index), so a sample is the same whatever the
    number of ranks (the sampler's draws do not depend on batching)."""
    prompt_ids = encode_prompts(tokenizer, [prompt_text(p, "asv", verbose=cfg.verbose_prompts) for p in problems])
    seeds = [derive_seed(cfg.seed, "sample", step, first + i) for i in range(len(problems))]
    return sampler.generate(prompt_ids, cfg.samples_per_prompt, seed=seeds)


def grade(task, problems, rollouts, first: int) -> Samples:
    owners = [problems[r.prompt_index] for r in rollouts]
    scores = Grader(task).score(owners, [r.text for r in rollouts])
    if not np.all(np.isfinite(scores.reward)):
        raise ValueError("grader returned a NaN or infinite reward")
    reward = np.where([r.truncated for r in rollouts], 0.0, scores.reward.astype(np.float64))
    return Samples(
        pairs=[(list(r.prompt_ids), list(r.response_ids)) for r in rollouts],
        prompt=np.array([first + r.prompt_index for r in rollouts], np.int64),
        level=np.array([p.level for p in owners], np.int64),
        reward=reward,
        group=np.zeros(len(rollouts), np.int64),
        sampler_logp=np.array([float(np.sum(r.logprobs)) for r in rollouts], np.float64),
        weight=np.zeros(len(rollouts)),
    )


def assign_groups(samples: Samples, marker: list[int], extended_trials: int) -> None:
    packed = pack(samples.pairs)
    samples.group = grouping.assign(packed.input_ids.numpy(), packed.cu_seqlens.numpy(), packed.loss_mask.numpy(),
                                    trial_marker=marker, trial_thresholds=(extended_trials,))


def demonstrations(tokenizer, problems, first, *, seed: int, step: int, formats, verbose: bool) -> Samples:
    """One demonstration per problem, its (prompt format, response format) drawn from `formats` by a
    generator seeded per (seed, step, global index): the same data whatever the number of ranks."""
    pairs, groups = [], []
    for i, problem in enumerate(problems):
        rng = random.Random(derive_seed(seed, "demonstration", step, first + i))
        prompt_fmt, response_fmt = rng.choice(formats)
        prompt = encode_prompts(tokenizer, [prompt_text(problem, prompt_fmt, verbose=verbose)])[0]
        text = demonstration(problem, response_fmt, rng)
        pairs.append((prompt, tokenizer(text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]))
        groups.append(int("[TRIAL]" in text))
    count = len(problems)
    return Samples(pairs, np.arange(first, first + count), np.array([p.level for p in problems], np.int64),
                   np.ones(count), np.array(groups, np.int64), np.full(count, np.nan), np.ones(count))


def select(world: World, samples: Samples, buffer: budget.SampleBuffer, cfg) -> tuple[dict, budget.Selection]:
    """Global ILP: gather every rank's samples, solve over the buffer window, keep this rank's weights.
    Returns the gathered arrays (with their weights) for the metrics."""
    local = {"reward": samples.reward, "group": samples.group, "prompt": samples.prompt, "level": samples.level,
             "tokens": samples.response_tokens()}
    gathered = all_gather_arrays(world, local)
    utility = budget.utilities(gathered["reward"], gathered["group"], gathered["prompt"], kind=cfg.utility)
    buffer.push(utility, gathered["group"], gathered["prompt"])
    weights, selection = buffer.solve(cfg.budget, max_per_prompt=cfg.max_per_prompt, method=cfg.ilp_method)
    gathered["weight"] = weights.astype(np.float64)
    start = world.rank * len(samples.reward)
    samples.weight = gathered["weight"][start:start + len(samples.reward)]
    return gathered, selection


def update(policy, samples: Samples, all_weights, all_tokens, world: World, cfg) -> dict:
    """Weighted SFT step on the selected responses: loss = −Σ_i w_i log π(y_i|x_i) / Z with Z the selected
    response tokens of all ranks. Only w_i > 0 is packed. Returns local, not yet reduced, figures."""
    total_tokens = float(np.dot(all_weights, all_tokens))  # Z (counts the eos token as learned)
    if total_tokens == 0:
        return {"loss": 0.0, "abs_diff": 0.0, "tokens": 0.0, "skipped": True}
    chosen = np.flatnonzero(samples.weight > 0)
    dummy = len(chosen) == 0  # keep this rank in the collectives with a zero-weight sequence
    rows = chosen if not dummy else np.array([0])
    batch = pack([samples.pairs[i] for i in rows], device=world.device)
    # FSDP averages gradients over ranks: W · w_i / Z makes the average the one-process gradient.
    scale = 0.0 if dummy else world.size / total_tokens
    seq_weights = torch.as_tensor(samples.weight[rows] * scale, dtype=torch.float32, device=world.device)
    seq_logp, loss = policy(batch, seq_weights)
    loss.backward()
    figures = {"loss": loss.detach(), "abs_diff": 0.0, "tokens": 0.0, "skipped": False}
    sampled = samples.sampler_logp[rows]
    if not dummy and np.all(np.isfinite(sampled)) and cfg.temperature == 1.0:
        # Health metric: |sampler − trainer| of each sequence's summed log-prob, per learned token (a
        # lower bound on the per-token mean |difference|; exact when all differences share a sign).
        figures["abs_diff"] = torch.abs(seq_logp.double().cpu() - torch.as_tensor(sampled)).sum()
        figures["tokens"] = float(samples.response_tokens()[rows].sum())
    return figures


def optimizer_step(policy, optimizer, max_grad_norm: float) -> None:
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
