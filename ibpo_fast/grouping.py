"""Group assignment and batch statistics for the budget ILP, on packed numpy arrays (DESIGN §4).

A response's group is its inference-cost class: group k = the number of thresholds its measure reaches,
the measure being either the number of `[TRIAL]` markers in its response tokens (sequential voting:
``trial_thresholds=(2,)`` makes a response with two or more trials extended, group 1) or its response
length in tokens (``length_thresholds``). Thresholds give K = len(thresholds) + 1 groups.

The marker is a token-id sequence (tokenizers split ``[TRIAL]`` into several ids); it counts at every
start position where all its tokens match and are response tokens (``loss_mask`` True) of one sequence.
A marker that overlaps itself (e.g. ``[7, 7]``) therefore counts each overlapping occurrence.

Each entry point takes ``backend="numba" | "numpy"``: numba kernels (one pass, counting sorts) are the
fast path; the numpy twin computes the same thing vectorised and is the tests' and benchmark's reference.
Timing: ``python -m benchmarks.grouper --out DIR``.
"""
from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

BACKENDS = ("numba", "numpy")


class GroupStats(NamedTuple):
    counts: np.ndarray  # [P, K] int64, samples of prompt p in group k
    reward_mean: np.ndarray  # [P, K] float64, NaN where counts == 0
    row_indptr: np.ndarray  # [P + K - 1 + 1] int64, CSR rows: P prompt rows, then budget rows k = 1..K-1
    row_indices: np.ndarray  # [nnz] int64, sample ids, ascending within each row


@numba.njit(cache=True)
def _marker_counts_numba(input_ids, cu_seqlens, loss_mask, marker):
    num_seqs, width = cu_seqlens.shape[0] - 1, marker.shape[0]
    counts = np.zeros(num_seqs, np.int64)
    for i in range(num_seqs):
        for t in range(cu_seqlens[i], cu_seqlens[i + 1] - width + 1):
            # the first-token test rejects almost every position before the inner loop runs
            if input_ids[t] != marker[0] or not loss_mask[t]:
                continue
            j = 1
            while j < width and input_ids[t + j] == marker[j] and loss_mask[t + j]:
                j += 1
            counts[i] += j == width
    return counts


def _marker_counts_numpy(input_ids, cu_seqlens, loss_mask, marker):
    num_seqs, width = len(cu_seqlens) - 1, len(marker)
    num_starts = len(input_ids) - width + 1
    if num_starts <= 0:
        return np.zeros(num_seqs, np.int64)
    starts = np.flatnonzero((input_ids[:num_starts] == marker[0]) & loss_mask[:num_starts])
    for j in range(1, width):
        starts = starts[(input_ids[starts + j] == marker[j]) & loss_mask[starts + j]]
    seq = np.searchsorted(cu_seqlens, starts, side="right") - 1
    inside = starts + width <= cu_seqlens[seq + 1]
    return np.bincount(seq[inside], minlength=num_seqs).astype(np.int64)


@numba.njit(cache=True)
def _response_lengths_numba(cu_seqlens, loss_mask):
    num_seqs = cu_seqlens.shape[0] - 1
    lengths = np.zeros(num_seqs, np.int64)
    for i in range(num_seqs):
        for t in range(cu_seqlens[i], cu_seqlens[i + 1]):
            lengths[i] += loss_mask[t]
    return lengths


def _response_lengths_numpy(cu_seqlens, loss_mask):
    running = np.concatenate(([0], np.cumsum(loss_mask, dtype=np.int64)))
    return running[cu_seqlens[1:]] - running[cu_seqlens[:-1]]


def _check_backend(backend):
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def _check_packed(input_ids, cu_seqlens, loss_mask):
    input_ids, cu_seqlens, loss_mask = np.asarray(input_ids), np.asarray(cu_seqlens), np.asarray(loss_mask)
    if input_ids.ndim != 1 or input_ids.dtype.kind not in "iu":
        raise ValueError(f"input_ids must be a 1-D integer array, got shape {input_ids.shape} {input_ids.dtype}")
    if cu_seqlens.ndim != 1 or cu_seqlens.dtype.kind not in "iu" or len(cu_seqlens) < 1:
        raise ValueError("cu_seqlens must be a non-empty 1-D integer array")
    if cu_seqlens[0] != 0 or cu_seqlens[-1] != len(input_ids) or np.any(np.diff(cu_seqlens) < 0):
        raise ValueError("cu_seqlens must start at 0, end at len(input_ids) and never decrease")
    if loss_mask.shape != input_ids.shape or loss_mask.dtype != np.bool_:
        raise ValueError(f"loss_mask must be a bool array shaped like input_ids {input_ids.shape}")
    return input_ids.astype(np.int64, copy=False), cu_seqlens.astype(np.int64, copy=False), loss_mask


def _check_thresholds(name, thresholds):
    values = np.asarray(thresholds, dtype=np.int64).ravel()
    if len(values) == 0 or values[0] < 1 or np.any(np.diff(values) <= 0):
        raise ValueError(f"{name} must be strictly increasing positive integers, got {thresholds!r}")
    return values


def assign(input_ids, cu_seqlens, loss_mask, *, trial_marker=None, trial_thresholds=(2,),
           length_thresholds=None, backend="numba") -> np.ndarray:
    """Group of every packed sequence, [N] int64 in [0, K).

    Give exactly one of ``trial_marker`` (token ids; grouped by marker count against
    ``trial_thresholds``) or ``length_thresholds`` (grouped by response-token count).
    """
    _check_backend(backend)
    input_ids, cu_seqlens, loss_mask = _check_packed(input_ids, cu_seqlens, loss_mask)
    if (trial_marker is None) == (length_thresholds is None):
        raise ValueError("give exactly one of trial_marker and length_thresholds")
    if trial_marker is not None:
        marker = np.asarray(trial_marker, dtype=np.int64).ravel()
        if len(marker) == 0:
            raise ValueError("trial_marker must hold at least one token id")
        thresholds = _check_thresholds("trial_thresholds", trial_thresholds)
        count = _marker_counts_numba if backend == "numba" else _marker_counts_numpy
        measure = count(input_ids, cu_seqlens, loss_mask, marker)
    else:
        thresholds = _check_thresholds("length_thresholds", length_thresholds)
        lengths = _response_lengths_numba if backend == "numba" else _response_lengths_numpy
        measure = lengths(cu_seqlens, loss_mask)
    return np.searchsorted(thresholds, measure, side="right").astype(np.int64)


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
