"""Exact structured solvers for the budget ILP, and the Lagrangian bound that certifies them.

Why sorting is enough. Every column of the constraint matrix has at most one 1 among the prompt rows
(they partition the samples) and at most one among the budget rows (each sample has one group), so the
matrix is the incidence matrix of a bipartite graph: totally unimodular, for any K. The ILP is a
max-weight flow (source -> group k, capacity B_k -> sample -> prompt p, capacity m -> sink) and the
exact cases below are sort-based greedy solutions of it:

* No per-prompt cap, any K: the groups decouple; take every positive regular sample and the B_k best
  positive samples of each costly group k.
* Cap m and one costly group (K = 2). For prompt p with positive regular utilities R_0 ≥ R_1 ≥ … and
  positive extended ones E_0 ≥ E_1 ≥ …, let F_p(j) be its best value with at most j extended picks.
  The j-th extended pick (j = 1, 2, …) takes E_{j-1} and pushes out the regular in slot m - j:
      Δ_p(j) = F_p(j) - F_p(j-1) = E_{j-1} - (R_{m-j} if that regular exists else 0)
  while Δ_p(j) > 0 (past that the pick does not pay). E falls and R_{m-j} rises with j, so Δ_p is
  non-increasing: F_p is concave. Maximising Σ_p F_p(j_p) subject to Σ_p j_p ≤ B with concave F_p is
  solved by taking the B largest positive gains over all prompts: any allocation can be improved
  towards it by moving one pick from a smaller marginal gain to a larger one. Ordering equal gains by
  (prompt, j) keeps the taken gains a prefix within each prompt, so they are realisable.
* Cap m, K > 2, and the selection without budget rows (each prompt's m best) already within every
  budget: it solves a relaxation and is feasible, hence optimal. Otherwise there is no exact path here;
  `solve(method="auto")` uses HiGHS.

Ties: samples rank by utility, then by lower group, then by lower index; a gain of exactly 0 is never
taken, so inside a prompt an extended pick never replaces an equally good regular one.

Certificate. Pricing budget row k at λ_k ≥ 0 gives an upper bound for any λ (weak duality):
    L(λ) = Σ_k λ_k · B_k + Σ_p (sum of the m largest positive values of u_i - λ_{g_i} in prompt p)
Each solver returns its prices (the first gain or utility left out, else 0) and `lagrangian_bound`
recomputes L independently; it equals the objective exactly at those prices.
"""
from __future__ import annotations

import numpy as np

from .ilp import Ilp


def rank_in_segment(segment, values, groups, num_segments):
    """Rank of each sample inside its segment by (value desc, group asc, index asc).

    Returns rank [n], order [n] (samples sorted by segment, then rank) and first [num_segments + 1]
    (position in ``order`` where each segment starts).
    """
    order = np.lexsort((groups, -values, segment))
    first = np.zeros(num_segments + 1, np.int64)
    np.cumsum(np.bincount(segment, minlength=num_segments), out=first[1:])
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order)) - first[segment[order]]
    return rank, order, first


def _top_per_prompt(values, groups, prompts, num_prompts, m):
    return rank_in_segment(prompts, values, groups, num_prompts)[0] < m


def _independent_groups(u, g, num_groups, budgets):
    rank, order, first = rank_in_segment(g, u, g, num_groups)
    over = np.diff(first)[1:] > budgets
    prices = np.zeros(num_groups - 1)
    prices[over] = u[order[first[1:-1][over] + budgets[over]]]
    limit = np.concatenate(([len(u)], budgets))
    return rank < limit[g], prices


def _one_budget_row(u, g, p, num_prompts, m, budget):
    rank, order, first = rank_in_segment(2 * p + g, u, g, 2 * num_prompts)
    num_regular = np.diff(first)[0::2]  # [P]
    extended = np.flatnonzero((g == 1) & (rank < m))
    j, prompt = rank[extended], p[extended]  # this is prompt's (j+1)-th extended pick
    slot = m - 1 - j  # the regular rank it pushes out
    pushes = slot < num_regular[prompt]
    pushed_out = np.zeros(len(extended))
    pushed_out[pushes] = u[order[first[2 * prompt[pushes]] + slot[pushes]]]
    gain = u[extended] - pushed_out
    paying = gain > 0
    gain, j, prompt = gain[paying], j[paying], prompt[paying]
    ranked = np.lexsort((j, prompt, -gain))
    price = gain[ranked[budget]] if len(ranked) > budget else 0.0
    picks = np.bincount(prompt[ranked[:budget]], minlength=num_prompts)
    limit = np.where(g == 1, picks[p], m - picks[p])
    return rank < limit, np.array([price])


def solve_exact(ilp: Ilp):
    """(selected [N] bool, prices [K-1] float64), or None where no exact path applies (see above)."""
    keep = np.flatnonzero(ilp.utilities > 0)
    u, g, p = ilp.utilities[keep], ilp.groups[keep], ilp.prompts[keep]
    m, num_groups = ilp.max_per_prompt, ilp.num_groups
    if m is None:
        chosen, prices = _independent_groups(u, g, num_groups, ilp.budgets)
    elif num_groups == 2:
        chosen, prices = _one_budget_row(u, g, p, ilp.num_prompts, m, int(ilp.budgets[0]))
    else:
        chosen = _top_per_prompt(u, g, p, ilp.num_prompts, m)
        if np.any(np.bincount(g[chosen], minlength=num_groups)[1:] > ilp.budgets):
            return None
        prices = np.zeros(num_groups - 1)
    selected = np.zeros(ilp.num_samples, bool)
    selected[keep[chosen]] = True
    return selected, prices


def lagrangian_bound(ilp: Ilp, prices) -> float:
    """L(prices) above: an upper bound on the optimum for any prices ≥ 0."""
    prices = np.asarray(prices, np.float64)
    values = ilp.utilities - np.concatenate(([0.0], prices))[ilp.groups]
    keep = values > 0
    v, g, p = values[keep], ilp.groups[keep], ilp.prompts[keep]
    if ilp.max_per_prompt is not None:
        v = v[_top_per_prompt(v, g, p, ilp.num_prompts, ilp.max_per_prompt)]
    return float(v.sum() + prices @ ilp.budgets)
