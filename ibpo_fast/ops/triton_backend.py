"""The `triton` backend: fused LM-head log-prob kernels for CUDA (kernels in ``triton_kernels.py``).

Three row ops on the dense counted rows the orchestration hands over (hidden [R, H], weight [V, H], targets [R]):

- ``forward``: grid (row blocks, vocabulary splits); each program runs the online log-sum-exp over its
  split's vocabulary tiles. The [S, R] partials (max, sum of exp, target logit) are merged here in torch, in a
  fixed order, so a row's value depends only on its own data and the tile sizes (batch invariant). The
  splits give parallelism when R is small; their number depends on V alone.
- ``forward_backward`` (value and gradients of sum_r coef[r] * logp[r]): two deterministic kernels, no atomics.
  ``_fwd_d_hidden_kernel`` (one program per row block) makes one pass over the vocabulary that yields the
  log-sum-exp, the log-probs and d_hidden together (the softmax weights rescaled online, flash-attention style);
  ``_d_weight_kernel`` (one program per vocabulary block, over all rows) recomputes the logits with that
  log-sum-exp. 3 logits-sized matmuls plus one recompute, about 8·H·V flops per row (the floor is 6·H·V). Each
  program read-add-writes the f32 gradient rows it owns once per tile of the reduced dimension; the launch table
  makes that tile large (the vocabulary tile for d_hidden, the row tile for d_weight). Row blocks whose
  coefficients are all 0 (unselected sequences) skip their gradient work.
- ``backward``: the same two kernels with coef = grad_logp. The log-sum-exp saved by the forward is not needed:
  d_hidden's pass recomputes it on the way, and d_weight uses that one, so both gradients agree on it.

Run on the CPU with ``TRITON_INTERPRET=1`` set before this module is imported (tests/conftest.py does it).
``ibpo_fast.ops.triton_compile`` compiles every launch for sm_80 / sm_90 without a GPU and reads the cubins.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

from . import triton_kernels as K

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_PRECISIONS = ("ieee", "tf32x3", "tf32")
# launch table key -> the kernel it configures (triton_kernels.py)
KERNELS = {"forward": "_logprob_fwd_kernel", "fwd_d_hidden": "_fwd_d_hidden_kernel", "d_weight": "_d_weight_kernel"}


def _require_device(hidden: torch.Tensor, interpreting: bool) -> None:
    if not hidden.is_cuda and not interpreting:
        raise ValueError(
            "backend: 'triton' needs CUDA tensors (or TRITON_INTERPRET=1 set before ibpo_fast.ops.triton_backend is "
            f"imported, to run the kernels on the CPU); hidden is on {hidden.device}. Use backend='torch' on the CPU."
        )


@dataclass(frozen=True)
class Tiles:
    """One kernel's launch configuration."""

    block_rows: int
    """Rows of a logits tile (the M of its matmul); power of two >= 16 (``tl.dot``'s minimum)."""
    block_vocab: int
    """Vocabulary columns of a logits tile; power of two >= 16."""
    block_hidden: int
    """Hidden slice per ``tl.dot`` (the K of the logits matmul); power of two >= 16."""
    num_warps: int = 8
    num_stages: int = 2

    def __post_init__(self):
        for field_name in ("block_rows", "block_vocab", "block_hidden"):
            size = getattr(self, field_name)
            if size < 16 or size & (size - 1):
                raise ValueError(f"{field_name}: must be a power of two >= 16, got {size}")
        if self.num_warps not in (1, 2, 4, 8, 16) or self.num_stages < 1:
            raise ValueError(f"num_warps / num_stages: got {self.num_warps} / {self.num_stages}")

    def __str__(self) -> str:
        return f"R{self.block_rows} V{self.block_vocab} H{self.block_hidden} w{self.num_warps} s{self.num_stages}"


# kernel -> input dtype -> Tiles: what ``TritonBackend()`` launches, chosen with `python -m benchmarks compile
# --sweep` (ptxas resources of each candidate for sm_80 and sm_90, and the static traffic per row): per kernel
# the largest tile of the reduced dimension (how often the f32 gradient rows make a round trip through global
# memory: vocabulary tiles for d_hidden, row tiles for d_weight) and of the operand-sharing dimension that
# compiles with no spills on both targets. At H = 4096, V = 128256, bf16: forward 16 MB per row (was 25),
# fwd_d_hidden 53 (the former d_hidden kernel 74, plus 25 for its separate forward), d_weight 53 (was 98).
# f32 ("ieee" dots on CUDA cores) needs far more registers: smaller hidden slices keep it spill-free.
# f32 ("ieee" dots on CUDA cores) needs far more registers: smaller hidden slices keep it spill-free. Row strides
# that are not multiples of 16 elements (an odd H) lose the JIT's alignment hints, and with them vectorised
# loads: more registers again, so those shapes get smaller tiles (measured at H = 577).
def _table(half: dict, f32: dict) -> dict:
    return {kernel: {torch.bfloat16: half[kernel], torch.float16: half[kernel], torch.float32: f32[kernel]}
            for kernel in KERNELS}


LAUNCH_TABLE = {  # strides aligned to 16 elements -> kernel -> input dtype -> Tiles
    True: _table(half={"forward": Tiles(128, 128, 32, 8), "fwd_d_hidden": Tiles(64, 256, 32, 8),
                       "d_weight": Tiles(256, 64, 32, 8)},
                 f32={"forward": Tiles(64, 128, 64, 8), "fwd_d_hidden": Tiles(64, 128, 16, 8),
                      "d_weight": Tiles(128, 64, 16, 8)}),
    False: _table(half={"forward": Tiles(128, 128, 32, 8), "fwd_d_hidden": Tiles(64, 128, 32, 8),
                        "d_weight": Tiles(128, 64, 32, 8)},
                  f32={"forward": Tiles(64, 128, 16, 8), "fwd_d_hidden": Tiles(32, 128, 16, 8),
                       "d_weight": Tiles(64, 64, 16, 8)}),
}


@dataclass(frozen=True)
class TritonBackend:
    """Launch options; ``TritonBackend.for_tensor(hidden)`` is what ``backend="triton"`` uses."""

    tiles: Tiles | None = None
    """One configuration for every kernel (e.g. small tiles that exercise every tail at small shapes); None
    takes each kernel's from ``LAUNCH_TABLE``."""
    vocab_per_program: int = 8192
    """Columns one forward program covers (rounded up to a multiple of its ``block_vocab``): V / this = splits."""
    f32_precision: str = "ieee"
    """``tl.dot`` input precision for f32 inputs: "ieee" matches the torch reference to ~1e-6; "tf32x3"
    (3 tensor-core passes, near f32) and "tf32" (~1e-3, fastest) trade accuracy for speed. bf16/f16 ignore it."""
    name: str = "triton"

    def __post_init__(self):
        if self.vocab_per_program < 1:
            raise ValueError(f"vocab_per_program: must be positive, got {self.vocab_per_program}")
        if self.f32_precision not in _PRECISIONS:
            raise ValueError(f"f32_precision: must be one of {_PRECISIONS}, got {self.f32_precision!r}")

    @classmethod
    def for_tensor(cls, hidden: torch.Tensor, *, interpreting: bool | None = None) -> TritonBackend:
        """The default backend for ``hidden``; ``interpreting`` defaults to how the kernels were built."""
        _require_device(hidden, K.INTERPRETED if interpreting is None else interpreting)
        return cls()

    def tiles_for(self, kernel: str, hidden: torch.Tensor, weight: torch.Tensor) -> Tiles:
        """The configuration ``kernel`` (a key of ``KERNELS``) is launched with for these inputs."""
        if self.tiles is not None:
            return self.tiles
        aligned = all(stride % 16 == 0 for stride in (*hidden.stride(), *weight.stride()) if stride != 1)
        return LAUNCH_TABLE[aligned][kernel][hidden.dtype]

    # -- launch helpers -------------------------------------------------------------------------------------
    def _meta(self, tiles: Tiles) -> dict:
        return dict(
            BLOCK_R=tiles.block_rows, BLOCK_V=tiles.block_vocab, BLOCK_H=tiles.block_hidden, UPCAST=K.INTERPRETED,
            PRECISION=self.f32_precision, num_warps=tiles.num_warps, num_stages=tiles.num_stages,
        )

    @staticmethod
    def _check(hidden) -> None:
        if hidden.dtype not in _DTYPES:
            raise ValueError(f"hidden: backend 'triton' takes f32, bf16 or f16, got {hidden.dtype}; use 'torch'")
        _require_device(hidden, K.INTERPRETED)

    @staticmethod
    def _launch(kernel, grid, *args, **meta) -> None:
        """The one place a kernel is launched (``triton_compile`` records these calls instead)."""
        kernel[grid](*args, **meta)

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
        tiles = self.tiles_for("forward", hidden, weight)
        per_program = triton.cdiv(self.vocab_per_program, tiles.block_vocab) * tiles.block_vocab
        num_splits = triton.cdiv(V, per_program)
        part_max, part_sum, part_target = torch.empty((3, num_splits, R), dtype=torch.float32, device=hidden.device)
        self._launch(
            K._logprob_fwd_kernel, (triton.cdiv(R, tiles.block_rows), num_splits),
            part_max, part_sum, part_target, *self._head_args(hidden, weight, targets), R, V, H, float(inv_temp),
            VOCAB_PER_PROGRAM=per_program, **self._meta(tiles),
        )
        row_max = part_max.amax(dim=0)
        lse = row_max + (part_sum * torch.exp(part_max - row_max)).sum(dim=0).log()
        return part_target.sum(dim=0) - lse, lse

    def backward(self, hidden, weight, targets, lse, grad_logp, inv_temp: float):
        """Gradients of sum_r grad_logp[r] * logp[r] -> (d_hidden [R, H] f32, d_weight [V, H] f32).

        ``lse`` is not read: the d_hidden pass recomputes it (see the module docstring)."""
        del lse
        return self.forward_backward(hidden, weight, targets, grad_logp, inv_temp)[1:]

    def forward_backward(self, hidden, weight, targets, coef, inv_temp: float):
        """Value and gradients of sum_r coef[r] * logp[r] -> (logp [R] f32, d_hidden f32, d_weight f32)."""
        self._check(hidden)
        (R, H), V = hidden.shape, weight.shape[0]
        d_hidden = torch.zeros((R, H), dtype=torch.float32, device=hidden.device)  # the kernel accumulates into it
        d_weight = torch.zeros((V, H), dtype=torch.float32, device=hidden.device)
        lse, logp = torch.empty((2, R), dtype=torch.float32, device=hidden.device)
        if R == 0:
            return logp, d_hidden, d_weight
        # inv_temp folded into the row scale: d logp / d (hidden @ weight.T) = inv_temp * (onehot - softmax)
        row_scale = (coef.to(torch.float32) * inv_temp).contiguous()
        head, sizes = self._head_args(hidden, weight, targets), (R, V, H, float(inv_temp))
        tiles = self.tiles_for("fwd_d_hidden", hidden, weight)
        self._launch(K._fwd_d_hidden_kernel, (triton.cdiv(R, tiles.block_rows),),
                     d_hidden, *d_hidden.stride(), lse, logp, *head, row_scale, *sizes, **self._meta(tiles))
        tiles = self.tiles_for("d_weight", hidden, weight)
        self._launch(K._d_weight_kernel, (triton.cdiv(V, tiles.block_vocab),),
                     d_weight, *d_weight.stride(), *head, lse, row_scale, *sizes, **self._meta(tiles))
        return logp, d_hidden, d_weight
