"""The rollout side of IBPO: tasks, response formats, grading and sampling."""
from ibpo_fast.rollout.formats import (CONSENSUS, FORMATS, MAX_TRIALS, TRIAL_CLOSE, TRIAL_OPEN, Parsed,
                                       demonstration, parse, prompt_text, vote)
from ibpo_fast.rollout.grader import Grader, Scores
from ibpo_fast.rollout.sampler import ENGINES, HFSampler, Rollout
from ibpo_fast.rollout.tasks import ArithmeticTask, JsonlMathTask, Problem, ReasoningGymTask, Task

__all__ = [
    "CONSENSUS", "FORMATS", "MAX_TRIALS", "TRIAL_CLOSE", "TRIAL_OPEN", "Parsed", "demonstration", "parse",
    "prompt_text", "vote", "Grader", "Scores", "ENGINES", "HFSampler", "Rollout", "ArithmeticTask",
    "JsonlMathTask", "Problem", "ReasoningGymTask", "Task",
]
