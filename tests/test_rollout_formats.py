"""Parser, voter and demonstrations of ibpo_fast.rollout.formats."""

import numpy as np
import pytest

from ibpo_fast.rollout.formats import (FORMATS, HARD_LEVEL, MAX_TRIALS, TRIAL_CLOSE as C, TRIAL_OPEN as O, demonstration,
                                       last_boxed, majority, parse, prompt_text, vote, VOTE_TRIALS)
from ibpo_fast.rollout.tasks import ARITHMETIC_LEVELS, READINGS, ArithmeticTask, Problem, readings


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
    assert p.final_answer is None and not p.well_formed  # the cut trial abstains: 5 against 6 is a tie
    assert parse(trial(5) + trial(6) + trial(5) + f"{O}1+1=2 \\boxed{{5}}").final_answer == "5"


def test_unbalanced_markers_never_crash():
    for text in [O, O + O, C + O, O + C + C, f"{O}\\boxed{{1}}{O}\\boxed{{2}}{C}", f"{C}{C}\\boxed{{3}}"]:
        p = parse(text)
        assert not p.well_formed
    assert parse(f"{O}\\boxed{{1}}{O}\\boxed{{2}}{C}").trial_answers == [None, "2"]


def test_votes_only_count_the_first_eight_trials():
    p = parse("".join(trial(i) for i in [1] + list(range(1, MAX_TRIALS))) + trial(0) * 3)  # counted, 0 would win
    assert p.num_trials == MAX_TRIALS + 3 and p.final_answer == "1" and not p.well_formed


def test_vote_rules():
    assert vote([]) is None and vote([None, None]) is None
    assert vote(["1", "2", "2", "1"]) is None and majority(["1", "2", "2", "1"]) == "1"  # a tie decides nothing
    assert vote(["1", "2"]) is None and vote(["1", "2", "3"]) is None and vote(["1", None, "1", "2"]) == "1"
    assert vote(["1", "2", "2", "1", "1", "2", "2"]) == "1"  # 1 reaches three first
    assert vote([None, "3", "4", "4"]) == "4"
    assert vote(["1 2", "12", "3"]) == "1 2"  # whitespace-insensitive


def test_prompt_text():
    problem = Problem("u", "1+2", "3", 1)
    assert len({prompt_text(problem, fmt) for fmt in FORMATS}) == 3
    assert all("1+2" in prompt_text(problem, fmt, verbose=True) for fmt in FORMATS)
    with pytest.raises(ValueError, match="fmt"):
        prompt_text(problem, "cot")


def _reading_sums(problem):
    copies, modulus = readings(problem.text)
    return [str(sum(c) % modulus) for c in copies]


@pytest.mark.parametrize("level", sorted(ARITHMETIC_LEVELS))
@pytest.mark.parametrize("fmt", FORMATS)
def test_demonstrations_round_trip(level, fmt):
    """Every demonstrated attempt computes its reading exactly: one attempt answers what its reading sums to,
    the attempts of a vote read the readings in turn."""
    for problem in ArithmeticTask(levels=(level,)).problems("train", 40, seed=level):
        parsed = parse(demonstration(problem, fmt))
        sums = _reading_sums(problem)
        assert parsed.well_formed
        voting = fmt == "sv" or (fmt == "asv" and level >= HARD_LEVEL)
        if voting:
            assert parsed.trial_answers == sums[:VOTE_TRIALS] and parsed.final_answer == vote(sums)
        else:
            assert parsed.num_trials == 0 and parsed.final_answer in sums
        if ARITHMETIC_LEVELS[level].noisy_share == 0:
            assert parsed.final_answer == problem.answer


@pytest.mark.parametrize("num_trials", range(1, MAX_TRIALS + 1))
def test_demonstration_trial_count(num_trials):
    for problem in ArithmeticTask(levels=(1, 4)).problems("test", 20, seed=0):
        parsed = parse(demonstration(problem, "sv", num_trials=num_trials))
        sums = _reading_sums(problem)
        assert parsed.num_trials == num_trials and parsed.well_formed
        assert parsed.trial_answers == [sums[i % len(sums)] for i in range(num_trials)]


def test_demonstration_has_real_steps():
    problem = Problem("u", "3+5+7+2%10", "7", 2)
    assert demonstration(problem, "regular") == "3+5=8+7=5+2=7 \\boxed{7}"
    assert demonstration(Problem("u", "3+5+7", "15", 2), "regular") == "3+5=8+7=15 \\boxed{15}"
    # One reading: voting attempt i starts from term i and goes around, so no two share their steps.
    assert demonstration(problem, "sv") == "".join(
        f"{O}{steps} \\boxed{{7}}{C}" for steps in ("3+5=8+7=5+2=7", "5+7=2+2=4+3=7", "7+2=9+3=2+5=7"))
    text = demonstration(Problem("u", "47+85", "132", 2), "regular")
    assert text == "7+5=12,4+8+1=13 \\boxed{132}"
    # Several readings: an attempt copies the reading it sums; a vote reads them in turn.
    noisy = Problem("u", "#1:3+1+0 #2:3+1+1 #3:3+1+0 %10", "4", 3)
    assert demonstration(noisy, "sv", num_trials=3) == (
        f"{O}#1:3+1+0 3+1=4+0=4 \\boxed{{4}}{C}{O}#2:3+1+1 3+1=4+1=5 \\boxed{{5}}{C}"
        f"{O}#3:3+1+0 3+1=4+0=4 \\boxed{{4}}{C}")
    assert demonstration(noisy, "regular") == "#1:3+1+0 3+1=4+0=4 \\boxed{4}"  # the first reading: views vary it


def test_demonstration_generic_problem_and_errors():
    problem = Problem("u", "What is x if 2x=1?", "\\frac{1}{2}", 0)
    assert parse(demonstration(problem, "sv", num_trials=3)).final_answer == "\\frac{1}{2}"
    assert readings(problem.text) is None and readings("#1:1+2 #2:3+4 %7") == ([[1, 2], [3, 4]], 7)
    assert readings("#1:1+2 #3:3+4 %7") is None and readings("3+4") == ([[3, 4]], None)
    with pytest.raises(ValueError, match="num_trials"):
        demonstration(Problem("u", "1+2", "3", 1), "sv", num_trials=9)


def test_last_boxed_nested():
    assert last_boxed("\\boxed{{a}{b}}") == "{a}{b}" and last_boxed("x") is None


@pytest.mark.parametrize("level", [1, 2, 3])
def test_a_vote_over_the_readings_gains_what_the_wrong_readings_cost(level):
    """One demonstrated attempt is as right as its reading; the vote over all readings is always right (the
    wrong readings are a minority), so it gains wrong_readings / READINGS on the noisy share of a level."""
    problems = ArithmeticTask(levels=(level,)).problems("train", 2000, seed=0)
    single = np.mean([parse(demonstration(p, "regular")).final_answer == p.answer for p in problems])
    voted = np.mean([parse(demonstration(p, "sv")).final_answer == p.answer for p in problems])
    spec = ARITHMETIC_LEVELS[level]
    assert voted == 1.0
    assert abs(single - (1 - spec.noisy_share * spec.wrong_readings / READINGS)) < 0.03


def test_majority_is_the_plurality_and_vote_stops_at_consensus():
    assert majority(["1", "2", "2", None, "1 "]) == "1"  # tie between 1 and 2: the first seen
    assert majority(["3", "4", "4"]) == "4" and majority([None, None]) is None
    answers = ["a", "a", "b", "a", "b", "b", "b", "b"]
    assert vote(answers) == "a" and majority(answers) == "b"  # a reaches three first
