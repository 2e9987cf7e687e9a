"""Sample accumulation across steps: solve the budget over enough samples when batches are small.

With P = 4 prompts, m = 1 and q = 0.25 a single step's budget is one extended response; the density
q is only meaningful over more samples. The paper accumulates scored samples across steps; the policy
here is:

* Kept: the scored samples (utility, group, prompt) of the last ``num_steps`` pushed steps, whole
  steps, oldest first. Pushing a step forgets the oldest one once more than ``num_steps`` are held.
* Prompts: ids are local to their step. Every (step, prompt) is its own prompt row, even when the same
  dataset prompt is drawn again later (its samples came from another policy); the buffer renumbers
  prompts with a running counter.
* Reused: `solve` runs the ILP over the whole window, so the budget's right side counts every prompt
  (or sample) held, and returns the weights of the newest step only. Older samples serve only as
  context for the constraint: their selection is re-decided in each solve and never handed out again,
  so every sample is trained on at most once, in the step that drew it.
* Checkpoint: `state_dict()` holds plain numpy arrays and ints (the window and the counters);
  `load_state_dict` restores it exactly, so a resumed run solves the same problems.
"""
from __future__ import annotations

import numpy as np

from .ilp import check_samples
from .solve import Selection, solve


class SampleBuffer:
    def __init__(self, num_steps: int):
        if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
            raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
        self.num_steps = int(num_steps)
        self._steps: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (utilities, groups, prompts)
        self.steps_pushed = 0
        self.samples_pushed = 0
        self.prompts_pushed = 0  # also the next free prompt id

    def __len__(self) -> int:
        return sum(len(utilities) for utilities, _, _ in self._steps)

    def push(self, utilities, groups, prompt_index) -> None:
        """Add one step's scored samples (prompt ids local to the step), forgetting the oldest step."""
        utilities, groups, prompt_index = check_samples(utilities, groups, prompt_index)
        _, local = np.unique(prompt_index, return_inverse=True)
        num_prompts = int(local.max()) + 1 if len(local) else 0
        self._steps.append((utilities, groups, local.ravel().astype(np.int64) + self.prompts_pushed))
        del self._steps[:-self.num_steps]
        self.steps_pushed += 1
        self.samples_pushed += len(utilities)
        self.prompts_pushed += num_prompts

    def window(self):
        """(utilities, groups, prompt ids) of every held sample, oldest step first; each [len(self)]."""
        if not self._steps:
            return np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64)
        return tuple(np.concatenate(column) for column in zip(*self._steps))

    def solve(self, q, **solve_kwargs) -> tuple[np.ndarray, Selection]:
        """(weights of the newest step's samples, the selection over the whole window)."""
        selection = solve(*self.window(), q, **solve_kwargs)
        newest = len(self._steps[-1][0]) if self._steps else 0
        return selection.weights[len(selection.weights) - newest:], selection

    def state_dict(self) -> dict:
        return {
            "num_steps": self.num_steps,
            "steps": [{"utilities": r.copy(), "groups": g.copy(), "prompts": p.copy()} for r, g, p in self._steps],
            "steps_pushed": self.steps_pushed,
            "samples_pushed": self.samples_pushed,
            "prompts_pushed": self.prompts_pushed,
        }

    def load_state_dict(self, state: dict) -> None:
        missing = {"num_steps", "steps", "steps_pushed", "samples_pushed", "prompts_pushed"} - set(state)
        if missing:
            raise ValueError(f"state is missing {sorted(missing)}")
        self.__init__(state["num_steps"])
        self._steps = [check_samples(s["utilities"], s["groups"], s["prompts"]) for s in state["steps"]]
        self.steps_pushed = int(state["steps_pushed"])
        self.samples_pushed = int(state["samples_pushed"])
        self.prompts_pushed = int(state["prompts_pushed"])
