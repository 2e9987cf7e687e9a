"""The `triton` backend: fused LM-head log-prob kernels for CUDA (kernels in ``triton_kernels.py``).

Three row ops on the dense counted rows the orchestration hands over (hidden [R, H], weight [V, H], targets [R]):

- ``forward``: grid (row blocks, vocabulary splits); each program runs the online log-sum-exp over its
  split's vocabulary tiles. The [S, R] partials (max, sum of exp, target logit) are merged here in torch, in a
  fixed order, so a row's value depends only on its own data and the tile sizes (batch invariant). The
  splits give parallelism when R is small; their number depends on V alone.
- ``backward``: two deterministic kernels, both recomputing logits: one program per row block for d_hidden
  (over the whole vocabulary), one per vocabulary block for d_weight (over all rows). 4 matmuls (about
  8·H·V flops per row) instead of CCE's 3 with f32 atomics: no atomics, bitwise reproducible gradients. Each
  program read-add-writes the f32 gradient rows it owns once per tile of the reduced dimension (a CTA barrier
  orders those round trips). Row blocks whose coefficients are all 0 (unselected sequences) are skipped.
- ``forward_backward``: the forward kernel for the log-sum-exp, then the two gradient kernels with
  grad = coef (the whole row's log-sum-exp is needed before any gradient tile).

Run on the CPU with ``TRITON_INTERPRET=1`` set before this module is imported (tests/conftest.py does it).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

from . import triton_kernels as K

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_PRECISIONS = ("ieee", "tf32x3", "tf32")


def _require_device(hidden: torch.Tensor, interpreting: bool) -> None:
    if not hidden.is_cuda and not interpreting:
        raise ValueError(
            "backend: 'triton' needs CUDA tensors (or TRITON_INTERPRET=1 set before ibpo_fast.ops.triton_backend is "
            f"imported, to run the kernels on the CPU); hidden is on {hidden.device}. Use backend='torch' on the CPU."
        )


@dataclass(frozen=True)
class TritonBackend:
    """Tile sizes and launch options; ``TritonBackend.for_tensor(hidden)`` is what ``backend="triton"`` uses."""

    block_rows: int = 64
    """Rows of a tile (the M of the logits matmul); power of two >= 16 (``tl.dot``'s minimum)."""
    block_vocab: int = 128
    """Vocabulary columns of a tile; power of two >= 16."""
    block_hidden: int = 64
    """Hidden slice per ``tl.dot`` (the K of the logits matmul); power of two >= 16."""
    vocab_per_program: int = 8192
    """Columns one forward program covers (rounded up to a multiple of ``block_vocab``): V / this = splits."""
    f32_precision: str = "ieee"
    """``tl.dot`` input precision for f32 inputs: "ieee" matches the torch reference to ~1e-6; "tf32x3"
    (3 tensor-core passes, near f32) and "tf32" (~1e-3, fastest) trade accuracy for speed. bf16/f16 ignore it."""
    num_warps: int = 8
    num_stages: int = 2
    name: str = "triton"

    def __post_init__(self):
        for field_name in ("block_rows", "block_vocab", "block_hidden"):
            size = getattr(self, field_name)
            if size < 16 or size & (size - 1):
                raise ValueError(f"{field_name}: must be a power of two >= 16, got {size}")
        if self.vocab_per_program < 1:
            raise ValueError(f"vocab_per_program: must be positive, got {self.vocab_per_program}")
        if self.f32_precision not in _PRECISIONS:
            raise ValueError(f"f32_precision: must be one of {_PRECISIONS}, got {self.f32_precision!r}")

    @classmethod
    def for_tensor(cls, hidden: torch.Tensor, *, interpreting: bool | None = None) -> TritonBackend:
        """The default backend for ``hidden``; ``interpreting`` defaults to how the kernels were built."""
        _require_device(hidden, K.INTERPRETED if interpreting is None else interpreting)
        return cls()

    # -- launch helpers -------------------------------------------------------------------------------------
    def _meta(self) -> dict:
        return dict(
            BLOCK_R=self.block_rows, BLOCK_V=self.block_vocab, BLOCK_H=self.block_hidden, UPCAST=K.INTERPRETED,
            PRECISION=self.f32_precision, num_warps=self.num_warps, num_stages=self.num_stages,
        )

    @staticmethod
    def _check(hidden) -> None:
        if hidden.dtype not in _DTYPES:
            raise ValueError(f"hidden: backend 'triton' takes f32, bf16 or f16, got {hidden.dtype}; use 'torch'")
        _require_device(hidden, K.INTERPRETED)

    @staticmethod
    def _head_args(hidden, weight, targets):
        return (hidden, *hidden.stride(), weight, *weight.stride(), targets.contiguous())

    # -- the three row ops ----------------------------------------------------------------------------------
    def forward(self, hidden, weight, targets, inv_temp: float):
        """-> (logp [R] f32, lse [R] f32) of the scaled logits ``hidden @ weight.T * inv_temp``."""
        self._check(hidden)
        (R, H), V = hidden.shape, weight.shape[0]
        if R == 0:
            return hidden.new_zeros(0, dtype=torch.float32), hidden.new_zeros(0, dtype=torch.float32)
        per_program = triton.cdiv(self.vocab_per_program, self.block_vocab) * self.block_vocab
        num_splits = triton.cdiv(V, per_program)
        part_max, part_sum, part_target = torch.empty((3, num_splits, R), dtype=torch.float32, device=hidden.device)
        K._logprob_fwd_kernel[(triton.cdiv(R, self.block_rows), num_splits)](
            part_max, part_sum, part_target, *self._head_args(hidden, weight, targets), R, V, H, float(inv_temp),
            VOCAB_PER_PROGRAM=per_program, **self._meta(),
        )
        row_max = part_max.amax(dim=0)
        lse = row_max + (part_sum * torch.exp(part_max - row_max)).sum(dim=0).log()
        return part_target.sum(dim=0) - lse, lse

    def backward(self, hidden, weight, targets, lse, grad_logp, inv_temp: float):
        """Gradients of sum_r grad_logp[r] * logp[r] -> (d_hidden [R, H] f32, d_weight [V, H] f32)."""
        self._check(hidden)
        (R, H), V = hidden.shape, weight.shape[0]
        d_hidden = torch.zeros((R, H), dtype=torch.float32, device=hidden.device)
        d_weight = torch.zeros((V, H), dtype=torch.float32, device=hidden.device)
        if R == 0:
            return d_hidden, d_weight
        # inv_temp folded into the row scale: d logp / d (hidden @ weight.T) = inv_temp * (onehot - softmax)
        row_scale = (grad_logp.to(torch.float32) * inv_temp).contiguous()
        head, sizes = self._head_args(hidden, weight, targets), (R, V, H, float(inv_temp))
        K._d_hidden_kernel[(triton.cdiv(R, self.block_rows),)](
            d_hidden, *d_hidden.stride(), *head, lse, row_scale, *sizes, **self._meta()
        )
        K._d_weight_kernel[(triton.cdiv(V, self.block_vocab),)](
            d_weight, *d_weight.stride(), *head, lse, row_scale, *sizes, **self._meta()
        )
        return d_hidden, d_weight

    def forward_backward(self, hidden, weight, targets, coef, inv_temp: float):
        """Value and gradients of sum_r coef[r] * logp[r] -> (logp [R] f32, d_hidden f32, d_weight f32)."""
        logp, lse = self.forward(hidden, weight, targets, inv_temp)
        return (logp, *self.backward(hidden, weight, targets, lse, coef, inv_temp))
