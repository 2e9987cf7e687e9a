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

    def attempt_error_rate(self, problem: Problem) -> float:
        """Share of the demonstrated attempts of `problem` that hold a slip (warm-up / SFT data)."""


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
    error_rate: float  # share of demonstrated attempts at this level that hold a slip (learned, on purpose)


# A problem is a start digit plus increments drawn from `STEP_TERMS`, and the answer is the sum mod `MODULUS`
# (its last digit): "7+1+0+1%10" -> chain of thought "7+1=8+0=8+1=9", answer 9. A harder level is a longer
# chain whose demonstrated attempts slip at a rate the model cannot predict: a slip falls on a random step,
# so a trained attempt is wrong at about that rate whatever it does, its wrong answers spread over several
# values, and a vote over independent attempts (each from another term) recovers the right one. Measured
# on the tiny model, what capacity alone gives is not that: chains of 0/1 increments are learned up to ~10
# terms and fail beyond (12 terms: 0.29-0.42 right with the wrong answers next to the right one, votes gain
# nothing), chains of digits up to ~8 and fail at 10 (0.08); in between the outcome depends on the seed.
ARITHMETIC_LEVELS: dict[int, ArithmeticLevel] = {
    1: ArithmeticLevel(2, 0.0), 2: ArithmeticLevel(4, 0.15), 3: ArithmeticLevel(8, 0.4), 4: ArithmeticLevel(12, 0.4)}
MODULUS = 10
STEP_TERMS = (0, 1)


class ArithmeticTask:
    """Running sums mod 10, e.g. level 2: "7+1+0+1%10" (answer "9"). Train and test draw from separate
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
            terms = [rng.randint(0, 9)] + [rng.choice(STEP_TERMS) for _ in range(ARITHMETIC_LEVELS[level].num_terms - 1)]
            text = "+".join(map(str, terms)) + f"%{MODULUS}"
            out.append(Problem(f"arith/{split}/{seed}/{i}", text, str(sum(terms) % MODULUS), level))
        return out

    def is_correct(self, problem: Problem, answer: str | None) -> bool:
        return answer is not None and normalize_answer(answer) == normalize_answer(problem.answer)

    def attempt_error_rate(self, problem: Problem) -> float:
        return ARITHMETIC_LEVELS[problem.level].error_rate


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

    def attempt_error_rate(self, problem: Problem) -> float:
        return 0.0  # its demonstrations state the answer, without steps to slip in

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

    def attempt_error_rate(self, problem: Problem) -> float:
        return 0.0  # its demonstrations state the answer, without steps to slip in


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
