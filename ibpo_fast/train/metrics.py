"""Per-step metrics: phase timers, the step record and its sinks (JSONL on rank 0, tensorboard when
installed). Keys of an IBPO / RFT step in metrics.jsonl (all over every rank's samples):

step, q, mode; loss (the weighted SFT loss, global); update_skipped (nothing selected anywhere);
train_tokens (Z); reward_mean (samples), reward_selected_mean; num_samples, num_selected;
sampled_extended_share (extended / samples drawn under the adaptive prompt: the policy's own density;
exploration samples drawn under a forced prompt are left out); selected_extended_share
(selected extended / (m·P), the ILP's left side over the right side's q; ≤ q when accumulate_steps = 1);
selected_extended_density (extended / selected); window_extended_share (the same over the buffer window);
accuracy_by_level, extended_share_by_level (adaptive-prompt samples), selected_extended_by_level
({level: share}); forced_accuracy_by_level ({"regular" | "sv": {level: accuracy}} of the exploration
samples); selected_forced_share (selected samples drawn under a forced prompt / selected);
response_tokens_mean; ilp_status, ilp_method, ilp_seconds, ilp_objective; logprob_abs_diff (sampler vs
trainer log-prob per token, see `step.update`); tokens_per_s (generated tokens / whole step);
time_<phase> for generate, grade, group, ilp, forward_backward, optimizer (seconds).
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ibpo_fast.rollout.formats import FORMATS

PHASES = ("generate", "grade", "group", "ilp", "forward_backward", "optimizer")


class PhaseTimer:
    """Wall seconds per phase. On CUDA it synchronises at phase ends: timings are the point of it, and
    the phases around the ILP sync the host anyway."""

    def __init__(self, device: torch.device):
        self.device, self.seconds = device, {}

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start


def _mean_over(values: np.ndarray, among: np.ndarray) -> float:
    return float(values[among].mean()) if among.any() else 0.0


def by_level(gathered: dict, values: np.ndarray, among: np.ndarray) -> dict[str, float]:
    """{level: mean of `values` over the samples of that level that are in `among`}."""
    return {str(level): _mean_over(values, among & (gathered["level"] == level)) for level in np.unique(gathered["level"])}


def rollout_record(gathered: dict, selection, cfg) -> dict:
    """Budget and allocation figures of one step from the gathered per-sample arrays."""
    extended = gathered["group"] >= 1
    chosen = gathered["weight"] > 0
    adaptive = gathered["format"] == FORMATS.index("asv")
    num_prompts = len(np.unique(gathered["prompt"]))
    capacity = num_prompts * cfg.max_per_prompt if cfg.max_per_prompt else len(chosen)
    return {
        "reward_mean": _mean_over(gathered["reward"], adaptive),
        "reward_selected_mean": _mean_over(gathered["reward"], chosen),
        "num_samples": int(len(chosen)),
        "num_selected": int(chosen.sum()),
        "sampled_extended_share": _mean_over(extended, adaptive),
        # DESIGN.md §1: selected extended / (m · P); the budget caps it at q (over the buffer window).
        "selected_extended_share": float((extended & chosen).sum() / max(capacity, 1)),
        "selected_extended_density": _mean_over(extended, chosen),
        "window_extended_share": float(selection.group_share[1]) if len(selection.group_share) > 1 else 0.0,
        "accuracy_by_level": by_level(gathered, gathered["reward"], adaptive),
        "extended_share_by_level": by_level(gathered, extended, adaptive),
        "selected_extended_by_level": by_level(gathered, extended, chosen),
        "forced_accuracy_by_level": {fmt: by_level(gathered, gathered["reward"], gathered["format"] == FORMATS.index(fmt))
                                     for fmt in ("regular", "sv") if (gathered["format"] == FORMATS.index(fmt)).any()},
        "selected_forced_share": _mean_over(~adaptive, chosen),
        "response_tokens_mean": _mean_over(gathered["tokens"], adaptive),
        "ilp_status": selection.status,
        "ilp_method": selection.method,
        "ilp_seconds": selection.solve_seconds,
        "ilp_objective": selection.objective,
    }


class MetricLogger:
    """Appends one JSON object per step to `path` (rank 0 only). On resume, lines of steps at or after
    the resumed step are dropped first, so the file reads as one uninterrupted run."""

    def __init__(self, path: Path, *, enabled: bool, resume_step: int | None, tensorboard: bool):
        self.path, self.enabled, self.writer = path, enabled, None
        if not enabled:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if resume_step is not None and path.exists():
            kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] < resume_step]
        path.write_text("".join(line + "\n" for line in kept))
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional (extra "viz")
                return
            self.writer = SummaryWriter(str(path.parent / "tb"))

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(f"{self.path.stem}/{key}", value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
