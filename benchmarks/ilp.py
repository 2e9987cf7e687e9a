"""Budget ILP solve time vs batch size: the exact structured path and HiGHS, same instances.

Instances follow the paper's setting: P = n / 8 prompts with 8 responses each, about half extended,
binary rewards from a per-prompt difficulty (extended responses right more often), utility = reward
margin (or reward), cap m = 1, budget q = 0.5. Each figure is the median wall time of a whole
`budget.solve` call (validation, solve, certificate, result); HiGHS rows above 16,384 samples time a
single run (it takes seconds there). ``--highs-max`` skips HiGHS above that size (empty cells); the
default runs it everywhere. Every row checks that both methods reach the same objective and reports
the exact path's certificate status.

    python -m benchmarks.ilp --out bench_out
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks.common import median_time, plot_lines, write_results
from ibpo_fast import budget

SIZES = (1_024, 4_096, 16_384, 65_536, 262_144, 1_048_576)
COLUMNS = ["n", "prompts", "exact_ms", "highs_ms", "speedup", "objective", "exact_status", "highs_status",
           "same_objective", "group_share_1"]


def make_instance(n, rng, utility):
    num_prompts = max(1, n // 8)
    prompts = np.repeat(np.arange(num_prompts), 8)[:n]
    groups = rng.integers(0, 2, n)
    difficulty = rng.random(num_prompts)[prompts]
    rewards = (rng.random(n) < difficulty + 0.25 * groups).astype(np.float64)
    return budget.utilities(rewards, groups, prompts, kind=utility), groups, prompts


def measure(n, args, rng):
    u, g, p = make_instance(n, rng, args.utility)
    solve = dict(q=args.q, max_per_prompt=args.max_per_prompt)
    exact = budget.solve(u, g, p, method="exact", **solve)
    row = {"n": n, "prompts": int(p.max()) + 1, "objective": exact.objective, "exact_status": exact.status,
           "group_share_1": float(exact.group_share[1])}
    row["exact_ms"] = 1e3 * median_time(lambda: budget.solve(u, g, p, method="exact", **solve),
                                        repeats=args.repeats)
    if n <= args.highs_max:
        highs = budget.solve(u, g, p, method="highs", **solve)
        repeats = args.repeats if n <= 16_384 else 1
        row["highs_ms"] = 1e3 * median_time(lambda: budget.solve(u, g, p, method="highs", **solve),
                                            repeats=repeats, warmup=0)
        row["highs_status"] = highs.status
        row["same_objective"] = bool(abs(highs.objective - exact.objective) <= 1e-9 * max(1.0, abs(exact.objective)))
        row["speedup"] = row["highs_ms"] / row["exact_ms"]
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench_out", help="folder for ilp.json, ilp.md and ilp.png")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--highs-max", type=int, default=SIZES[-1], help="largest n given to HiGHS")
    parser.add_argument("--q", type=float, default=0.5)
    parser.add_argument("--max-per-prompt", type=int, default=1)
    parser.add_argument("--utility", choices=("margin", "reward", "value"), default="margin")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = [measure(n, args, rng) for n in args.sizes]
    path = write_results(args.out, "ilp", rows, columns=COLUMNS)
    plot_lines(Path(args.out) / "ilp.png", [r["n"] for r in rows],
               {"exact (sort-based, certified)": [r["exact_ms"] for r in rows],
                "HiGHS MIP (passModel, CSR)": [r.get("highs_ms") for r in rows]},
               xlabel="samples n", ylabel="solve time (ms)", title=f"budget ILP, m={args.max_per_prompt}, q={args.q}",
               logx=True, logy=True)
    return path


if __name__ == "__main__":
    main()
