"""`ibpo-fast plot`: budget adherence and allocation by difficulty, drawn from a run's metrics.jsonl.

    ibpo-fast plot --metrics runs/tiny/metrics.jsonl --out runs/tiny

- budget_adherence.png: per step, the extended share among the samples, the budget's left side
  (selected extended / (m·P), DESIGN.md §1; ≤ q) and the density among the selected, against q.
- allocation_by_level.png: per step and difficulty level, the share of sampled responses that are
  extended (the policy's own choice) and the accuracy; a difficulty-aware policy spends its budget on
  the hard levels.
"""
from __future__ import annotations

import json
from pathlib import Path


def read_metrics(path: str | Path) -> list[dict]:
    lines = Path(path).read_text().splitlines()
    if not lines:
        raise ValueError(f"metrics: {str(path)!r} holds no steps")
    return [json.loads(line) for line in lines]


def plot(metrics: str | Path, out: str | Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    steps = [r["step"] for r in records]

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, [r["sampled_extended_share"] for r in records], label="extended share, sampled")
    ax.plot(steps, [r["selected_extended_share"] for r in records], label="extended share, selected / (m·P)")
    ax.plot(steps, [r["selected_extended_density"] for r in records], ":", label="extended / selected (density)")
    ax.plot(steps, [r["q"] for r in records], "k--", label="budget q")
    ax.set(xlabel="step", ylabel="share", ylim=(-0.02, 1.02), title="budget adherence")
    ax.legend()
    adherence = out / "budget_adherence.png"
    fig.savefig(adherence, dpi=120, bbox_inches="tight")
    plt.close(fig)

    levels = sorted({level for r in records for level in r["extended_share_by_level"]}, key=int)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for level in levels:
        left.plot(steps, [r["extended_share_by_level"].get(level, float("nan")) for r in records], label=f"level {level}")
        right.plot(steps, [r["accuracy_by_level"].get(level, float("nan")) for r in records], label=f"level {level}")
    left.set(xlabel="step", ylabel="extended share of samples", ylim=(-0.02, 1.02),
             title="allocation by difficulty")
    right.set(xlabel="step", ylabel="reward (accuracy) of samples", ylim=(-0.02, 1.02), title="accuracy by difficulty")
    left.legend(), right.legend()
    allocation = out / "allocation_by_level.png"
    fig.savefig(allocation, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return [adherence, allocation]
