"""Tasks: where problems come from and how an answer is checked, behind one small interface.

- `ArithmeticTask`: procedural running sums mod 10 with difficulty levels, no dependency. It is the task
  of the tiny embedded default (a ~0.14M-parameter char-level model trained from scratch on a CPU in
  minutes), so problems and chains of thought are very short; harder levels are longer chains of the
  same step, so one attempt slips more often and a vote over attempts helps.
- `ReasoningGymTask`: any procedural dataset of `reasoning_gym` (optional extra `tasks`).
- `JsonlMathTask`: `{"problem", "answer"[, "level"]}` lines graded with math-verify.
"""
from __future__ import annotations

import json
import random
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ibpo_fast.errors import InputError

SPLITS = ("train", "test")


@dataclass(frozen=True)
class Problem:
    uid: str  # unique within one `problems()` list
    text: str  # the problem statement, without any format instruction
    answer: str  # the reference answer
    level: int  # difficulty; 0 when unknown


class Task(Protocol):
    def problems(self, split: str, n: int, seed: int) -> list[Problem]:
        """n problems of `split`; the same arguments always give the same list."""

    def is_correct(self, problem: Problem, answer: str | None) -> bool:
        """Whether `answer` (a final answer extracted from a response; None = none) solves `problem`."""

    def view(self, problem: Problem, seed: int) -> Problem:
        """`problem` as one sample is shown it (the same uid, answer and level): a fresh presentation per
        sample where the task has several (`ArithmeticTask`), else the problem itself."""


def _check_request(split: str, n: int) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")


def normalize_answer(answer: str) -> str:
    """Loose string form for comparing answers: no whitespace, no thousands commas, no trailing dot."""
    return re.sub(r"\s+|,", "", answer).rstrip(".").lower()


@dataclass(frozen=True)
class ArithmeticLevel:
    num_terms: int  # terms of a reading: a start digit and num_terms - 1 increments from STEP_TERMS
    wrong_readings: int  # readings with one increment flipped, in a problem of this level that has noise
    noisy_share: float  # share of the level's problems that have noise


# A problem is a start digit plus increments from `STEP_TERMS`; the answer is the sum mod `MODULUS`. It is
# shown as `READINGS` numbered readings of its terms: the start digit first, the increments shuffled, and in
# a noisy problem `wrong_readings` of the readings with one increment flipped (0 <-> 1), so they sum to the
# answer +- 1. "#1:3+1+1+0 #2:3+0+0+1 #3:3+1+0+0 %10" (answer 4) has one wrong reading, #1. One attempt
# copies and sums one reading ("#1:3+1+1+0 3+1=4+1=5+0=5 \\boxed{5}"), so it is as right as that reading; a
# vote sums every reading once, and with the wrong readings a minority its plurality is always right. So
# voting gains wrong_readings / READINGS on a noisy problem and nothing on a clean one: level 3 (one of three
# readings wrong in every problem) gains 1/3 everywhere, levels 1 and 2 (shorter and longer chains, no
# wrong reading) nothing. That is the error one attempt cannot train away while independent attempts vote
# it right (DESIGN §1), and the per-problem gains make difficulty what the budget buys; level 2 checks that
# the policy learns which problems a vote helps, not to vote on longer ones. Every sample sees
# the readings in a fresh order (`ArithmeticTask.view`), so which reading one attempt copies is a property
# of the sample, not of the problem. Why each part, measured on the tiny model (warm-up, then RL):
# - noise drawn per reading made voting pay on level 2 about as often as on level 3 (some level-3 problems
#   had every reading right, others a wrong majority), and the budget went to both alike;
# - five readings (two wrong on level 3) were voted right by one warm-up seed in 0.5-0.67 of level-3
#   problems, below one attempt; with three, the forced vote is right in 0.94-1.00 after the warm-up
#   (seeds 0, 1; one attempt 0.60-0.63 against the 0.67 a reading allows);
# - readings with their own start digits (only the sum shared) were copied unreliably: one attempt that
#   picked a reading by its number copied it right in 4-38% of answers, and RL degraded the votes
#   (level 3: 0.86 -> 0.70);
# - readings in one order gave a per-position majority (one answer 0.64 -> 0.83 right under RL, above the
#   0.70 one reading allowed), hence the shuffled increments;
# - what capacity alone gives is not an error per attempt: chains of 0/1 increments are learned to ~10
#   terms, and near that length the outcome depends on the seed; slips demonstrated inside attempts were
#   unlearned by RL (level 3: 0.59 to 0.98 right in one attempt); digit increments (wrong answers spread
#   over 9 values) were not learned in the warm-up (copies of 4-term readings 3% right, one-digit sums 16%);
# - noise on 30% of level 2 (one reading wrong, the previous task) drew a fifth of the q = 0.25 budget
#   there: such a prompt gains as much from a vote as a level-3 one, and the policy cannot tell it from a
#   clean one, so it voted on 0.18 of level 2 and the allocation gain stopped at +0.030 (+0.045 with a
#   clean level 2 and the preset's falling warm-up lr; 3 seeds, benchmarks/README.md); noise on 15% did not
#   move the policy either;
# - votes of 5 attempts over readings of 6 terms failed (later attempts copy worse: right copies 0.94 to
#   0.20 from the first attempt to the fifth), so the readings are short.
ARITHMETIC_LEVELS: dict[int, ArithmeticLevel] = {
    1: ArithmeticLevel(2, 0, 0.0), 2: ArithmeticLevel(3, 0, 0.0), 3: ArithmeticLevel(4, 1, 1.0),
    4: ArithmeticLevel(6, 1, 1.0)}
MODULUS = 10
STEP_TERMS = (0, 1)
READINGS = 3


_SUM = r"\d+(?:\+\d+)+"


def readings(text: str) -> tuple[list[list[int]], int | None] | None:
    """The readings of a sum problem as operand lists, and its modulus: "3+5+7%10" has one reading;
    "#1:7+1+0 #2:7+1+1 %10" two, numbered from 1. None for a problem that is not a sum."""
    single = re.fullmatch(rf"({_SUM})(?:%(\d+))?", text)
    if single:
        return [[int(x) for x in single[1].split("+")]], int(single[2]) if single[2] else None
    several = re.fullmatch(rf"((?:#\d+:{_SUM} )+)%(\d+)", text)
    if not several:
        return None
    parts = several[1].split()
    if [part.split(":")[0] for part in parts] != [f"#{k}" for k in range(1, len(parts) + 1)]:
        return None
    return [[int(x) for x in part.split(":")[1].split("+")] for part in parts], int(several[2])


def _readings_text(shown: list[list[int]], modulus: int) -> str:
    return "".join(f"#{k}:{'+'.join(map(str, reading))} " for k, reading in enumerate(shown, 1)) + f"%{modulus}"


def _reading(terms: list[int], wrong: bool, rng: random.Random) -> list[int]:
    """One reading of `terms`: one increment flipped when `wrong`, then the increments shuffled."""
    increments = terms[1:]
    if wrong:
        flipped = rng.randrange(len(increments))
        increments[flipped] = 1 - increments[flipped]
    rng.shuffle(increments)
    return [terms[0], *increments]


class ArithmeticTask:
    """Running sums mod 10 shown as readings, some wrong (see `ARITHMETIC_LEVELS`), e.g. level 3:
    "#1:9+1+1+0 #2:9+0+1+0 #3:9+1+1+0 %10" (answer "1", reading 2 wrong). Train and test draw from separate
    random streams (level 1 has few distinct problems, so the two splits overlap there)."""

    def __init__(self, levels: tuple[int, ...] = (1, 2, 3)):
        if not levels or any(level not in ARITHMETIC_LEVELS for level in levels):
            raise ValueError(f"levels must be a non-empty subset of {tuple(ARITHMETIC_LEVELS)}, got {levels!r}")
        self.levels = tuple(levels)

    def problems(self, split: str, n: int, seed: int) -> list[Problem]:
        _check_request(split, n)
        rng = random.Random(f"arithmetic/{split}/{seed}")  # str seeds are hashed stably across runs
        out = []
        for i in range(n):
            level = rng.choice(self.levels)
            spec = ARITHMETIC_LEVELS[level]
            terms = [rng.randrange(MODULUS)] + [rng.choice(STEP_TERMS) for _ in range(spec.num_terms - 1)]
            noisy = rng.random() < spec.noisy_share
            wrong = set(rng.sample(range(READINGS), spec.wrong_readings)) if noisy else set()
            shown = [_reading(terms, k in wrong, rng) for k in range(READINGS)]
            out.append(Problem(f"arith/{split}/{seed}/{i}", _readings_text(shown, MODULUS), str(sum(terms) % MODULUS),
                               level))
        return out

    def is_correct(self, problem: Problem, answer: str | None) -> bool:
        return answer is not None and normalize_answer(answer) == normalize_answer(problem.answer)

    def view(self, problem: Problem, seed: int) -> Problem:
        """The readings in a fresh order, renumbered. One attempt copies one reading and the tiny model
        prefers some positions (measured on a five-reading version of the task after RL at q = 0: 35 of 64
        level-3 answers read #3): with the problem's one order, whether its single answer is right became a
        property of the problem (the preferred reading right or wrong: per-problem success near 0 or 1), so
        the per-problem group values asked for a vote only where the preferred reading was wrong. A fresh order per sample makes one
        attempt's error a property of the sample, as a real model's chain of thought is right with some
        probability per sample (measured on the same model: per-problem success of 16 answers, problems at
        >= 0.95: 6 of 48 in one order, 0 of 48 in fresh orders)."""
        parsed = readings(problem.text)
        if parsed is None or len(parsed[0]) < 2:
            return problem
        shown, modulus = parsed
        random.Random(seed).shuffle(shown)
        return Problem(problem.uid, _readings_text(shown, modulus), problem.answer, problem.level)


class ReasoningGymTask:
    """A `reasoning_gym` dataset by name (extra keyword arguments go to its config). The level is the
    entry's `difficulty` metadata when it is an int, else 0; scoring uses the dataset's own checker."""

    def __init__(self, name: str, **config):
        try:
            import reasoning_gym
        except ImportError as e:
            raise ImportError(
                "ReasoningGymTask needs reasoning_gym: pip install 'ibpo_fast[tasks]' (reasoning-gym)"
            ) from e
        self._rg = reasoning_gym
        self.name = name
        self.config = config
        self._entries: dict[str, tuple[object, dict]] = {}  # uid -> (dataset, entry), for scoring

    def problems(self, split: str, n: int, seed: int) -> list[Problem]:
        _check_request(split, n)
        if n == 0:
            return []
        # Distinct seeds per split so test problems are not the train problems.
        split_seed = seed * len(SPLITS) + SPLITS.index(split)
        dataset = self._rg.create_dataset(self.name, size=n, seed=split_seed, **self.config)
        out = []
        for i in range(n):
            entry = dataset[i]
            uid = f"{self.name}/{split}/{seed}/{i}"
            difficulty = entry.get("metadata", {}).get("difficulty")
            level = difficulty if isinstance(difficulty, int) else 0
            self._entries[uid] = (dataset, entry)
            out.append(Problem(uid, entry["question"], str(entry["answer"]), level))
        return out

    def is_correct(self, problem: Problem, answer: str | None) -> bool:
        if answer is None:
            return False
        if problem.uid not in self._entries:  # a problem this instance did not make
            return normalize_answer(answer) == normalize_answer(problem.answer)
        dataset, entry = self._entries[problem.uid]
        try:
            return dataset.score_answer(answer, entry) >= 1.0
        except Exception:  # noqa: BLE001 - third-party checkers on arbitrary model text; wrong, not fatal
            return False

    def view(self, problem: Problem, seed: int) -> Problem:
        return problem


class JsonlMathTask:
    """Problems from a JSONL file of `{"problem", "answer"[, "level"][, "id"]}` lines. A fixed hash of
    the problem text puts each line in train or test (`test_fraction` of them in test), so the split
    does not depend on the file order. Answers are checked with math-verify when installed."""

    def __init__(self, path: str | Path, *, test_fraction: float = 0.1):
        if not 0.0 <= test_fraction <= 1.0:
            raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
        path = Path(path)
        if not path.is_file():
            raise InputError(f"path: no such file {str(path)!r}")
        self._splits: dict[str, list[Problem]] = {split: [] for split in SPLITS}
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                problem = _jsonl_problem(line, f"{path}:{line_no}", default_id=f"{path.stem}/{line_no}")
                in_test = zlib.crc32(problem.text.encode()) / 2**32 < test_fraction
                self._splits["test" if in_test else "train"].append(problem)
        if not any(self._splits.values()):
            raise InputError(f"{path}: no problems in the file")

    def size(self, split: str) -> int:
        """Number of problems in `split`."""
        _check_request(split, 0)
        return len(self._splits[split])

    def problems(self, split: str, n: int, seed: int) -> list[Problem]:
        _check_request(split, n)
        pool = self._splits[split]
        if n > len(pool):
            raise ValueError(f"n={n} exceeds the {len(pool)} problems of split {split!r}")
        return random.Random(seed).sample(pool, n)

    def is_correct(self, problem: Problem, answer: str | None) -> bool:
        return answer is not None and math_equal(problem.answer, answer)

    def view(self, problem: Problem, seed: int) -> Problem:
        return problem


def _jsonl_problem(line: str, where: str, default_id: str) -> Problem:
    """One JSONL line as a Problem; InputError naming the file and line (`where`) otherwise."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(row, dict) or "problem" not in row or "answer" not in row:
        raise InputError(f"{where}: expected an object with 'problem' and 'answer', got {line.strip()[:60]!r}")
    try:
        level = int(row.get("level", 0))
    except (TypeError, ValueError):
        raise InputError(f"{where}: 'level' must be an integer, got {row['level']!r}") from None
    return Problem(str(row.get("id", default_id)), str(row["problem"]), str(row["answer"]), level)


def make_task(spec: str, levels=(1, 2, 3)) -> Task:
    """The task a config names: "arithmetic" (with `levels`), "jsonl:PATH" or "reasoning_gym:NAME". Any
    problem with the spec or its file is the user's: InputError."""
    kind, _, arg = spec.partition(":")
    try:
        if kind == "arithmetic" and not arg:
            return ArithmeticTask(levels=tuple(levels))
        if kind == "jsonl" and arg:
            return JsonlMathTask(arg)
        if kind == "reasoning_gym" and arg:
            return ReasoningGymTask(arg)
    except InputError:
        raise
    except ValueError as e:
        raise InputError(f"task {spec!r}: {e}") from None
    raise InputError(f"task must be 'arithmetic', 'jsonl:PATH' or 'reasoning_gym:NAME', got {spec!r}")


def math_equal(reference: str, answer: str) -> bool:
    """math-verify equivalence (e.g. 1/2 == 0.5), else normalised string equality. Model output can be
    anything, so any failure inside the checker counts as wrong rather than stopping training."""
    try:
        from math_verify import parse, verify
    except ImportError:
        return normalize_answer(reference) == normalize_answer(answer)
    try:
        gold, pred = parse(f"${reference}$"), parse(f"\\boxed{{{answer}}}")
        if gold and pred:
            return bool(verify(gold, pred))
    except Exception:  # noqa: BLE001 - sympy/parser errors on arbitrary model text
        return False
    return normalize_answer(reference) == normalize_answer(answer)
