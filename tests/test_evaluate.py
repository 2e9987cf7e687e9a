"""`ibpo-fast eval`'s scoring: self-consistency votes, per-level summaries, the shared definition of extended."""
import numpy as np
import pytest

from ibpo_fast.rollout import ArithmeticTask, Problem
from ibpo_fast.train.evaluate import Answers, self_consistency, summarize


def test_self_consistency_votes_the_first_k_answers_and_costs_all_of_them():
    problems = [Problem("a", "1+0%10", "1", 1), Problem("b", "2+0%10", "2", 3), Problem("c", "3+0%10", "3", 3)]
    finals = [["1", "2", "2", "1"], ["5", "2", "2", "5"], [None, "3", "4", "4"]]
    tokens = np.array([[10, 20, 30, 40], [1, 1, 1, 1], [5, 5, 5, 5]], float)
    answers = Answers(correct=np.zeros((3, 4)), extended=np.zeros((3, 4), bool), tokens=tokens, final=finals)
    task = ArithmeticTask()
    expected = {1: ([1, 0, 0], [10, 1, 5]),  # SC@1 is the first answer (None: wrong)
                2: ([1, 0, 1], [30, 2, 10]),  # ties go to the first seen: "1", "5"; None abstains -> "3"
                3: ([0, 1, 1], [60, 3, 15]),
                4: ([1, 0, 0], [100, 4, 20])}  # 2-2 ties go to the first seen ("1", "5"); "4" beats "3" 2-1
    for k, (correct, cost) in expected.items():
        got_correct, got_tokens = self_consistency(task, problems, answers, k)
        assert got_correct.tolist() == correct and got_tokens.tolist() == cost, k
    with pytest.raises(ValueError, match="k"):
        self_consistency(task, problems, answers, 5)


def test_summary_per_level():
    problems = [Problem("a", "", "", 1), Problem("b", "", "", 3), Problem("c", "", "", 3)]
    figures = summarize(problems, np.array([1.0, 0.0, 1.0]), np.array([False, True, True]), np.array([4.0, 8.0, 12.0]),
                        regular_tokens=4.0)
    assert figures["accuracy"] == pytest.approx(2 / 3) and figures["cost_vs_regular"] == pytest.approx(2.0)
    assert figures["levels"]["3"] == {"accuracy": 0.5, "extended_share": 1.0, "tokens_per_problem": 10.0}
