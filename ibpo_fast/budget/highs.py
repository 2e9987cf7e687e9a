"""The budget ILP through HiGHS, for the cases `exact` does not cover (and as its cross-check).

The model goes in through one low-level ``Highs.passModel`` call with the CSR rows from
`ibpo_fast.grouping.statistics`, and presolve is off (see `_run`); DESIGN §1 records 30.7 s for a naive
MIP at n = 65,536, this takes 0.2-0.3 s on margin utilities there, but still seconds on binary rewards,
whose many ties make the LP degenerate (``python -m benchmarks.ilp``). Samples with utility ≤ 0 never
enter the model (they could only be selected at no gain, and DESIGN §1 says they never are).

Ties. HiGHS returns some optimal vertex; which one is arbitrary. A post-pass makes the answer
deterministic inside each prompt without changing the objective or feasibility: (1) inside each
(prompt, group) it keeps the solver's count but takes the best samples (by utility, then index);
(2) inside each prompt it swaps a selected costly sample for an unselected regular one of equal or
higher utility (same prompt count, one less budget used). Ties between prompts, and between two costly
groups, stay with the solver. The objective is recomputed from the final weights, unperturbed.
"""
from __future__ import annotations

import highspy
import numpy as np

from .. import grouping
from .exact import rank_in_segment
from .ilp import Ilp

_STATUS = {
    highspy.HighsModelStatus.kOptimal: "optimal",
    highspy.HighsModelStatus.kModelEmpty: "optimal",
    highspy.HighsModelStatus.kInfeasible: "infeasible",
    highspy.HighsModelStatus.kTimeLimit: "time_limit",
    highspy.HighsModelStatus.kIterationLimit: "limit",
    highspy.HighsModelStatus.kSolutionLimit: "limit",
    highspy.HighsModelStatus.kMemoryLimit: "limit",
    highspy.HighsModelStatus.kInterrupt: "limit",
    highspy.HighsModelStatus.kHighsInterrupt: "limit",
}  # anything else (load, model, presolve, solve errors, unbounded, unknown) maps to "error"


def _rows(u, g, p, ilp: Ilp):
    """CSR rows and their upper bounds: prompt rows (with a cap), then one budget row per costly group."""
    stats = grouping.statistics(g, u, p, ilp.num_groups, num_prompts=ilp.num_prompts)
    indptr, indices = stats.row_indptr, stats.row_indices
    if ilp.max_per_prompt is None:
        start = indptr[ilp.num_prompts]
        return indptr[ilp.num_prompts:] - start, indices[start:], ilp.budgets.astype(np.float64)
    upper = np.concatenate((np.full(ilp.num_prompts, float(ilp.max_per_prompt)), ilp.budgets))
    return indptr, indices, upper


def _run(u, indptr, indices, row_upper, time_limit):
    highs = highspy.Highs()
    highs.setOptionValue("output_flag", False)
    # the LP relaxation is integral (exact.py): the root LP solves the MIP, so only round-off may
    # separate bound and incumbent, and presolve plus its root restarts cost more than they save
    # (measured at n = 65,536, K = 3, m = 1: 3-7 s with them, 0.2 s without)
    highs.setOptionValue("mip_rel_gap", 1e-9)
    highs.setOptionValue("mip_abs_gap", 0.0)
    highs.setOptionValue("presolve", "off")
    highs.setOptionValue("mip_root_presolve_only", True)
    # one thread: the models are small, and with HiGHS's thread pool one 6-variable solve hung for over half
    # an hour on 2 loaded cores (tests/test_budget.py beside the frontier benchmark; HiGHS issue #1670)
    highs.setOptionValue("threads", 1)
    if time_limit is not None:
        highs.setOptionValue("time_limit", float(time_limit))
    n, num_rows = len(u), len(row_upper)
    highs.passModel(n, num_rows, len(indices), highspy.MatrixFormat.kRowwise, highspy.ObjSense.kMaximize,
                    0.0, u, np.zeros(n), np.ones(n), np.full(num_rows, -highspy.kHighsInf), row_upper,
                    indptr.astype(np.int32), indices.astype(np.int32), np.ones(len(indices)),
                    np.ones(n, np.int32))
    highs.run()
    info = highs.getInfo()
    has_solution = info.primal_solution_status == highspy.SolutionStatus.kSolutionStatusFeasible
    chosen = np.asarray(highs.getSolution().col_value) > 0.5 if has_solution else np.zeros(n, bool)
    return chosen, _STATUS.get(highs.getModelStatus(), "error"), info.mip_dual_bound


def _canonical_ties(chosen, u, g, p, ilp: Ilp):
    """The tie post-pass of the module docstring; chosen [n] bool -> [n] bool."""
    cells = p * ilp.num_groups + g
    num_cells = ilp.num_prompts * ilp.num_groups
    chosen = rank_in_segment(cells, u, g, num_cells)[0] < np.bincount(cells[chosen], minlength=num_cells)[cells]
    if ilp.max_per_prompt is None or not chosen.any():
        return chosen
    width = min(ilp.max_per_prompt, int(np.bincount(p).max()))
    spare, costly = np.flatnonzero((g == 0) & ~chosen), np.flatnonzero((g > 0) & chosen)
    spare_rank = rank_in_segment(p[spare], u[spare], g[spare], ilp.num_prompts)[0]
    spare, spare_rank = spare[spare_rank < width], spare_rank[spare_rank < width]
    # costly picks from the worst up (lowest utility, then dearest group)
    costly_rank = rank_in_segment(p[costly], -u[costly], -g[costly], ilp.num_prompts)[0]
    best_spare = np.full((ilp.num_prompts, width), -np.inf)
    best_spare[p[spare], spare_rank] = u[spare]
    worst_costly = np.full((ilp.num_prompts, width), np.inf)
    worst_costly[p[costly], costly_rank] = u[costly]
    # pairing the i-th best spare with the i-th worst costly: the swaps form a prefix of each row
    swap = best_spare >= worst_costly  # [P, width]
    chosen[spare[swap[p[spare], spare_rank]]] = True
    chosen[costly[swap[p[costly], costly_rank]]] = False
    return chosen


def solve_highs(ilp: Ilp, time_limit=None):
    """(selected [N] bool, upper bound, status) from HiGHS's MIP solver plus the tie post-pass."""
    keep = np.flatnonzero(ilp.utilities > 0)
    selected = np.zeros(ilp.num_samples, bool)
    if len(keep) == 0:
        return selected, 0.0, "optimal"
    u, g, p = ilp.utilities[keep], ilp.groups[keep], ilp.prompts[keep]
    chosen, status, bound = _run(u, *_rows(u, g, p, ilp), time_limit)
    selected[keep[_canonical_ties(chosen, u, g, p, ilp)]] = True
    return selected, float(bound), status
