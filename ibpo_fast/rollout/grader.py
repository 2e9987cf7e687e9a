"""Reward for a response: parse it in any format (formats.parse), then check the final answer with the
task. Model output can be anything, so scoring never raises on it; a response without a usable answer
gets reward 0."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ibpo_fast.rollout.formats import parse
from ibpo_fast.rollout.tasks import Problem, Task


@dataclass(frozen=True)
class Scores:
    reward: np.ndarray  # [N] float32, 1.0 when the final answer is right
    num_trials: np.ndarray  # [N] int64, [TRIAL] blocks (0 = regular format)
    final_answer: list[str | None]  # [N] the voted (or only) answer
    well_formed: np.ndarray  # [N] bool, the response follows its format exactly

    def __len__(self) -> int:
        return len(self.final_answer)


class Grader:
    def __init__(self, task: Task):
        self.task = task

    def score(self, problems: list[Problem], response_texts: list[str]) -> Scores:
        """Score response i against problems[i] (repeat a problem once per sample)."""
        if len(problems) != len(response_texts):
            raise ValueError(f"response_texts has {len(response_texts)} entries but problems has {len(problems)}")
        parsed = [parse(text) for text in response_texts]
        reward = [float(self.task.is_correct(problem, p.final_answer)) for problem, p in zip(problems, parsed)]
        return Scores(
            reward=np.asarray(reward, dtype=np.float32),
            num_trials=np.asarray([p.num_trials for p in parsed], dtype=np.int64),
            final_answer=[p.final_answer for p in parsed],
            well_formed=np.asarray([p.well_formed for p in parsed], dtype=bool),
        )
