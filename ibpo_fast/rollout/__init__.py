"""The rollout side of IBPO: tasks, response formats, grading and sampling.

The exports load on first use (PEP 562): the tasks and formats need no torch, the samplers do."""
from ibpo_fast._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(("CONSENSUS", "FORMATS", "MAX_TRIALS", "TRIAL_CLOSE", "TRIAL_OPEN", "Parsed", "demonstration", "majority", "parse", "prompt_text", "vote"), "formats"),
    **dict.fromkeys(("Grader", "Scores"), "grader"),
    **dict.fromkeys(("HFSampler", "Rollout"), "sampler"),
    "ENGINES": "engines",
    **dict.fromkeys(("ArithmeticTask", "JsonlMathTask", "Problem", "ReasoningGymTask", "Task", "make_task"), "tasks"),
}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
