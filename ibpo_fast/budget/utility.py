"""Utilities handed to the budget solver (DESIGN §1: the utility decides what the budget buys).

- ``value`` (the default): u_i = r_i · r̄_{g_i}(p), the sample's reward times the success rate of its group
  on its prompt (the mean reward of p's samples in g_i). Only correct samples count, and a correct sample is
  worth what its group is worth on that prompt: with one target per prompt (m = 1) every prompt with a
  correct response gets one, the budget goes to the prompts where the extended group's rate exceeds the
  regular one's the most, and equal rates tie to the cheaper group. This is the tabular problem behind
  IBPO (a per-prompt choice of group under the density cap) with the rates estimated from the batch.
- ``reward``: u_i = r_i. It credits a group on a prompt when any one of its samples is right (pass@n): with
  8 samples a regular answer is right somewhere on nearly every prompt, so the budget is never needed and
  the policy stops voting everywhere (measured on the tiny default).
- ``margin`` (the paper's reward margin): u_i = r_i - (mean reward of p's samples in the other groups), so
  an extended response on a prompt the regular ones already solve is worth about 0; on easy prompts both
  groups are worth ≈ 0, no target is set there, and nothing teaches the policy to answer once (measured:
  it votes on every level alike). With K > 2 the mean runs over all other groups together; a prompt whose
  samples all share one group has no comparison and its margin is the reward itself.
"""
from __future__ import annotations

import numpy as np

from .ilp import check_samples

KINDS = ("value", "reward", "margin")


def utilities(rewards, groups, prompt_index, kind="value") -> np.ndarray:
    """[N] float64 utilities of `kind` ("value", "reward" or "margin", module docstring) for samples
    with rewards [N], groups [N] and prompt ids [N]."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    rewards, groups, prompt_index = check_samples(rewards, groups, prompt_index)
    if kind == "reward" or len(rewards) == 0:
        return rewards
    _, prompts = np.unique(prompt_index, return_inverse=True)
    prompts = prompts.ravel()
    num_groups = int(groups.max()) + 1
    cells = prompts * num_groups + groups
    cell_sum = np.bincount(cells, weights=rewards)
    cell_count = np.bincount(cells)
    if kind == "value":
        return rewards * cell_sum[cells] / cell_count[cells]
    prompt_sum = np.bincount(prompts, weights=rewards)
    prompt_count = np.bincount(prompts)
    other_sum = prompt_sum[prompts] - cell_sum[cells]
    other_count = prompt_count[prompts] - cell_count[cells]
    return rewards - np.where(other_count > 0, other_sum / np.maximum(other_count, 1), 0.0)
