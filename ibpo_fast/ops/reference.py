"""The `torch` backend: chunked plain PyTorch, the reference every other backend is tested against.

Rows are processed in token chunks x vocabulary chunks with an online log-sum-exp, so at most one
[token_chunk, vocab_chunk] logits tile exists at a time (never [R, V]). The elementwise work on a tile is
delegated to a `ChunkKernels` object: plain torch here, the C++ kernels of the `native` backend otherwise,
so both share this loop. Inputs in f64 run in f64 end to end (the high-precision reference); every other
dtype is upcast tile by tile and accumulated in f32.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


class TorchChunkKernels:
    """Elementwise work on one logits tile ``z`` [rows, cols] whose columns are vocabulary ``v0 : v0+cols``.

    ``local_targets`` are targets minus v0: a row whose target falls outside the tile has it outside [0, cols).
    """

    @staticmethod
    def online_logsumexp_(z, local_targets, running_max, running_sum, target_logit) -> None:
        tile_max = z.amax(dim=1)
        new_max = torch.maximum(running_max, tile_max)
        running_sum.mul_(torch.exp(running_max - new_max)).add_(torch.exp(z - new_max[:, None]).sum(dim=1))
        running_max.copy_(new_max)
        inside = (local_targets >= 0) & (local_targets < z.shape[1])
        gathered = z.gather(1, local_targets.clamp(0, z.shape[1] - 1)[:, None]).squeeze(1)
        target_logit.add_(torch.where(inside, gathered, torch.zeros_like(gathered)))

    @staticmethod
    def softmax_grad_(z, local_targets, lse, row_scale) -> None:
        """z <- row_scale * (onehot(target) - softmax(z)): d(row_scale * logp) / dz."""
        z.sub_(lse[:, None]).exp_().neg_()
        inside = (local_targets >= 0) & (local_targets < z.shape[1])
        rows = inside.nonzero().squeeze(1)
        z[rows, local_targets[rows]] += 1.0
        z.mul_(row_scale[:, None])

    @classmethod
    def logsumexp_and_grad_(cls, z, targets, row_scale) -> torch.Tensor:
        """Whole-vocabulary tile: -> logp [rows]; z <- d(row_scale * logp)/dz in place (-100 rows: 0, 0)."""
        running_max = torch.full((z.shape[0],), float("-inf"), dtype=z.dtype, device=z.device)
        running_sum, target_logit = torch.zeros_like(running_max), torch.zeros_like(running_max)
        cls.online_logsumexp_(z, targets, running_max, running_sum, target_logit)
        lse = running_max + running_sum.log()
        cls.softmax_grad_(z, targets, lse, row_scale)
        return target_logit - lse


@dataclass(frozen=True)
class TorchBackend:
    """Chunk sizes default to the whole vocabulary in one tile (then the weighted loss needs a single pass:
    about 6·H·V flops per row) and as many rows as fit the smaller of ``workspace_bytes`` and
    ``logits_fraction`` of the full f32 logits: on a small batch a workspace as large as the logits would
    save nothing over materialising them. Tiles keep at least ``min_token_chunk`` rows (GEMM efficiency)."""

    token_chunk: int | None = None
    vocab_chunk: int | None = None
    workspace_bytes: int = 256 << 20
    logits_fraction: float = 0.2
    min_token_chunk: int = 64
    kernels: object = field(default_factory=TorchChunkKernels)
    name: str = "torch"

    def plan(self, num_rows: int, vocab: int) -> tuple[int, int]:
        vocab_chunk = min(self.vocab_chunk or vocab, vocab)
        budget = min(self.workspace_bytes, int(self.logits_fraction * 4 * num_rows * vocab))
        token_chunk = self.token_chunk or max(self.min_token_chunk, budget // (4 * vocab_chunk))
        return max(1, min(token_chunk, num_rows)), vocab_chunk

    @staticmethod
    def _compute_dtype(hidden):
        return torch.float64 if hidden.dtype == torch.float64 else torch.float32

    def _tiles(self, hidden, weight):
        """Yield (row slice, vocab start, hidden tile, weight tile, logits tile) in a fixed order.

        Every logits tile is a view of one workspace, valid until the next tile is yielded: a fresh tile per step
        would hold two at the peak (the consumer's loop variable keeps the old one while the next is computed).
        """
        dtype = self._compute_dtype(hidden)
        token_chunk, vocab_chunk = self.plan(hidden.shape[0], weight.shape[0])
        workspace = torch.empty(token_chunk * vocab_chunk, dtype=dtype, device=hidden.device)
        for r0 in range(0, hidden.shape[0], token_chunk):
            rows = slice(r0, min(r0 + token_chunk, hidden.shape[0]))
            hidden_tile = hidden[rows].to(dtype)
            for v0 in range(0, weight.shape[0], vocab_chunk):
                weight_tile = weight[v0 : v0 + vocab_chunk].to(dtype)
                shape = (hidden_tile.shape[0], weight_tile.shape[0])
                logits = workspace[: shape[0] * shape[1]].view(shape)
                yield rows, v0, hidden_tile, weight_tile, torch.mm(hidden_tile, weight_tile.T, out=logits)

    def forward(self, hidden, weight, targets, inv_temp: float):
        """-> (logp [R], lse [R]) of the scaled logits ``hidden @ weight.T * inv_temp``."""
        R, dtype = hidden.shape[0], self._compute_dtype(hidden)
        running_max = torch.full((R,), float("-inf"), dtype=dtype, device=hidden.device)
        running_sum = torch.zeros(R, dtype=dtype, device=hidden.device)
        target_logit = torch.zeros(R, dtype=dtype, device=hidden.device)
        for rows, v0, _, _, logits in self._tiles(hidden, weight):
            logits.mul_(inv_temp)
            self.kernels.online_logsumexp_(
                logits, targets[rows] - v0, running_max[rows], running_sum[rows], target_logit[rows]
            )
        lse = running_max + running_sum.log()
        return target_logit - lse, lse

    def backward(self, hidden, weight, targets, lse, grad_logp, inv_temp: float):
        """Recompute each tile; -> (d_hidden [R, H], d_weight [V, H]) in the compute dtype."""
        d_hidden, d_weight = self._zero_grads(hidden, weight)
        row_scale = grad_logp.to(lse.dtype) * inv_temp
        for rows, v0, hidden_tile, weight_tile, logits in self._tiles(hidden, weight):
            logits.mul_(inv_temp)
            self.kernels.softmax_grad_(logits, targets[rows] - v0, lse[rows], row_scale[rows])
            self._accumulate(logits, rows, v0, hidden_tile, weight_tile, d_hidden, d_weight)
        return d_hidden, d_weight

    def forward_backward(self, hidden, weight, targets, coef, inv_temp: float):
        """Value and gradients of sum_r coef[r] * logp[r] -> (logp, d_hidden, d_weight)."""
        token_chunk, vocab_chunk = self.plan(hidden.shape[0], weight.shape[0])
        if vocab_chunk < weight.shape[0]:  # lse needs the whole row before any gradient: two passes
            logp, lse = self.forward(hidden, weight, targets, inv_temp)
            return (logp, *self.backward(hidden, weight, targets, lse, coef, inv_temp))
        d_hidden, d_weight = self._zero_grads(hidden, weight)
        logp = torch.empty(hidden.shape[0], dtype=d_hidden.dtype, device=hidden.device)
        row_scale = coef.to(d_hidden.dtype) * inv_temp
        for rows, v0, hidden_tile, weight_tile, logits in self._tiles(hidden, weight):
            logits.mul_(inv_temp)
            logp[rows] = self.kernels.logsumexp_and_grad_(logits, targets[rows], row_scale[rows])
            self._accumulate(logits, rows, v0, hidden_tile, weight_tile, d_hidden, d_weight)
        return logp, d_hidden, d_weight

    def _zero_grads(self, hidden, weight):
        dtype = self._compute_dtype(hidden)
        return (
            torch.zeros(hidden.shape, dtype=dtype, device=hidden.device),
            torch.zeros(weight.shape, dtype=dtype, device=weight.device),
        )

    @staticmethod
    def _accumulate(grad_logits, rows, v0, hidden_tile, weight_tile, d_hidden, d_weight) -> None:
        # inv_temp is already folded into the row scale, so these are d/d(hidden) and d/d(weight)
        d_hidden[rows].addmm_(grad_logits, weight_tile)
        d_weight[v0 : v0 + weight_tile.shape[0]].addmm_(grad_logits.T, hidden_tile)


def naive_token_logprobs(hidden, weight, targets, *, temperature: float = 1.0, dtype=torch.float64):
    """The plain formula with the [T, V] logits materialised: the test oracle and benchmark baseline.

    Positions with target -100 give 0.
    """
    logits = (hidden.to(dtype) @ weight.to(dtype).T) / temperature
    logp = torch.log_softmax(logits, dim=-1)
    counted = targets != -100
    picked = logp.gather(1, targets.clamp(min=0).to(torch.int64)[:, None]).squeeze(1)
    return torch.where(counted, picked, torch.zeros_like(picked))
