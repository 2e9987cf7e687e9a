"""Per-step metrics: phase timers, the step record and its sinks (JSONL on rank 0, tensorboard when
installed). Keys of an IBPO / RFT step in metrics.jsonl (all over every rank's samples):

step, q, mode; loss (the weighted SFT loss, global); update_skipped (nothing selected anywhere);
train_tokens (Z); reward_mean (samples), reward_selected_mean; num_samples, num_selected;
sampled_extended_share (extended / samples: the policy's own density); selected_extended_share
(selected extended / (m·P), the ILP's left side over the right side's q; ≤ q when accumulate_steps = 1);
selected_extended_density (extended / selected); window_extended_share (the same over the buffer window);
accuracy_by_level, extended_share_by_level, selected_extended_by_level ({level: share});
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


def _share(mask: np.ndarray, among: np.ndarray) -> float:
    return float(mask[among].mean()) if among.any() else 0.0


def by_level(gathered: dict, values: np.ndarray, among: np.ndarray) -> dict[str, float]:
    """{level: mean of `values` over the samples of that level that are in `among`}."""
    return {str(level): _share(values, among & (gathered["level"] == level)) for level in np.unique(gathered["level"])}


def rollout_record(gathered: dict, selection, cfg) -> dict:
    """Budget and allocation figures of one step from the gathered per-sample arrays."""
    extended = gathered["group"] >= 1
    chosen = gathered["weight"] > 0
    all_samples = np.ones_like(chosen)
    num_prompts = len(np.unique(gathered["prompt"]))
    capacity = num_prompts * cfg.max_per_prompt if cfg.max_per_prompt else len(chosen)
    return {
        "reward_mean": float(gathered["reward"].mean()) if len(chosen) else 0.0,
        "reward_selected_mean": _share(gathered["reward"], chosen),
        "num_samples": int(len(chosen)),
        "num_selected": int(chosen.sum()),
        "sampled_extended_share": _share(extended, all_samples),
        # DESIGN.md §1: selected extended / (m · P); the budget caps it at q (over the buffer window).
        "selected_extended_share": float((extended & chosen).sum() / max(capacity, 1)),
        "selected_extended_density": _share(extended, chosen),
        "window_extended_share": float(selection.group_share[1]) if len(selection.group_share) > 1 else 0.0,
        "accuracy_by_level": by_level(gathered, gathered["reward"], all_samples),
        "extended_share_by_level": by_level(gathered, extended, all_samples),
        "selected_extended_by_level": by_level(gathered, extended, chosen),
        "response_tokens_mean": float(gathered["tokens"].mean()) if len(chosen) else 0.0,
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
