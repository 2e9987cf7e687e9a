"""The phases of one step, each a function the loop calls in order (DESIGN.md §5).

Exploration (DESIGN §1): of each prompt's n samples, `explore_per_group` are drawn under the forced
regular prompt and as many under the forced voting prompt, the rest under the adaptive (ASV) prompt the
policy is trained with; every sample, whatever prompt drew it, is trained as an answer to the adaptive
prompt, so the group values r̄_g(p) exist for every prompt even once the policy stops choosing a group
there. With `anchor_weight` > 0, every correct exploration sample in its prompt's format is also trained
under the forced prompt that drew it, with that weight (rejection sampling of the forced modes), which keeps
the forced regular and voting modes, the references of the frontier, from drifting at every budget
(measured without it: after 30 RL steps at q = 0 the voting prompt had stopped voting on some seeds).

Views: every sample sees its own presentation of its problem (`Task.view`: the arithmetic task's readings
in a fresh order) and is trained under the adaptive prompt of that view. The group values r̄_g(p) are
success rates per problem, so they must measure what a group does on the problem, not on one fixed
presentation of it (`ArithmeticTask.view` has the measurements).

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
from ibpo_fast.rollout import FORMATS, Grader, demonstration, prompt_text
from ibpo_fast.seeding import derive_seed
from ibpo_fast.train.distributed import World, all_gather_arrays
from ibpo_fast.train.policy import backward_in_chunks

ADAPTIVE = FORMATS.index("asv")
FORCED = ("regular", "sv")  # the forced prompt of group 0 (regular) and of the extended groups (voting)


@dataclass
class Samples:
    """This rank's sampled (or demonstrated) responses of one step; per-sample arrays are [N]."""
    pairs: list[tuple[list[int], list[int]]]  # (ids of the prompt it is trained under, response ids)
    texts: list[str]  # the responses decoded, as the grader and the grouper read them
    prompt: np.ndarray  # int64, global prompt id within the step
    level: np.ndarray  # int64, difficulty of the prompt
    reward: np.ndarray  # float64
    group: np.ndarray  # int64, 0 regular, 1 extended
    sampled_format: np.ndarray  # int64, index in FORMATS of the prompt that drew the response
    sampler_logp: np.ndarray  # float64, summed over the response under the sampler; NaN when that prompt is
    # not the one it is trained under (forced exploration samples) and for demonstrations
    weight: np.ndarray  # float64, the ILP's 0/1 (or 1 for demonstrations)
    forced_prompts: list[tuple[list[int], list[int]]] | None = None  # per sample: its problem's (regular, sv)
    # prompt ids, for anchoring; None for demonstrations
    anchor: np.ndarray | None = None  # float64, weight of the sample under its own forced prompt (set by select)

    def response_tokens(self) -> np.ndarray:
        return np.array([len(response) for _, response in self.pairs], np.int64)


@dataclass
class Drawn:
    """One step's rollouts on this rank, one per sample, and the prompts of the view each sample was shown."""
    rollouts: list  # rollout.Rollout, rollout k drawn by prompts[its format][k]
    formats: np.ndarray  # [N] int64 index in FORMATS of the prompt that drew each rollout
    owners: np.ndarray  # [N] int64 the problem's index in this rank's share
    prompts: dict[str, list[list[int]]]  # per format, the prompt ids of each sample's view (`Task.view`)


def shard(items: list, world: World) -> tuple[list, int]:
    """This rank's contiguous share of a step's items and the global index of its first one."""
    if len(items) % world.size:
        raise ValueError(f"{len(items)} items per step do not split evenly over {world.size} ranks")
    size = len(items) // world.size
    return items[world.rank * size:(world.rank + 1) * size], world.rank * size


def samples_per_format(cfg) -> dict[str, int]:
    """How many of each prompt's n samples each prompt format draws (exploration, module docstring)."""
    explore = cfg.explore_per_group if cfg.mode != "sft" else 0
    return {"asv": cfg.samples_per_prompt - 2 * explore, "regular": explore, "sv": explore}


def generate(sampler, tokenizer, task, problems, first, cfg, step: int) -> Drawn:
    """The step's samples of every problem (`samples_per_format`) in one sampling call. Sample j of a problem
    under a format sees its own view of the problem and has its own seed, both from (seed, step, the
    problem's global index, format, j): a sample is the same whatever the number of ranks (the sampler's
    draws do not depend on batching)."""
    views, formats, owners, seeds = [], [], [], []
    for fmt, count in samples_per_format(cfg).items():
        for i, problem in enumerate(problems):
            for j in range(count):
                views.append(task.view(problem, derive_seed(cfg.seed, "view", step, first + i, fmt, j)))
                seeds.append(derive_seed(cfg.seed, "sample", step, first + i, fmt, j))
                formats.append(FORMATS.index(fmt))
                owners.append(i)
    prompts = {fmt: encode_prompts(tokenizer, [prompt_text(v, fmt, verbose=cfg.verbose_prompts) for v in views])
               for fmt in FORMATS}
    drawn_by = [prompts[FORMATS[f]][k] for k, f in enumerate(formats)]
    rollouts = sampler.generate(drawn_by, 1, seed=seeds)
    return Drawn(rollouts, np.array(formats, np.int64), np.array(owners, np.int64), prompts)


def grade(task, problems, drawn: Drawn, first: int) -> Samples:
    """Rewards of every rollout; each is paired with the adaptive prompt of its view, which it is trained
    under."""
    rollouts = drawn.rollouts
    owners = [problems[i] for i in drawn.owners]
    texts = [r.text for r in rollouts]
    scores = Grader(task).score(owners, texts)
    if not np.all(np.isfinite(scores.reward)):
        raise ValueError("grader returned a NaN or infinite reward")
    reward = np.where([r.truncated for r in rollouts], 0.0, scores.reward.astype(np.float64))
    sampler_logp = np.array([float(np.sum(r.logprobs)) for r in rollouts], np.float64)
    return Samples(
        pairs=[(drawn.prompts["asv"][k], list(r.response_ids)) for k, r in enumerate(rollouts)],
        texts=texts,
        prompt=first + drawn.owners,
        level=np.array([p.level for p in owners], np.int64),
        reward=reward,
        group=np.zeros(len(rollouts), np.int64),
        sampled_format=drawn.formats,
        sampler_logp=np.where(drawn.formats == ADAPTIVE, sampler_logp, np.nan),
        weight=np.zeros(len(rollouts)),
        forced_prompts=[tuple(drawn.prompts[fmt][k] for fmt in FORCED) for k in range(len(rollouts))],
    )


def assign_groups(samples: Samples, extended_trials: int) -> None:
    samples.group = grouping.response_groups(samples.texts, (extended_trials,))


def demonstrations(tokenizer, problems, first, *, seed: int, step: int, formats, verbose: bool,
                   extended_trials: int) -> Samples:
    """One demonstration per problem, its (prompt format, response format) drawn from `formats` by a
    generator seeded per (seed, step, global index): the same data whatever the number of ranks."""
    pairs, texts, prompt_formats = [], [], []
    for i, problem in enumerate(problems):
        rng = random.Random(derive_seed(seed, "demonstration", step, first + i))
        prompt_fmt, response_fmt = rng.choice(formats)
        prompt = encode_prompts(tokenizer, [prompt_text(problem, prompt_fmt, verbose=verbose)])[0]
        text = demonstration(problem, response_fmt)
        pairs.append((prompt, tokenizer(text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]))
        texts.append(text)
        prompt_formats.append(FORMATS.index(prompt_fmt))
    count = len(problems)
    return Samples(pairs, texts, np.arange(first, first + count), np.array([p.level for p in problems], np.int64),
                   np.ones(count), grouping.response_groups(texts, (extended_trials,)),
                   np.array(prompt_formats, np.int64), np.full(count, np.nan), np.ones(count))


def select(world: World, samples: Samples, buffer: budget.SampleBuffer, cfg) -> tuple[dict, budget.Selection]:
    """Global ILP: gather every rank's samples, solve over the buffer window, keep this rank's weights.
    Returns the gathered arrays (with their weights) for the metrics."""
    local = {"reward": samples.reward, "group": samples.group, "prompt": samples.prompt, "level": samples.level,
             "tokens": samples.response_tokens(), "format": samples.sampled_format}
    gathered = all_gather_arrays(world, local)
    utility = budget.utilities(gathered["reward"], gathered["group"], gathered["prompt"], kind=cfg.utility)
    buffer.push(utility, gathered["group"], gathered["prompt"])
    weights, selection = buffer.solve(cfg.budget, max_per_prompt=cfg.max_per_prompt, method=cfg.ilp_method)
    gathered["weight"] = weights.astype(np.float64)
    gathered["anchor"] = anchored(gathered["format"], gathered["group"], gathered["reward"]) * float(cfg.anchor_weight)
    start = world.rank * len(samples.reward)
    samples.weight = gathered["weight"][start:start + len(samples.reward)]
    samples.anchor = gathered["anchor"][start:start + len(samples.reward)]
    return gathered, selection


def anchored(sampled_format: np.ndarray, group: np.ndarray, reward: np.ndarray) -> np.ndarray:
    """The exploration samples that anchor their forced prompt: correct, and in that prompt's format (a
    single answer under the forced regular prompt, an extended one under the forced voting prompt). A correct
    single answer drawn under the voting prompt is not anchored: training it there taught that prompt to
    stop voting (measured: forced-voting extended share 0.95 -> 0.00 in 30 RL steps at q = 0)."""
    in_format = np.where(sampled_format == FORMATS.index("regular"), group == 0, group > 0)
    return (sampled_format != ADAPTIVE) & in_format & (reward > 0)


def training_pairs(samples: Samples) -> tuple[list, np.ndarray, np.ndarray]:
    """(pairs, sample of each pair, weight of each pair): the selected samples under the prompt they are
    trained under (the adaptive one), then the anchored ones under the forced prompt that drew them."""
    chosen = np.flatnonzero(samples.weight > 0)
    anchored = np.flatnonzero(samples.anchor > 0) if samples.anchor is not None else np.zeros(0, np.int64)
    pairs = [samples.pairs[i] for i in chosen]
    pairs += [(samples.forced_prompts[i][FORCED.index(FORMATS[samples.sampled_format[i]])], samples.pairs[i][1])
              for i in anchored]
    weights = np.concatenate((samples.weight[chosen], samples.anchor[anchored] if len(anchored) else []))
    return pairs, np.concatenate((chosen, anchored)).astype(np.int64), weights


def update(policy, samples: Samples, all_weights, all_tokens, world: World, cfg, all_anchors=None) -> dict:
    """Weighted SFT step on the selected (and anchored) responses: loss = −Σ_i w_i log π(y_i|x_i) / Z with Z
    the learned response tokens of all ranks. Only w_i > 0 is packed. Returns local, not yet reduced,
    figures, and Z itself (`learned_tokens`: from the gathered arrays, the same on every rank)."""
    learned = all_weights if all_anchors is None else all_weights + all_anchors
    total_tokens = float(np.dot(learned, all_tokens))  # Z (counts the eos token as learned)
    if total_tokens == 0:
        return {"loss": 0.0, "abs_diff": 0.0, "tokens": 0.0, "skipped": True, "learned_tokens": 0.0}
    pairs, owners, weights = training_pairs(samples)
    num_direct = int((samples.weight > 0).sum())  # the first pairs: trained under the adaptive prompt
    dummy = len(pairs) == 0  # keep this rank in the collectives with a zero-weight sequence
    if dummy:
        pairs, owners, weights = [samples.pairs[0]], np.array([0]), np.zeros(1)
    # FSDP averages gradients over ranks: W · w_i / Z makes the average the one-process gradient.
    seq_weights = torch.as_tensor(weights * world.size / total_tokens, dtype=torch.float32, device=world.device)
    seq_logp, loss = backward_in_chunks(policy, pairs, seq_weights, world, cfg.update_tokens)
    figures = {"loss": loss.detach(), "abs_diff": 0.0, "tokens": 0.0, "skipped": False, "learned_tokens": total_tokens}
    # Health metric: |sampler − trainer| of each sequence's summed log-prob, per learned token, over the
    # sequences trained under the prompt that drew them (a lower bound on the per-token mean |difference|;
    # exact when all differences share a sign).
    direct = np.isfinite(samples.sampler_logp[owners]) & (np.arange(len(owners)) < num_direct)
    if not dummy and direct.any() and cfg.temperature == 1.0:
        diff = seq_logp.double().cpu()[torch.as_tensor(direct)] - torch.as_tensor(samples.sampler_logp[owners][direct])
        figures["abs_diff"] = torch.abs(diff).sum()
        figures["tokens"] = float(samples.response_tokens()[owners][direct].sum())
    return figures


def optimizer_step(policy, optimizer, max_grad_norm: float) -> None:
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
