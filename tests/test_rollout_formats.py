"""Parser, voter and demonstrations of ibpo_fast.rollout.formats."""
import random

import numpy as np
import pytest

from ibpo_fast.rollout.formats import (FORMATS, HARD_LEVEL, MAX_TRIALS, TRIAL_CLOSE as C, TRIAL_OPEN as O, demonstration,
                                       last_boxed, majority, parse, prompt_text, vote, VOTE_TRIALS)
from ibpo_fast.rollout.tasks import ARITHMETIC_LEVELS, ArithmeticTask, Problem


def trial(answer):
    return f"{O}1+1=2 \\boxed{{{answer}}}{C}"


def test_regular_well_formed():
    p = parse("3+4=7 \\boxed{7}")
    assert (p.trial_answers, p.num_trials, p.final_answer, p.well_formed) == ([], 0, "7", True)


def test_regular_takes_last_balanced_box():
    assert parse("\\boxed{1} then \\boxed{\\frac{1}{2}}").final_answer == "\\frac{1}{2}"
    assert parse("\\boxed{5} and cut \\boxed{1").final_answer == "5"


@pytest.mark.parametrize("text", ["", "garbage", "\\boxed{", "\\boxed{}", "\\boxed{ }", C, "}{\\boxed"])
def test_no_answer_is_none(text):
    p = parse(text)
    assert p.final_answer is None and not p.well_formed and p.num_trials == 0


def test_consensus_at_three_stops():
    p = parse(trial(5) + trial(4) + trial(5) + trial(5))
    assert p.num_trials == 4 and p.final_answer == "5" and p.well_formed


def test_trials_after_consensus_are_cost_and_keep_the_vote():
    p = parse(trial(5) * 3 + trial(6) * 2)
    assert p.final_answer == "5" and p.well_formed and p.num_trials == 5


def test_truncated_trial_has_no_answer():
    p = parse(trial(5) + trial(6) + f"{O}1+1=2 \\boxed{{5}}")
    assert p.trial_answers == ["5", "6", None] and p.num_trials == 3
    assert p.final_answer == "5" and not p.well_formed  # tie 5/6 goes to the earlier


def test_unbalanced_markers_never_crash():
    for text in [O, O + O, C + O, O + C + C, f"{O}\\boxed{{1}}{O}\\boxed{{2}}{C}", f"{C}{C}\\boxed{{3}}"]:
        p = parse(text)
        assert not p.well_formed
    assert parse(f"{O}\\boxed{{1}}{O}\\boxed{{2}}{C}").trial_answers == [None, "2"]


def test_votes_only_count_the_first_eight_trials():
    p = parse("".join(trial(i) for i in range(MAX_TRIALS)) + trial(0) * 3)
    assert p.num_trials == MAX_TRIALS + 3 and p.final_answer == "0" and not p.well_formed


def test_vote_rules():
    assert vote([]) is None and vote([None, None]) is None
    assert vote(["1", "2", "2", "1"]) == "1"  # tie -> earliest
    assert vote(["1", "2", "2", "1", "1", "2", "2"]) == "1"  # 1 reaches three first
    assert vote([None, "3", "4", "4"]) == "4"
    assert vote(["1 2", "12", "3"]) == "1 2"  # whitespace-insensitive


def test_prompt_text():
    problem = Problem("u", "1+2", "3", 1)
    assert len({prompt_text(problem, fmt) for fmt in FORMATS}) == 3
    assert all("1+2" in prompt_text(problem, fmt, verbose=True) for fmt in FORMATS)
    with pytest.raises(ValueError, match="fmt"):
        prompt_text(problem, "cot")


@pytest.mark.parametrize("level", sorted(ARITHMETIC_LEVELS))
@pytest.mark.parametrize("fmt", FORMATS)
def test_demonstrations_round_trip(level, fmt):
    rng = random.Random(level)
    for problem in ArithmeticTask(levels=(level,)).problems("train", 40, seed=level):
        parsed = parse(demonstration(problem, fmt, rng))
        assert parsed.final_answer == problem.answer and parsed.well_formed
        voting = fmt == "sv" or (fmt == "asv" and level >= HARD_LEVEL)
        assert (parsed.num_trials >= 3) if voting else (parsed.num_trials == 0)


@pytest.mark.parametrize("num_trials", range(1, MAX_TRIALS + 1))
def test_demonstration_trial_count(num_trials):
    rng = random.Random(num_trials)
    for problem in ArithmeticTask(levels=(1, 4)).problems("test", 20, seed=0):
        parsed = parse(demonstration(problem, "sv", rng, num_trials=num_trials))
        assert parsed.num_trials == num_trials and parsed.final_answer == problem.answer and parsed.well_formed


def test_demonstration_has_real_steps():
    problem = Problem("u", "3+5+7+2%10", "7", 2)
    assert demonstration(problem, "regular", random.Random(0)) == "3+5=8+7=5+2=7 \\boxed{7}"
    assert demonstration(Problem("u", "3+5+7", "15", 2), "regular", random.Random(0)) == "3+5=8+7=15 \\boxed{15}"
    # Voting attempt i starts from term i and goes around: no two attempts share their steps.
    assert demonstration(problem, "sv", random.Random(0)) == "".join(
        f"{O}{steps} \\boxed{{7}}{C}" for steps in ("3+5=8+7=5+2=7", "5+7=2+2=4+3=7", "7+2=9+3=2+5=7",
                                                      "2+3=5+5=0+7=7", "3+5=8+7=5+2=7"))
    text = demonstration(Problem("u", "47+85", "132", 2), "regular", random.Random(0))
    assert text == "7+5=12,4+8+1=13 \\boxed{132}"


def test_demonstrations_without_noise_are_right_in_every_attempt():
    rng = random.Random(0)
    for problem in ArithmeticTask(levels=tuple(ARITHMETIC_LEVELS)).problems("train", 200, seed=0):
        assert parse(demonstration(problem, "sv", rng)).trial_answers == [problem.answer] * VOTE_TRIALS
        assert parse(demonstration(problem, "sv", rng, num_trials=2)).trial_answers == [problem.answer] * 2
        assert parse(demonstration(problem, "regular", rng)).final_answer == problem.answer


def test_demonstration_generic_problem_and_errors():
    problem = Problem("u", "What is x if 2x=1?", "\\frac{1}{2}", 0)
    assert parse(demonstration(problem, "sv", random.Random(0), num_trials=3)).final_answer == "\\frac{1}{2}"
    with pytest.raises(ValueError, match="problem"):  # slips need steps to slip in
        demonstration(problem, "sv", random.Random(0), error_rate=0.99)
    with pytest.raises(ValueError, match="num_trials"):
        demonstration(Problem("u", "1+2", "3", 1), "sv", random.Random(0), num_trials=9)


def test_last_boxed_nested():
    assert last_boxed("\\boxed{{a}{b}}") == "{a}{b}" and last_boxed("x") is None


def test_demonstrated_attempts_slip_at_the_error_rate_independently():
    problem = Problem("u", "3+1+0+1+1+0+1+1%10", "8", 3)
    rng = random.Random(0)
    regular = [parse(demonstration(problem, "regular", rng, error_rate=0.4)).final_answer for _ in range(2000)]
    votes = [parse(demonstration(problem, "sv", rng, error_rate=0.4)) for _ in range(2000)]
    attempts = [a for v in votes for a in v.trial_answers]
    assert all(v.num_trials == VOTE_TRIALS and v.well_formed for v in votes)
    assert abs(np.mean([a == "8" for a in regular]) - 0.6) < 0.03 and abs(np.mean([a == "8" for a in attempts]) - 0.6) < 0.02
    assert len({a for a in attempts if a != "8"}) == 5  # slips of -2..+3: the wrong answers spread out
    assert np.mean([v.final_answer == "8" for v in votes]) > 0.8  # the vote corrects most slips (0.84)
    assert demonstration(problem, "sv", random.Random(0)) == demonstration(problem, "sv", random.Random(0), error_rate=0.0)
    with pytest.raises(ValueError, match="error_rate"):
        demonstration(problem, "sv", rng, error_rate=1.0)


def test_majority_is_the_plurality_and_vote_stops_at_consensus():
    assert majority(["1", "2", "2", None, "1 "]) == "1"  # tie between 1 and 2: the first seen
    assert majority(["3", "4", "4"]) == "4" and majority([None, None]) is None
    answers = ["a", "a", "b", "a", "b", "b", "b", "b"]
    assert vote(answers) == "a" and majority(answers) == "b"  # a reaches three first
