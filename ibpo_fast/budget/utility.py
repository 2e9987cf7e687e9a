"""Utilities handed to the budget solver: the reward itself, or the paper's reward margin.

margin_i = r_i - (mean reward of the samples of the same prompt in groups other than g_i), so an
extended response on a prompt the regular ones already solve is worth about 0. With K > 2 the mean runs
over all other groups together. A prompt whose samples all share one group has no comparison: its
margin is the reward minus 0 (the reward itself).
"""
from __future__ import annotations

import numpy as np

from .ilp import check_samples

KINDS = ("reward", "margin")


def utilities(rewards, groups, prompt_index, kind="reward") -> np.ndarray:
    """[N] float64 utilities of kind "reward" (a copy of rewards) or "margin" (module docstring)."""
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
    prompt_sum = np.bincount(prompts, weights=rewards)
    prompt_count = np.bincount(prompts)
    other_sum = prompt_sum[prompts] - cell_sum[cells]
    other_count = prompt_count[prompts] - cell_count[cells]
    return rewards - np.where(other_count > 0, other_sum / np.maximum(other_count, 1), 0.0)
