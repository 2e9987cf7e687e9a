"""Group assignment and batch statistics for the budget ILP (DESIGN §1 step 2, §4).

A response's group is its inference-cost class: group k = the number of thresholds its measure reaches.
The one definition of "extended" used by training, evaluation, demonstrations and metrics is
`response_groups`: the measure is the number of `[TRIAL]` markers in the response's decoded text, counted
over its UTF-8 bytes, where no tokenizer can hide them (a BPE tokenizer may merge ``[/TRIAL][TRIAL]`` into
a ``][`` token, so counting marker token ids misses trials). It is exactly the parser's ``num_trials``
(`rollout.formats.parse` splits the text at the same marker). ``response_groups(texts, (2,))`` makes a
response with two or more trials extended (group 1). `assign` takes any other measure (e.g. response
lengths in tokens) with its thresholds; K = len(thresholds) + 1 groups.

Each counting entry point takes ``backend="numba" | "numpy"``: numba kernels (one pass) are the fast path;
the numpy twin computes the same thing vectorised and is the tests' and benchmark's reference.
Timing: ``python -m benchmarks.grouper --out DIR``.
"""
from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

BACKENDS = ("numba", "numpy")
TRIAL_MARKER = b"[TRIAL]"  # rollout.formats.TRIAL_OPEN, UTF-8 encoded (tested equal)


class GroupStats(NamedTuple):
    counts: np.ndarray  # [P, K] int64, samples of prompt p in group k
    reward_mean: np.ndarray  # [P, K] float64, NaN where counts == 0
    row_indptr: np.ndarray  # [P + K - 1 + 1] int64, CSR rows: P prompt rows, then budget rows k = 1..K-1
    row_indices: np.ndarray  # [nnz] int64, sample ids, ascending within each row


def encode_texts(texts) -> tuple[np.ndarray, np.ndarray]:
    """(UTF-8 bytes of all texts back to back [B] uint8, offsets [N+1] int64): text i is bytes
    ``offsets[i] : offsets[i+1]``, the packed layout of the responses' text."""
    encoded = [text.encode("utf-8") for text in texts]
    offsets = np.zeros(len(encoded) + 1, np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), np.uint8), offsets


@numba.njit(cache=True)
def _marker_counts_numba(data, offsets, marker):
    num_texts, width = offsets.shape[0] - 1, marker.shape[0]
    counts = np.zeros(num_texts, np.int64)
    for i in range(num_texts):
        t, end = offsets[i], offsets[i + 1] - width
        while t <= end:
            # the first-byte test rejects almost every position before the inner loop runs
            if data[t] != marker[0]:
                t += 1
                continue
            j = 1
            while j < width and data[t + j] == marker[j]:
                j += 1
            if j == width:
                counts[i] += 1
                t += width  # non-overlapping, as str.count and str.split count
            else:
                t += 1
    return counts


def _marker_counts_numpy(data, offsets, marker):
    num_texts, width = len(offsets) - 1, len(marker)
    num_starts = len(data) - width + 1
    if num_starts <= 0:
        return np.zeros(num_texts, np.int64)
    starts = np.flatnonzero(data[:num_starts] == marker[0])
    for j in range(1, width):
        starts = starts[data[starts + j] == marker[j]]
    text = np.searchsorted(offsets, starts, side="right") - 1
    inside = starts + width <= offsets[text + 1]
    starts, text = starts[inside], text[inside]
    if _self_overlapping(marker.tobytes()):  # keep each text's matches greedily from the left
        keep, last_end = np.ones(len(starts), bool), {}
        for k, (start, owner) in enumerate(zip(starts.tolist(), text.tolist())):
            keep[k] = start >= last_end.get(owner, -1)
            last_end[owner] = start + width if keep[k] else last_end[owner]
        text = text[keep]
    return np.bincount(text, minlength=num_texts).astype(np.int64)


def _self_overlapping(marker: bytes) -> bool:
    return any(marker[:k] == marker[-k:] for k in range(1, len(marker)))


def _check_backend(backend):
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def count_markers(text_bytes, offsets, *, marker: bytes = TRIAL_MARKER, backend="numba") -> np.ndarray:
    """Non-overlapping occurrences of `marker` inside each text of a packed byte layout (`encode_texts`),
    [N] int64; an occurrence never straddles two texts."""
    _check_backend(backend)
    data, offsets = np.asarray(text_bytes), np.asarray(offsets)
    if data.ndim != 1 or data.dtype != np.uint8:
        raise ValueError(f"text_bytes must be a 1-D uint8 array, got shape {data.shape} {data.dtype}")
    if offsets.ndim != 1 or offsets.dtype.kind not in "iu" or len(offsets) < 1:
        raise ValueError("offsets must be a non-empty 1-D integer array")
    if offsets[0] != 0 or offsets[-1] != len(data) or np.any(np.diff(offsets) < 0):
        raise ValueError("offsets must start at 0, end at len(text_bytes) and never decrease")
    if not isinstance(marker, bytes) or not marker:
        raise ValueError(f"marker must be non-empty bytes, got {marker!r}")
    count = _marker_counts_numba if backend == "numba" else _marker_counts_numpy
    return count(data, offsets.astype(np.int64, copy=False), np.frombuffer(marker, np.uint8))


def assign(measure, thresholds) -> np.ndarray:
    """Group of each sample, [N] int64 in [0, K): the number of `thresholds` (strictly increasing
    positive integers) its `measure` (e.g. trial count, response length) reaches."""
    values = np.asarray(thresholds, dtype=np.int64).ravel()
    if len(values) == 0 or values[0] < 1 or np.any(np.diff(values) <= 0):
        raise ValueError(f"thresholds must be strictly increasing positive integers, got {thresholds!r}")
    measure = np.asarray(measure)
    if measure.ndim != 1 or (len(measure) and measure.dtype.kind not in "iu"):
        raise ValueError(f"measure must be a 1-D integer array, got shape {measure.shape} {measure.dtype}")
    return np.searchsorted(values, measure, side="right").astype(np.int64)


def response_groups(texts, trial_thresholds=(2,), *, backend="numba") -> np.ndarray:
    """The group of each response from its structure (module docstring): [N] int64, 0 = regular."""
    return assign(count_markers(*encode_texts(texts), backend=backend), trial_thresholds)


@numba.njit(cache=True)
def _statistics_numba(groups, rewards, prompt_index, num_prompts, num_groups):
    counts = np.zeros((num_prompts, num_groups), np.int64)
    sums = np.zeros((num_prompts, num_groups), np.float64)
    for i in range(groups.shape[0]):
        counts[prompt_index[i], groups[i]] += 1
        sums[prompt_index[i], groups[i]] += rewards[i]
    # one counting-sort pass fills the prompt rows and the budget rows of the CSR together
    indptr = np.zeros(num_prompts + num_groups, np.int64)
    for p in range(num_prompts):
        indptr[p + 1] = indptr[p] + counts[p].sum()
    for k in range(1, num_groups):
        indptr[num_prompts + k] = indptr[num_prompts + k - 1] + counts[:, k].sum()
    fill = indptr[:-1].copy()
    indices = np.empty(indptr[-1], np.int64)
    for i in range(groups.shape[0]):
        indices[fill[prompt_index[i]]] = i
        fill[prompt_index[i]] += 1
        if groups[i] > 0:
            row = num_prompts + groups[i] - 1
            indices[fill[row]] = i
            fill[row] += 1
    means = np.full((num_prompts, num_groups), np.nan)
    for p in range(num_prompts):
        for k in range(num_groups):
            if counts[p, k] > 0:
                means[p, k] = sums[p, k] / counts[p, k]
    return counts, means, indptr, indices


def _statistics_numpy(groups, rewards, prompt_index, num_prompts, num_groups):
    cell = prompt_index * num_groups + groups
    size = num_prompts * num_groups
    counts = np.bincount(cell, minlength=size).reshape(num_prompts, num_groups).astype(np.int64)
    sums = np.bincount(cell, weights=rewards, minlength=size).reshape(num_prompts, num_groups)
    means = np.divide(sums, counts, out=np.full(counts.shape, np.nan), where=counts > 0)
    costly = np.flatnonzero(groups > 0)
    prompt_rows = np.argsort(prompt_index, kind="stable")
    budget_rows = costly[np.argsort(groups[costly], kind="stable")]
    row_sizes = np.concatenate((counts.sum(axis=1), counts[:, 1:].sum(axis=0)))
    indptr = np.concatenate(([0], np.cumsum(row_sizes))).astype(np.int64)
    return counts, means, indptr, np.concatenate((prompt_rows, budget_rows)).astype(np.int64)


def statistics(groups, rewards, prompt_index, num_groups, *, num_prompts=None, backend="numba") -> GroupStats:
    """Per-prompt, per-group counts and reward means, and the ILP's CSR rows (see `GroupStats`).

    ``prompt_index`` holds ids in [0, P); P = ``num_prompts`` or max id + 1. Absent prompts get empty rows.
    """
    _check_backend(backend)
    groups, rewards, prompt_index = np.asarray(groups), np.asarray(rewards), np.asarray(prompt_index)
    n = len(groups)
    if groups.ndim != 1 or groups.dtype.kind not in "iu":
        raise ValueError("groups must be a 1-D integer array")
    if rewards.shape != (n,) or prompt_index.shape != (n,):
        raise ValueError(f"rewards and prompt_index must have the length of groups ({n})")
    if not np.all(np.isfinite(rewards)):
        raise ValueError("rewards must be finite (got NaN or inf)")
    if prompt_index.dtype.kind not in "iu" or (n and prompt_index.min() < 0):
        raise ValueError("prompt_index must hold non-negative integers")
    if num_groups < 1 or (n and (groups.min() < 0 or groups.max() >= num_groups)):
        raise ValueError(f"groups must lie in [0, num_groups={num_groups})")
    if num_prompts is None:
        num_prompts = int(prompt_index.max()) + 1 if n else 0
    elif n and prompt_index.max() >= num_prompts:
        raise ValueError(f"prompt_index must lie in [0, num_prompts={num_prompts})")
    kernel = _statistics_numba if backend == "numba" else _statistics_numpy
    return GroupStats(*kernel(groups.astype(np.int64, copy=False), rewards.astype(np.float64, copy=False),
                              prompt_index.astype(np.int64, copy=False), int(num_prompts), int(num_groups)))
