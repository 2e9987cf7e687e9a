"""The policy as the trainer sees it: a packed forward to final hidden states, then the fused loss.

The model's own full logits are never built: `Policy.forward` runs the decoder body
(`model.model(...).last_hidden_state`) and hands the LM head's weight to
`ops.sequence_logprobs_and_loss`. It is a module of its own so that, under FSDP2, the root's unshard
hooks fire around it and cover the LM head and embeddings (they live in the root's parameter group).

Packed attention (DESIGN.md §2): with flash-attn the packed batch is one row and restarting
`position_ids` give varlen attention. With sdpa (CPU) the sequences are laid out in rows of at most
`max_row_tokens` tokens, whole sequences only, with an explicit block-diagonal causal mask per row: one
row of T tokens would cost O(T²) attention and a [T, T] mask, most of it masked out.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ibpo_fast.ops import sequence_logprobs_and_loss
from ibpo_fast.packing import PackedBatch


def row_layout(seqlens: np.ndarray, max_row_tokens: int) -> tuple[np.ndarray, int]:
    """Greedy first-fit in order: (row of each sequence [N], row length L). A sequence longer than
    `max_row_tokens` gets a row of its own, so L = max(max_row_tokens, longest) at most."""
    rows = np.zeros(len(seqlens), np.int64)
    row, used = 0, 0
    for i, length in enumerate(seqlens):
        if used and used + length > max_row_tokens:
            row, used = row + 1, 0
        rows[i], used = row, used + length
    width = int(np.bincount(rows, weights=seqlens).max()) if len(seqlens) else 0
    return rows, width


class RowBatch:
    """The packed batch as [B, L] rows for sdpa: ids, positions, a [B, 1, L, L] bool mask (True = attend)
    and `index` [T], the flat row slot of each packed token."""

    def __init__(self, batch: PackedBatch, max_row_tokens: int):
        cu = batch.cu_seqlens.cpu().numpy().astype(np.int64)
        seqlens = np.diff(cu)
        rows, width = row_layout(seqlens, max_row_tokens)
        num_rows = int(rows.max()) + 1 if len(rows) else 0
        row_start = np.zeros(len(seqlens), np.int64)  # offset of each sequence inside its row
        for row in range(num_rows):
            members = np.flatnonzero(rows == row)
            row_start[members] = np.concatenate(([0], np.cumsum(seqlens[members])[:-1]))
        seq_of_token = np.repeat(np.arange(len(seqlens)), seqlens)
        offset = np.arange(cu[-1]) - cu[:-1][seq_of_token] + row_start[seq_of_token]
        index = torch.as_tensor(rows[seq_of_token] * width + offset, device=batch.input_ids.device)
        # Padding slots get segment ids of their own (negative), so they attend only to themselves
        # and no row of the mask is empty (an all-False row gives NaN in sdpa).
        segment = -1 - torch.arange(num_rows * width, device=index.device)
        segment[index] = torch.as_tensor(seq_of_token, device=index.device)
        segment = segment.view(num_rows, width)
        causal = torch.ones(width, width, dtype=torch.bool, device=index.device).tril()
        self.mask = ((segment[:, :, None] == segment[:, None, :]) & causal)[:, None]  # [B, 1, L, L]
        self.input_ids = batch.input_ids.new_zeros(num_rows * width).index_copy(0, index, batch.input_ids)
        self.input_ids = self.input_ids.view(num_rows, width)
        self.position_ids = batch.position_ids.new_zeros(num_rows * width).index_copy(0, index, batch.position_ids)
        self.position_ids = self.position_ids.view(num_rows, width)
        self.index = index


def uses_flash_attention(model) -> bool:
    return "flash" in str(getattr(model.config, "_attn_implementation", ""))


class Policy(nn.Module):
    """Wraps a causal LM with `.model` (decoder body) and `.lm_head`."""

    def __init__(self, model: nn.Module, *, max_row_tokens: int = 2048):
        super().__init__()
        self.model = model
        self.max_row_tokens = max_row_tokens

    def hidden(self, batch: PackedBatch) -> torch.Tensor:
        """Final hidden states of every packed token, [T, H]."""
        body = self.model.model
        if uses_flash_attention(self.model):
            return body(input_ids=batch.input_ids[None], position_ids=batch.position_ids[None],
                        use_cache=False).last_hidden_state[0]
        rows = RowBatch(batch, self.max_row_tokens)
        hidden = body(input_ids=rows.input_ids, position_ids=rows.position_ids, attention_mask=rows.mask,
                      use_cache=False).last_hidden_state  # [B, L, H]
        return hidden.reshape(-1, hidden.shape[-1]).index_select(0, rows.index)

    def forward(self, batch: PackedBatch, seq_weights: torch.Tensor, temperature: float = 1.0):
        """(sequence log-probs [N] without gradient, loss = −Σ_i seq_weights_i · logp_i) — the caller
        folds the normaliser into `seq_weights` (it is global across ranks, see `step.update`)."""
        hidden = self.hidden(batch)
        return sequence_logprobs_and_loss(hidden, self.model.lm_head.weight, batch.targets, batch.cu_seqlens,
                                          seq_weights, batch.loss_mask, normalize="none",
                                          temperature=temperature)
