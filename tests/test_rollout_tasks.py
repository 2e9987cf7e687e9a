"""Tasks and the grader of ibpo_fast.rollout."""
import json
import random

import numpy as np
import pytest

from ibpo_fast.rollout.formats import TRIAL_CLOSE, TRIAL_OPEN, demonstration, parse
from ibpo_fast.rollout.grader import Grader
from ibpo_fast.rollout.tasks import (ARITHMETIC_LEVELS, READINGS, ArithmeticTask, JsonlMathTask, Problem, ReasoningGymTask,
                                     math_equal, readings)


def test_arithmetic_deterministic_and_split():
    task = ArithmeticTask(levels=(1, 2, 3, 4))
    a, b = task.problems("train", 50, seed=3), task.problems("train", 50, seed=3)
    assert a == b and a != task.problems("train", 50, seed=4) and a != task.problems("test", 50, seed=3)
    assert {p.level for p in a} == {1, 2, 3, 4} and len({p.uid for p in a}) == 50
    for p in a:
        copies, modulus = readings(p.text)
        assert len(copies) == READINGS and all(len(c) == ARITHMETIC_LEVELS[p.level].num_terms for c in copies)
        assert all(t in range(10) for t in copies[0]) and all(t in (0, 1) for c in copies for t in c[1:])
        # a reading differs from the truth in at most one flipped increment: its sum is off by at most 1
        assert all((sum(c) - int(p.answer)) % int(modulus) in (0, 1, 9) for c in copies)
        assert task.is_correct(p, f" {p.answer} ") and not task.is_correct(p, None)
        assert not task.is_correct(p, p.answer + "1")


def test_arithmetic_noisy_problems_have_the_level_share_and_count_of_wrong_readings():
    task = ArithmeticTask(levels=(1, 2, 3, 4))
    wrong = {level: [] for level in ARITHMETIC_LEVELS}
    for p in task.problems("train", 4000, seed=0):
        wrong[p.level].append(sum(str(sum(c) % 10) != p.answer for c in readings(p.text)[0]))
    for level, counts in wrong.items():
        spec = ARITHMETIC_LEVELS[level]
        assert set(counts) <= {0, spec.wrong_readings} and spec.wrong_readings < READINGS / 2, level
        noisy = np.mean(np.array(counts) > 0) if spec.wrong_readings else 0.0
        assert abs(noisy - spec.noisy_share) < 0.03, level


def test_arithmetic_readings_share_the_start_digit_and_a_wrong_one_is_off_by_one():
    """The readings are copies of one sum: the start digit first, the increments shuffled (so no order lets
    one attempt take a per-position majority), and a wrong one has one increment flipped."""
    problems = ArithmeticTask(levels=(3,)).problems("train", 300, seed=1)
    orders_differ = []
    for p in problems:
        copies = readings(p.text)[0]
        assert len({c[0] for c in copies}) == 1
        sums = [sum(c) % 10 for c in copies]
        assert sums.count(int(p.answer)) == READINGS - ARITHMETIC_LEVELS[3].wrong_readings
        assert all((s - int(p.answer)) % 10 in (0, 1, 9) for s in sums)
        orders_differ.append(len({tuple(c[1:]) for c in copies}) > 1)
    assert np.mean(orders_differ) > 0.9


def test_arithmetic_views_show_the_same_readings_in_fresh_orders():
    """A view is the problem as one sample sees it: the same readings (so the same answer, the same wrong
    ones), renumbered in an order drawn from the seed."""
    task = ArithmeticTask(levels=(3,))
    problem = task.problems("train", 1, seed=0)[0]
    views = [task.view(problem, seed) for seed in range(40)]
    assert task.view(problem, 7) == views[7]  # seeded
    assert len({v.text for v in views}) > 1
    for v in views:
        assert (v.uid, v.answer, v.level) == (problem.uid, problem.answer, problem.level)
        assert sorted(readings(v.text)[0]) == sorted(readings(problem.text)[0]) and readings(v.text)[1] == 10
    # the reading shown first is any of them (positions, not readings, are what a model can prefer)
    firsts = {tuple(readings(v.text)[0][0]) for v in views}
    assert firsts == {tuple(r) for r in readings(problem.text)[0]}
    single = Problem("u", "3+5+7%10", "5", 1)
    assert task.view(single, 3) == single


def test_arithmetic_bad_arguments():
    with pytest.raises(ValueError, match="levels"):
        ArithmeticTask(levels=(5,))
    with pytest.raises(ValueError, match="split"):
        ArithmeticTask().problems("val", 1, 0)
    with pytest.raises(ValueError, match="n must"):
        ArithmeticTask().problems("train", -1, 0)


def test_jsonl_task(tmp_path):
    rows = [{"problem": f"p{i}", "answer": "\\frac{1}{2}" if i % 2 else str(i)} for i in range(40)]
    rows[3]["level"] = 2
    path = tmp_path / "math.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    task = JsonlMathTask(path, test_fraction=0.25)
    train, test = task.problems("train", 5, seed=1), task.problems("test", 2, seed=1)
    assert train == task.problems("train", 5, seed=1) and not {p.text for p in train} & {p.text for p in test}
    every = task.problems("train", task.size("train"), 0) + task.problems("test", task.size("test"), 0)
    assert len(every) == 40 and {p.level for p in every} == {0, 2}
    half = next(p for p in every if p.answer == "\\frac{1}{2}")
    assert task.is_correct(half, "0.5") and task.is_correct(half, "1/2") and not task.is_correct(half, "2")
    with pytest.raises(ValueError, match="n="):
        task.problems("test", 1000, 0)
    with pytest.raises(ValueError, match="path"):
        JsonlMathTask(tmp_path / "missing.jsonl")


def test_tasks_without_presentations_view_a_problem_as_itself(tmp_path):
    (tmp_path / "m.jsonl").write_text(json.dumps({"problem": "#1:1+1 #2:1+0 %10", "answer": "2"}))
    task = JsonlMathTask(tmp_path / "m.jsonl", test_fraction=0.0)
    problem = task.problems("train", 1, seed=0)[0]
    assert task.view(problem, 5) is problem


def test_math_equal_survives_garbage():
    assert math_equal("3", "3") and not math_equal("3", "\\frac{{}}}")


def test_reasoning_gym_task():
    pytest.importorskip("reasoning_gym", reason="reasoning-gym not installed: ReasoningGymTask untested")
    task = ReasoningGymTask("basic_arithmetic")
    problems = task.problems("train", 4, seed=0)
    assert problems == task.problems("train", 4, seed=0) and problems != task.problems("test", 4, seed=0)
    assert all(task.is_correct(p, p.answer) and not task.is_correct(p, None) for p in problems)


def test_grader_scores_demonstrations():
    task = ArithmeticTask(levels=(1, 2, 3, 4))
    problems = task.problems("train", 30, seed=0)
    texts = [demonstration(p, "asv") for p in problems]
    texts[0] = "\\boxed{-1}"
    scores = Grader(task).score(problems, texts)
    assert scores.reward.dtype == np.float32 and scores.num_trials.dtype == np.int64
    expected = [float(parse(t).final_answer == p.answer) for p, t in zip(problems, texts)]
    assert scores.reward.tolist() == expected and expected[0] == 0.0 and sum(expected) >= 20
    assert scores.well_formed.all() and len(scores) == 30
    with pytest.raises(ValueError, match="response_texts"):
        Grader(task).score(problems, texts[:-1])


@pytest.mark.parametrize("task", [ArithmeticTask(), "jsonl"])
def test_grader_never_raises_on_garbage(task, tmp_path):
    if task == "jsonl":
        (tmp_path / "m.jsonl").write_text(json.dumps({"problem": "x", "answer": "\\sqrt{2}"}))
        task = JsonlMathTask(tmp_path / "m.jsonl", test_fraction=0.0)
    rng = random.Random(0)
    alphabet = list("0123456789+-=.,{}\\^_ ab\n") + ["\\boxed{", TRIAL_OPEN, TRIAL_CLOSE, "\\frac", "\\sqrt{"]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))) for _ in range(300)]
    problems = [Problem("u", "x", "\\sqrt{2}" if isinstance(task, JsonlMathTask) else "12", 0)] * len(texts)
    scores = Grader(task).score(problems, texts)
    assert set(scores.reward.tolist()) <= {0.0, 1.0} and (scores.num_trials >= 0).all()
