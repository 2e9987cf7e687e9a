"""Input checks and the counted-row compaction shared by every backend.

Only counted rows (``targets != -100`` and ``loss_mask``) go on to a backend, so masked prompt tokens never
enter a matmul; a backend sees dense [R, H] rows and in-range targets and nothing else.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
NORMALIZE_MODES = ("tokens", "sequences", "none")


def _fail(name: str, message: str) -> None:
    raise ValueError(f"{name}: {message}")


def check_head(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float) -> None:
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 2 or hidden.dtype not in FLOAT_DTYPES:
        _fail("hidden", f"must be a [T, H] float tensor (f32, bf16, f16 or f64), got {_describe(hidden)}")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[1] != hidden.shape[1]:
        _fail("weight", f"must be the [V, H={hidden.shape[1]}] LM head, got {_describe(weight)}")
    if weight.dtype != hidden.dtype:
        _fail("weight", f"dtype {weight.dtype} differs from hidden's {hidden.dtype}")
    if weight.device != hidden.device:
        _fail("weight", f"on {weight.device}, hidden on {hidden.device}")
    if weight.shape[0] == 0:
        _fail("weight", "has an empty vocabulary")
    if not isinstance(targets, torch.Tensor) or targets.shape != (hidden.shape[0],):
        _fail("targets", f"must be [T={hidden.shape[0]}], got {_describe(targets)}")
    if targets.dtype not in (torch.int64, torch.int32) or targets.device != hidden.device:
        _fail("targets", f"must be int64 (or int32) on {hidden.device}, got {targets.dtype} on {targets.device}")
    out_of_range = (targets != -100) & ((targets < 0) | (targets >= weight.shape[0]))
    if bool(out_of_range.any()):
        bad = int(targets[out_of_range][0])
        _fail("targets", f"value {bad} is neither -100 nor in [0, V={weight.shape[0]})")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        _fail("temperature", f"must be a finite positive number, got {temperature!r}")


def check_segments(num_tokens: int, device: torch.device, cu_seqlens: torch.Tensor, loss_mask) -> None:
    cu = cu_seqlens
    if not isinstance(cu, torch.Tensor) or cu.dim() != 1 or cu.numel() < 1:
        _fail("cu_seqlens", f"must be a [N+1] integer tensor, got {_describe(cu)}")
    if cu.dtype not in (torch.int32, torch.int64) or cu.device != device:
        _fail("cu_seqlens", f"must be int32 or int64 on {device}, got {cu.dtype} on {cu.device}")
    if int(cu[0]) != 0:
        _fail("cu_seqlens", f"must start at 0, starts at {int(cu[0])}")
    if int(cu[-1]) != num_tokens:
        _fail("cu_seqlens", f"must end at T={num_tokens}, ends at {int(cu[-1])}")
    if bool((cu[1:] < cu[:-1]).any()):
        _fail("cu_seqlens", "must be non-decreasing")
    if loss_mask is not None:
        if not isinstance(loss_mask, torch.Tensor) or loss_mask.shape != (num_tokens,):
            _fail("loss_mask", f"must be [T={num_tokens}] bool, got {_describe(loss_mask)}")
        if loss_mask.dtype != torch.bool or loss_mask.device != device:
            _fail("loss_mask", f"must be bool on {device}, got {loss_mask.dtype} on {loss_mask.device}")


def check_loss_args(num_sequences: int, device: torch.device, seq_weights, normalize: str) -> None:
    if not isinstance(seq_weights, torch.Tensor) or seq_weights.shape != (num_sequences,):
        _fail("seq_weights", f"must be [N={num_sequences}], got {_describe(seq_weights)}")
    if not seq_weights.dtype.is_floating_point or seq_weights.device != device:
        _fail("seq_weights", f"must be a float tensor on {device}, got {seq_weights.dtype} on {seq_weights.device}")
    if not bool(torch.isfinite(seq_weights).all()):
        _fail("seq_weights", "contains NaN or inf")
    if normalize not in NORMALIZE_MODES:
        _fail("normalize", f"must be one of {NORMALIZE_MODES}, got {normalize!r}")


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"{tuple(x.shape)} {x.dtype}"
    return type(x).__name__


@dataclass(frozen=True)
class CountedRows:
    """The positions that count, in token order: row r is token ``index[r]`` of sequence ``sequence[r]``."""

    index: torch.Tensor  # [R] int64 token positions
    targets: torch.Tensor  # [R] int64, all in [0, V)
    sequence: torch.Tensor | None  # [R] int64, None when there are no segments


def counted_rows(targets: torch.Tensor, loss_mask=None, cu_seqlens=None) -> CountedRows:
    counted = targets != -100
    if loss_mask is not None:
        counted &= loss_mask
    index = counted.nonzero().squeeze(1)
    sequence = None
    if cu_seqlens is not None:
        # the sequence of token t is the number of boundaries cu[1:] at or below t
        sequence = torch.searchsorted(cu_seqlens[1:].to(torch.int64), index, right=True)
    return CountedRows(index=index, targets=targets.index_select(0, index).to(torch.int64), sequence=sequence)
