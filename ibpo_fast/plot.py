"""`ibpo-fast plot`: PNGs of what a run's metrics file holds.

    ibpo-fast plot --metrics runs/tiny/metrics.jsonl --out runs/tiny
    ibpo-fast plot --metrics runs/tiny/warmup.jsonl --out runs/tiny      # the warm-up: its loss

- <stem>_loss.png (any file with a loss, e.g. warmup.jsonl): the training loss per step.
- budget_adherence.png (IBPO / RFT steps): per step, the extended share among the samples and the budget's
  left side (selected extended / (m·P), DESIGN.md §1; ≤ q), against q. The density among the selected
  (extended / selected) is the same number whenever all m·P targets are filled, so it is drawn only at the
  steps where it differs (where some prompt got fewer than m targets) instead of as a second, hidden line.
- allocation_by_level.png (IBPO / RFT steps): per step and difficulty level, the share of sampled responses
  that are extended (the policy's own choice) and the accuracy; a difficulty-aware policy spends its budget
  on the hard levels.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

BUDGET_KEYS = ("sampled_extended_share", "selected_extended_share", "selected_extended_density", "q")
LEVEL_KEYS = ("extended_share_by_level", "accuracy_by_level")


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a metrics JSONL; ValueError naming the file (and the line) when it has none or a bad one."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"metrics: no file {str(path)!r}")
    records = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{line_no}: not valid JSON ({e.msg})") from None
    if not records:
        raise ValueError(f"metrics: {str(path)!r} holds no steps")
    return records


def budget_series(records: list[dict]) -> dict[str, list[float]]:
    """{legend label: value per step} of the budget plot; the density only where it differs (NaN elsewhere)."""
    share, density = [r["selected_extended_share"] for r in records], [r["selected_extended_density"] for r in records]
    differs = [d if not math.isclose(d, s, abs_tol=1e-9) else math.nan for s, d in zip(share, density)]
    where = sum(not math.isnan(d) for d in differs)
    density_label = (f"extended / selected (density), at the {where} steps where it differs" if where else
                     "extended / selected (density): equal to selected / (m·P) at every step")
    return {"extended share, sampled": [r["sampled_extended_share"] for r in records],
            "extended share, selected / (m·P)": share,
            density_label: differs,
            "budget q": [r["q"] for r in records]}


def plot(metrics: str | Path, out: str | Path) -> list[Path]:
    """The PNGs the records of `metrics` allow (module docstring); returns their paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    steps = [r["step"] for r in records]
    has = lambda keys: all(key in r for r in records for key in keys)  # noqa: E731
    if not has(("loss",)) and not has(BUDGET_KEYS):
        raise ValueError(f"metrics: {str(metrics)!r} has no loss and no budget figures to plot")
    written = []
    if has(("loss",)):
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(steps, [r["loss"] for r in records])
        ax.set(xlabel="step", ylabel="loss", title=f"{Path(metrics).stem}: training loss")
        written.append(_save(fig, out / f"{Path(metrics).stem}_loss.png"))
    if has(BUDGET_KEYS):
        fig, ax = plt.subplots(figsize=(6, 4))
        for (label, values), style in zip(budget_series(records).items(), ("-", "-", "o", "k--")):
            ax.plot(steps, values, style, label=label, markersize=4)
        ax.set(xlabel="step", ylabel="share", ylim=(-0.02, 1.02), title="budget adherence")
        ax.legend(fontsize=8)
        written.append(_save(fig, out / "budget_adherence.png"))
    if has(LEVEL_KEYS):
        written.append(_save(_allocation_figure(plt, steps, records), out / "allocation_by_level.png"))
    return written


def _allocation_figure(plt, steps, records):
    levels = sorted({level for r in records for level in r["extended_share_by_level"]}, key=int)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for level in levels:
        left.plot(steps, [r["extended_share_by_level"].get(level, math.nan) for r in records], label=f"level {level}")
        right.plot(steps, [r["accuracy_by_level"].get(level, math.nan) for r in records], label=f"level {level}")
    left.set(xlabel="step", ylabel="extended share of samples", ylim=(-0.02, 1.02), title="allocation by difficulty")
    right.set(xlabel="step", ylabel="reward (accuracy) of samples", ylim=(-0.02, 1.02), title="accuracy by difficulty")
    left.legend(), right.legend()
    return fig


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv: list[str] | None = None, prog: str = "ibpo-fast plot") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--metrics", required=True, help="a run's metrics.jsonl or warmup.jsonl")
    parser.add_argument("--out", required=True, help="folder for the PNGs")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        print("\n".join(map(str, plot(args.metrics, args.out))))
    except ValueError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    return 0
