"""The rollout side of IBPO: tasks, response formats, grading and sampling."""
from ibpo_fast.rollout.formats import (CONSENSUS, FORMATS, MAX_TRIALS, TRIAL_CLOSE, TRIAL_OPEN, Parsed,
                                       demonstration, demonstration_segments, majority, parse, prompt_text, vote)
from ibpo_fast.rollout.grader import Grader, Scores
from ibpo_fast.rollout.sampler import HFSampler, Rollout, VLLMSampler
from ibpo_fast.rollout.tasks import ArithmeticTask, JsonlMathTask, Problem, ReasoningGymTask, Task

__all__ = [
    "CONSENSUS", "FORMATS", "MAX_TRIALS", "TRIAL_CLOSE", "TRIAL_OPEN", "Parsed", "demonstration", "demonstration_segments", "majority", "parse",
    "prompt_text", "vote", "Grader", "Scores", "HFSampler", "Rollout", "VLLMSampler", "ArithmeticTask",
    "JsonlMathTask", "Problem", "ReasoningGymTask", "Task",
]
