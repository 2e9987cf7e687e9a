"""The budget ILP of DESIGN §1, validated once and shared by every solver.

    maximise   Σ_i w_i · u_i
    subject to Σ_{i ∈ prompt p} w_i ≤ m                      for each prompt p   (only with a cap m)
               Σ_i w_i · 1{g_i = k} ≤ B_k                    for each costly group k = 1 … K-1
               w_i ∈ {0, 1}

with B_k = floor(q_k · m · P + 1e-9), or floor(q_k · N + 1e-9) without a cap (P = distinct prompts
present, N = samples). The 1e-9 keeps q · m · P = 3 from flooring to 2 through rounding. The right-hand
side depends on the batch only, never on the selection.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Ilp:
    utilities: np.ndarray  # [N] float64, finite
    groups: np.ndarray  # [N] int64 in [0, K)
    prompts: np.ndarray  # [N] int64, dense ids in [0, P) (sorted order of the caller's ids)
    num_groups: int  # K
    num_prompts: int  # P
    max_per_prompt: int | None  # m, None = no per-prompt rows
    budgets: np.ndarray  # [K-1] int64, B_k for k = 1 … K-1

    @property
    def num_samples(self) -> int:
        return len(self.utilities)

    @property
    def capacity(self) -> int:
        """m · P, or N without a cap: the denominator of `Selection.group_share`."""
        if self.max_per_prompt is None:
            return self.num_samples
        return self.max_per_prompt * self.num_prompts


def check_samples(utilities, groups, prompt_index):
    """Validated copies: utilities [N] float64 finite, groups [N] int64 ≥ 0, prompt_index [N] int64."""
    utilities, groups, prompt_index = np.asarray(utilities), np.asarray(groups), np.asarray(prompt_index)
    if utilities.ndim != 1 or utilities.dtype.kind not in "biuf":
        raise ValueError(f"utilities must be a 1-D real array, got shape {utilities.shape} {utilities.dtype}")
    if groups.shape != utilities.shape or prompt_index.shape != utilities.shape:
        raise ValueError(f"groups {groups.shape} and prompt_index {prompt_index.shape} must have the "
                         f"shape of utilities {utilities.shape}")
    if not np.all(np.isfinite(utilities)):
        raise ValueError("utilities must be finite (got NaN or inf)")
    if groups.dtype.kind not in "iu" or (len(groups) and groups.min() < 0):
        raise ValueError("groups must hold non-negative integers")
    if prompt_index.dtype.kind not in "iu":
        raise ValueError("prompt_index must hold integers")
    return utilities.astype(np.float64), groups.astype(np.int64), prompt_index.astype(np.int64)


def _check_q(q):
    values = np.atleast_1d(np.asarray(q, dtype=np.float64))
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"q must be a float or a 1-D sequence with one value per costly group, got {q!r}")
    if not np.all((values >= 0) & (values <= 1)):  # NaN fails too
        raise ValueError(f"q must lie in [0, 1], got {q!r}")
    return values


def make_ilp(utilities, groups, prompt_index, q, max_per_prompt=None) -> Ilp:
    """Validate the inputs and fix the right-hand sides (K = len(q) + 1)."""
    utilities, groups, prompt_index = check_samples(utilities, groups, prompt_index)
    q = _check_q(q)
    num_groups = len(q) + 1
    if len(groups) and groups.max() >= num_groups:
        raise ValueError(f"groups must lie in [0, {num_groups}) for {len(q)} budget value(s) q")
    if max_per_prompt is not None and (isinstance(max_per_prompt, bool) or not isinstance(
            max_per_prompt, (int, np.integer)) or max_per_prompt < 1):
        raise ValueError(f"max_per_prompt must be a positive int or None, got {max_per_prompt!r}")
    _, prompts = np.unique(prompt_index, return_inverse=True)
    num_prompts = int(prompts.max()) + 1 if len(prompts) else 0
    capacity = len(utilities) if max_per_prompt is None else int(max_per_prompt) * num_prompts
    budgets = np.floor(q * capacity + 1e-9).astype(np.int64)
    return Ilp(utilities, groups, prompts.astype(np.int64).ravel(), num_groups, num_prompts,
                   None if max_per_prompt is None else int(max_per_prompt), budgets)
