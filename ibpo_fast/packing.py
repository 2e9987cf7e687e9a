"""The packed rollout format (DESIGN.md §2): every sequence of a batch back to back on one token axis.

No padding anywhere: sequence i is tokens ``cu_seqlens[i] : cu_seqlens[i+1]``, positions restart at 0 in
each sequence, and ``targets[t]`` is the next token *inside the same sequence* (-100 on each last token),
so a packed forward with varlen attention and the per-sequence ops need nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Sequence

import torch

IGNORE_INDEX = -100


@dataclass(frozen=True)
class PackedBatch:
    input_ids: torch.Tensor  # [T] int64
    cu_seqlens: torch.Tensor  # [N+1] int32
    position_ids: torch.Tensor  # [T] int64
    loss_mask: torch.Tensor  # [T] bool, True on learned response tokens
    targets: torch.Tensor  # [T] int64, -100 at each sequence's last position
    prompt_index: torch.Tensor  # [N] int64
    group: torch.Tensor  # [N] int64
    reward: torch.Tensor  # [N] float32
    weight: torch.Tensor  # [N] float32

    def __post_init__(self):
        validate_packed(self)

    @property
    def num_tokens(self) -> int:
        return self.input_ids.numel()

    @property
    def num_sequences(self) -> int:
        return self.cu_seqlens.numel() - 1

    def seqlens(self) -> torch.Tensor:
        return self.cu_seqlens[1:] - self.cu_seqlens[:-1]

    def with_(self, **changes) -> "PackedBatch":
        """A copy with some per-sequence fields replaced (e.g. ``weight`` after the budget solve)."""
        return replace(self, **changes)

    def to(self, device) -> "PackedBatch":
        return PackedBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def _check(condition: bool, name: str, message: str) -> None:
    if not condition:
        raise ValueError(f"{name}: {message}")


def validate_packed(batch: PackedBatch) -> None:
    """Raise ValueError naming the first field that breaks the format."""
    T = batch.input_ids.numel()
    _check(batch.input_ids.dim() == 1 and batch.input_ids.dtype == torch.int64, "input_ids", "must be [T] int64")
    cu = batch.cu_seqlens
    _check(cu.dim() == 1 and cu.numel() >= 1 and cu.dtype == torch.int32, "cu_seqlens", "must be [N+1] int32")
    _check(int(cu[0]) == 0 and int(cu[-1]) == T, "cu_seqlens", f"must start at 0 and end at T={T}")
    _check(bool((cu[1:] >= cu[:-1]).all()), "cu_seqlens", "must be non-decreasing")
    for name, dtype in (("position_ids", torch.int64), ("loss_mask", torch.bool), ("targets", torch.int64)):
        tensor = getattr(batch, name)
        _check(tensor.shape == (T,) and tensor.dtype == dtype, name, f"must be [{T}] {dtype}")
    N = cu.numel() - 1
    for name in ("prompt_index", "group", "reward", "weight"):
        _check(getattr(batch, name).shape == (N,), name, f"must be [{N}] (one value per sequence)")


def pack(
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    prompt_index: Sequence[int] | None = None,
    reward: Sequence[float] | None = None,
    group: Sequence[int] | None = None,
    weight: Sequence[float] | None = None,
    device: torch.device | str | None = None,
) -> PackedBatch:
    """Pack (prompt tokens, response tokens) pairs; only response tokens are learned.

    A position t is learned when the token it predicts, ``input_ids[t+1]``, is a response token: the
    ``loss_mask`` lives on the predicting position, as ``targets`` does.
    """
    N = len(pairs)
    lengths = [len(p) + len(r) for p, r in pairs]
    cu = torch.zeros(N + 1, dtype=torch.int32)
    if N:
        cu[1:] = torch.tensor(lengths, dtype=torch.int64).cumsum(0).to(torch.int32)
    T = int(cu[-1])
    input_ids = torch.empty(T, dtype=torch.int64)
    position_ids = torch.empty(T, dtype=torch.int64)
    targets = torch.full((T,), IGNORE_INDEX, dtype=torch.int64)
    loss_mask = torch.zeros(T, dtype=torch.bool)
    for i, (prompt, response) in enumerate(pairs):
        start, end = int(cu[i]), int(cu[i + 1])
        tokens = torch.tensor(list(prompt) + list(response), dtype=torch.int64)
        input_ids[start:end] = tokens
        position_ids[start:end] = torch.arange(end - start)
        targets[start : end - 1] = tokens[1:]
        # positions len(prompt)-1 .. end-2 predict the response tokens
        loss_mask[start + max(len(prompt) - 1, 0) : end - 1] = len(response) > 0
    per_seq = lambda values, dtype, default: (  # noqa: E731
        torch.full((N,), default, dtype=dtype) if values is None else torch.as_tensor(values, dtype=dtype).reshape(N)
    )
    batch = PackedBatch(
        input_ids=input_ids,
        cu_seqlens=cu,
        position_ids=position_ids,
        loss_mask=loss_mask,
        targets=targets,
        prompt_index=torch.arange(N) if prompt_index is None else torch.as_tensor(prompt_index, dtype=torch.int64),
        group=per_seq(group, torch.int64, 0),
        reward=per_seq(reward, torch.float32, 0.0),
        weight=per_seq(weight, torch.float32, 1.0),
    )
    return batch if device is None else batch.to(device)
