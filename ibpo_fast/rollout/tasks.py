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
    num_terms: int  # a start digit plus num_terms - 1 increments from STEP_TERMS
    noise: float  # probability that a reading of the problem has one increment flipped


# A problem is a start digit plus increments drawn from `STEP_TERMS`; the answer is the sum mod `MODULUS`
# (its last digit). It is shown as `READINGS` numbered readings of its terms, each noisy and in its own
# order: with the level's probability one increment of a reading is flipped (0 <-> 1), and each reading
# lists the increments shuffled (the start digit stays first; the sum does not depend on the order).
# "#1:7+1+0+1 #2:7+1+1+1 #3:7+0+1+1 #4:7+1+1+0 #5:7+0+0+1 %10" (answer 9) has two of five readings wrong.
# One attempt copies and sums one reading ("#2:7+1+1+1 7+1=8+1=9+1=0 \\boxed{0}"), so it is as right as
# that reading; a vote sums every reading once and the plurality is right more often. That is the noise a
# per-attempt error needs (DESIGN §1: an error one attempt cannot train away, while independent attempts
# vote it right). Why each part, measured on the tiny model (warm-up, then 30 RL steps at q = 0):
# - what its capacity alone gives is not that: chains of 0/1 increments are learned to ~10 terms and fail
#   beyond, chains of digits to ~8 and fail at 10, and near those lengths the outcome depends on the seed
#   (12 terms of 0/1: 0.29 to 0.92 right in one attempt over runs); slips demonstrated inside attempts were
#   unlearned by RL (level 3: 0.59 to 0.98 right in one attempt);
# - readings in one order let a single attempt learn a per-position majority over them: with 3 readings
#   the single answer rose from 0.64 to 0.83 right under RL, above the 0.70 one reading allows;
# - votes of 5 attempts over readings of 6 terms failed (later attempts copy worse: right copies 0.94 to
#   0.20 from the first attempt to the fifth), so the readings are short.
ARITHMETIC_LEVELS: dict[int, ArithmeticLevel] = {
    1: ArithmeticLevel(2, 0.0), 2: ArithmeticLevel(3, 0.2), 3: ArithmeticLevel(4, 0.35), 4: ArithmeticLevel(6, 0.4)}
MODULUS = 10
STEP_TERMS = (0, 1)
READINGS = 5


def _reading(terms: list[int], noise: float, rng: random.Random) -> list[int]:
    """One noisy reading: with probability `noise` one increment flipped, then the increments shuffled."""
    increments = terms[1:]
    if rng.random() < noise:
        flipped = rng.randrange(len(increments))
        increments[flipped] = 1 - increments[flipped]
    rng.shuffle(increments)
    return [terms[0], *increments]


class ArithmeticTask:
    """Running sums mod 10 shown as noisy readings (see `ARITHMETIC_LEVELS`), e.g. level 2:
    "#1:7+1+0 #2:7+0+1 #3:7+1+1 #4:7+1+0 #5:7+0+1 %10" (answer "8"). Train and test draw from separate
    random streams (the small levels have few distinct problems, so the two splits overlap there)."""

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
            terms = [rng.randint(0, 9)] + [rng.choice(STEP_TERMS) for _ in range(spec.num_terms - 1)]
            shown = [_reading(terms, spec.noise, rng) for _ in range(READINGS)]
            text = "".join(f"#{k}:{'+'.join(map(str, reading))} " for k, reading in enumerate(shown, 1)) + f"%{MODULUS}"
            out.append(Problem(f"arith/{split}/{seed}/{i}", text, str(sum(terms) % MODULUS), level))
        return out

    def is_correct(self, problem: Problem, answer: str | None) -> bool:
        return answer is not None and normalize_answer(answer) == normalize_answer(problem.answer)


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
