"""`solve`: the lower level of IBPO, one call from the trainer (DESIGN §1, §4).

Defined answers for degenerate batches (all tested):
* empty batch (N = 0): empty weights, objective 0, status "optimal".
* no positive utility (e.g. no correct response): nothing selected, objective 0, "optimal".
* no costly response, or q = 1 with a cap (B = m · P never binds): each prompt's m best positive
  responses (without a cap: every positive response).
* all responses costly: at most B_k of each costly group, the best ones.
* q = 0: no costly response is selected.
* a single sample: selected iff its utility is positive and its group's budget is at least 1.
* NaN or inf utility, q outside [0, 1], a length mismatch, a group outside [0, len(q)]: ValueError.
Infeasibility cannot happen (every row is "≤" with a non-negative right side, so w = 0 is feasible);
HiGHS statuses are still passed through faithfully: "optimal", "time_limit", "infeasible", "limit"
(another solver limit), "error". The exact path reports "optimal" once its Lagrangian certificate
matches the objective, "uncertified" otherwise (which the tests show does not happen).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .exact import lagrangian_bound, solve_exact
from .highs import solve_highs
from .ilp import make_ilp

METHODS = ("auto", "exact", "highs")


@dataclass(frozen=True)
class Selection:
    weights: np.ndarray  # [N] float32, 0 or 1
    objective: float  # Σ_i w_i · u_i of these weights
    upper_bound: float  # proven bound on the optimum (Lagrangian certificate, or HiGHS's dual bound)
    status: str  # "optimal" | "time_limit" | "infeasible" | "limit" | "error" | "uncertified"
    method: str  # "exact" | "highs": the path that produced the weights
    budgets: np.ndarray  # [K-1] int64, right-hand sides B_k of the budget rows
    group_share: np.ndarray  # [K] selected count of group k / (m · P), or / N without a cap
    group_density_selected: np.ndarray  # [K] selected count of group k / selected count (0 if none)
    solve_seconds: float  # wall time of the whole call, validation included


def _certify(ilp, prices, objective):
    bound = lagrangian_bound(ilp, prices)
    scale = 1.0 + np.abs(ilp.utilities).sum()
    return bound, "optimal" if bound <= objective + 1e-9 * scale else "uncertified"


def solve(utilities, groups, prompt_index, q, *, max_per_prompt=None, method="auto", time_limit=None) -> Selection:
    """Choose 0/1 weights maximising Σ w_i · utilities_i within the budget (see `ilp.py`).

    utilities: [N] (from `utilities(rewards, ..., kind=...)`); groups: [N] ints in [0, K);
    prompt_index: [N] any integer prompt ids; q: a float (K = 2) or K-1 values in [0, 1];
    max_per_prompt: m, or None for no per-prompt rows; method: "exact" (ValueError where it does not
    apply), "highs", or "auto" (exact where it applies, else HiGHS); time_limit: HiGHS seconds.
    """
    start = time.perf_counter()
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if time_limit is not None and not time_limit > 0:
        raise ValueError(f"time_limit must be positive seconds or None, got {time_limit!r}")
    ilp = make_ilp(utilities, groups, prompt_index, q, max_per_prompt)
    exact = solve_exact(ilp) if method != "highs" else None
    if exact is not None:
        selected, prices = exact
        objective = float(ilp.utilities[selected].sum())
        bound, status = _certify(ilp, prices, objective)
        used = "exact"
    elif method == "exact":
        raise ValueError("method='exact' applies without max_per_prompt, with one costly group, or when no "
                         "budget row binds; use method='highs' or 'auto'")
    else:
        selected, bound, status = solve_highs(ilp, time_limit)
        objective = float(ilp.utilities[selected].sum())
        used = "highs"
    per_group = np.bincount(ilp.groups[selected], minlength=ilp.num_groups).astype(np.float64)
    return Selection(
        weights=selected.astype(np.float32),
        objective=objective,
        upper_bound=bound,
        status=status,
        method=used,
        budgets=ilp.budgets,
        group_share=per_group / max(ilp.capacity, 1),
        group_density_selected=per_group / max(per_group.sum(), 1.0),
        solve_seconds=time.perf_counter() - start,
    )
