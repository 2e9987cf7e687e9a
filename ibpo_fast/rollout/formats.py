"""The paper's response formats, their parser and the warm-up demonstrations.

- `regular`: one chain of thought ending in `\\boxed{answer}`; it contains no trial marker.
- `sv` (sequential voting): attempts `[TRIAL] ... \\boxed{a} [/TRIAL]` (at most 8 count); the final answer
  is the first to be seen 3 times (consensus), else the most frequent one; a tie for the most frequent is
  no answer (`vote`).
  Nothing follows the last trial: the vote is computed, not written, so a response is graded by what its
  trials say. The demonstrations make `VOTE_TRIALS` attempts, each on another reading of the problem (or
  from another term): the tiny model did not learn to stop once three answers agree (demonstrations that
  vote on until then gave a stop probability that followed the trial count, not the agreement: measured),
  and attempts that repeat the same steps were copies of each other (the first and third attempt identical
  in 67% of responses against 12% for two independent answers: measured), so their votes were not
  independent.
- `asv` (adaptive): the regular format on easy problems, sequential voting on hard ones; the model
  chooses. It is the prompt IBPO trains with.

Any text parses: a trial cut short (no `[/TRIAL]`) counts as a trial without an answer, and a response
with no usable answer has `final_answer=None`, which grades as wrong.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ibpo_fast.rollout.tasks import Problem, readings

TRIAL_OPEN = "[TRIAL]"
TRIAL_CLOSE = "[/TRIAL]"
FORMATS = ("regular", "sv", "asv")
MAX_TRIALS = 8
CONSENSUS = 3
VOTE_TRIALS = 3  # attempts of a voting demonstration
HARD_LEVEL = 3  # asv demonstrations vote from this level up

_SHORT_TAGS = {"regular": "solve", "sv": "vote", "asv": "auto"}
_INSTRUCTIONS = {
    "regular": "Solve the problem step by step and put the final answer in \\boxed{}.",
    "sv": (f"Solve the problem by sequential voting: make {VOTE_TRIALS} independent attempts, each written as "
           f"{TRIAL_OPEN} reasoning \\boxed{{answer}} {TRIAL_CLOSE}; the answer given most often wins."),
    "asv": (f"If the problem is easy, solve it once step by step and put the final answer in \\boxed{{}}. "
            f"If it is hard, make {VOTE_TRIALS} independent attempts, each written as {TRIAL_OPEN} reasoning "
            f"\\boxed{{answer}} {TRIAL_CLOSE}; the answer given most often wins."),
}


@dataclass(frozen=True)
class Parsed:
    trial_answers: list[str | None]  # one per [TRIAL] block, None where the block gives no answer
    num_trials: int  # [TRIAL] blocks, 0 for the regular format
    final_answer: str | None  # the voted (or only) answer; None grades as wrong
    well_formed: bool  # the response follows its format exactly


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")


def prompt_text(problem: Problem, fmt: str, *, verbose: bool = False) -> str:
    """The prompt for `problem` in format `fmt`. The short form ("vote:47+85\\n") is for the tiny
    char-level model, whose demonstrations teach it what each tag means; `verbose` spells out the
    format for a pretrained instruction model."""
    _check_format(fmt)
    if verbose:
        return f"{_INSTRUCTIONS[fmt]}\n\nProblem: {problem.text}\n"
    return f"{_SHORT_TAGS[fmt]}:{problem.text}\n"


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` whose braces balance (nested braces allowed), stripped;
    None when there is none or it is empty."""
    found = None
    for match in re.finditer(r"\\boxed\{", text):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                found = text[start:i].strip() or None
                break
    return found


def _vote_key(answer: str) -> str:
    return re.sub(r"\s+", "", answer)


@dataclass(frozen=True)
class _Tally:
    counts: dict[str, int]  # votes per answer key, keys in order of first occurrence
    first_seen: dict[str, str]  # the answer as first written, per key
    consensus: int | None  # index of the answer that completed the first `CONSENSUS`, None without one


def _tally(answers: list[str | None]) -> _Tally:
    """Count the votes; None answers abstain, answers equal up to whitespace count as one."""
    counts: dict[str, int] = {}
    first_seen: dict[str, str] = {}
    consensus = None
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        key = _vote_key(answer)
        first_seen.setdefault(key, answer)
        counts[key] = counts.get(key, 0) + 1
        if consensus is None and counts[key] == CONSENSUS:
            consensus = i
    return _Tally(counts, first_seen, consensus)


def _most_frequent(tally: _Tally, *, tie_is_none: bool = False) -> str | None:
    """The most frequent answer; on a tie the one seen first, or None with `tie_is_none`."""
    if not tally.counts:
        return None
    top = max(tally.counts.values())
    leaders = [key for key, count in tally.counts.items() if count == top]  # in order of first occurrence
    return None if tie_is_none and len(leaders) > 1 else tally.first_seen[leaders[0]]


def majority(answers: list[str | None]) -> str | None:
    """Plurality vote (self-consistency): the most frequent answer, ties to the one seen first; None answers
    abstain; answers equal up to whitespace count as one."""
    return _most_frequent(_tally(answers))


def vote(answers: list[str | None]) -> str | None:
    """Sequential vote: the first answer to reach `CONSENSUS` occurrences, else the most frequent one; a
    tie for the most frequent is no answer (None), unlike `majority`. None answers abstain. Answers equal up
    to whitespace count as one.

    Why a tie decides nothing: with ties to the first answer, a vote that stops after two disagreeing
    trials is exactly as right as one attempt, at twice its cost, and RL drifted into such votes on the
    tiny default (measured, one seed, 45 IBPO steps at q = 0.25: every level-3 response to the voting prompt
    two trials, its gain over one answer +0.28 -> -0.01), after which voting no longer paid anywhere."""
    tally = _tally(answers)
    if tally.consensus is not None:
        return tally.first_seen[_vote_key(answers[tally.consensus])]
    return _most_frequent(tally, tie_is_none=True)


def parse(response_text: str) -> Parsed:
    """Parse a response of any format; never raises."""
    if TRIAL_OPEN not in response_text:
        answer = last_boxed(response_text)
        well_formed = answer is not None and TRIAL_CLOSE not in response_text
        return Parsed([], 0, answer, well_formed)
    blocks = response_text.split(TRIAL_OPEN)[1:]
    answers: list[str | None] = []
    well_formed = True
    for block in blocks:
        body, closed, tail = block.partition(TRIAL_CLOSE)
        # Only a closed trial has an answer: a cut-off attempt may stop mid-number.
        answers.append(last_boxed(body) if closed else None)
        well_formed &= bool(closed) and answers[-1] is not None and not tail.strip()
    counted = answers[:MAX_TRIALS]  # attempts past the cap are cost, not votes
    well_formed &= len(blocks) <= MAX_TRIALS  # attempts after a consensus are cost, not a malformation
    return Parsed(answers, len(blocks), vote(counted), well_formed)


# --- demonstrations (the warm-up SFT data) ----------------------------------------------------------

def _column_steps(operands: list[int]) -> tuple[str, str]:
    """Digit-by-digit column addition, right to left, carry added last: "7+5=12,4+8+1=13" and the sum."""
    digits = [str(x)[::-1] for x in operands]
    num_columns = max(map(len, digits))
    steps, sum_digits, carry = [], [], 0
    for col in range(num_columns):
        terms = [d[col] for d in digits if col < len(d)] + ([str(carry)] if carry else [])
        total = sum(map(int, terms))
        steps.append(f"{'+'.join(terms)}={total}")
        carry = total // 10
        sum_digits.append(str(total % 10) if col < num_columns - 1 else str(total)[::-1])
    return ",".join(steps), "".join(sum_digits)[::-1]


def _running_sums(operands: list[int], modulus: int | None) -> tuple[str, str]:
    """Running sums, each reduced mod `modulus` when given, every step written with the term it adds:
    "3+5+7+2%10" -> "3+5=8+7=5+2=7" and the answer 7, so each sum depends only on the two numbers just
    before it."""
    total, steps = operands[0], [str(operands[0])]
    for term in operands[1:]:
        total = total + term if modulus is None else (total + term) % modulus
        steps.append(f"+{term}={total}")
    return "".join(steps), str(total)


def _attempt(problem: Problem, parsed, reading: int = 0, start: int = 0) -> str:
    """One attempt ending in a boxed answer. A sum ("3+5+7", or mod m: "3+5+7%10"; `parsed` = its
    `readings`) gets running sums (sums of larger numbers column steps) of its reading `reading`, from the
    operand `start` on and around ("3+5+7" from 1: "5+7=12+3=15"); of several readings, the attempt first
    copies the one it sums, label included ("#2:7+1+1 7+1=8+1=9 ..."): a copy after a label is a lookup
    the tiny model learns, while summing the k-th of several unlabelled readings in place was right in only
    half the attempts (measured). Other problems (`parsed` None: no steps known) just state the answer."""
    if parsed is None:
        return f"The answer is \\boxed{{{problem.answer}}}"
    copies, modulus = parsed
    index = reading % len(copies)
    operands = copies[index]
    start %= len(operands)
    operands = operands[start:] + operands[:start]
    steps, answer = _running_sums(operands, modulus) if modulus or max(operands) < 10 else _column_steps(operands)
    label = f"#{index + 1}:{'+'.join(map(str, copies[index]))} " if len(copies) > 1 else ""
    return f"{label}{steps} \\boxed{{{answer}}}"


def demonstration(problem: Problem, fmt: str, *, num_trials: int = VOTE_TRIALS, hard_level: int = HARD_LEVEL) -> str:
    """A response in format `fmt` for warm-up SFT, each attempt computed exactly. One attempt reads the
    first reading of the problem; the `num_trials` attempts of a vote read the readings in turn (attempt i:
    reading i mod R, from term i div R), so no attempt repeats another's steps. Which reading comes first is
    the presentation's doing (`ArithmeticTask` orders the readings at random, and `Task.view` gives every
    sample a fresh order), not the attempt's: on a version of the task whose readings had their own start
    digits, single answers that picked a reading at random and copied it by its number copied it right in
    4-38% of answers after the warm-up, the votes' attempts, which read the readings in turn, in 36-89%
    (two seeds, levels 1-3). When a problem's readings hold noise, one attempt is as right as its reading,
    and the vote over the readings is right more often. `asv` votes from `hard_level` up and answers once
    below it."""
    _check_format(fmt)
    parsed = readings(problem.text)
    num_readings = len(parsed[0]) if parsed else 1
    if fmt == "sv" or (fmt == "asv" and problem.level >= hard_level):
        if not 1 <= num_trials <= MAX_TRIALS:
            raise ValueError(f"num_trials must be in [1, {MAX_TRIALS}], got {num_trials}")
        return "".join(f"{TRIAL_OPEN}{_attempt(problem, parsed, i % num_readings, i // num_readings)}{TRIAL_CLOSE}"
                       for i in range(num_trials))
    return _attempt(problem, parsed)
