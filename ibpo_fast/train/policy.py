"""The policy as the trainer sees it: a packed forward to final hidden states, then the fused loss.

The model's own full logits are never built: `Policy.forward` runs the decoder body
(`model.model(...).last_hidden_state`) and hands the LM head's weight to
`ops.sequence_logprobs_and_loss`. It is a module of its own so that, under FSDP2, the root's unshard
hooks fire around it and cover the LM head and embeddings (they live in the root's parameter group).

Packed attention (DESIGN.md §2): with flash-attn the packed batch is one row and restarting
`position_ids` give varlen attention. With sdpa (CPU) the sequences are laid out in rows of at most
`max_row_tokens` tokens, whole sequences only, with an explicit block-diagonal causal mask per row: one
row of T tokens would cost O(T²) attention and a [T, T] mask, most of it masked out.

Compute dtype: under FSDP2 the parameters arrive already cast (its MixedPrecisionPolicy); in one process
`autocast_dtype` (set by `distributed.parallelize`) autocasts the decoder body. The fused loss takes the
hidden states and the LM head in that one dtype (it accumulates in f32 itself) and runs outside autocast.

The update's forward/backward may run in chunks of whole sequences (`backward_in_chunks`), so that one
chunk's activations live at a time; the gradients accumulate.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from ibpo_fast.ops import sequence_logprobs_and_loss
from ibpo_fast.packing import PackedBatch, pack
from ibpo_fast.train.distributed import World, all_gather_arrays


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

    def __init__(self, model: nn.Module, *, max_row_tokens: int = 2048, autocast_dtype: torch.dtype | None = None):
        super().__init__()
        self.model = model
        self.max_row_tokens = max_row_tokens
        self.autocast_dtype = autocast_dtype

    def compute_context(self):
        """Autocast to `autocast_dtype` when set (one process, bf16 compute over f32 weights)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.model.lm_head.weight.device.type, dtype=self.autocast_dtype)

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
        with self.compute_context():
            hidden = self.hidden(batch)
        weight = self.model.lm_head.weight
        if self.autocast_dtype is not None:  # the final norm returns f32 under autocast
            hidden, weight = hidden.to(self.autocast_dtype), weight.to(self.autocast_dtype)
        return sequence_logprobs_and_loss(hidden, weight, batch.targets, batch.cu_seqlens, seq_weights,
                                          batch.loss_mask, normalize="none", temperature=temperature)


def chunk_bounds(lengths: np.ndarray, max_tokens: int) -> list[slice]:
    """Consecutive chunks of whole sequences of at most `max_tokens` tokens each (a longer sequence is a
    chunk of its own); one chunk when `max_tokens` is 0."""
    if max_tokens <= 0 or len(lengths) == 0:
        return [slice(0, len(lengths))]
    chunks, start, used = [], 0, 0
    for i, length in enumerate(lengths):
        if used and used + length > max_tokens:
            chunks.append(slice(start, i))
            start, used = i, 0
        used += length
    return chunks + [slice(start, len(lengths))]


def backward_in_chunks(policy: nn.Module, pairs: list, seq_weights: torch.Tensor, world: World,
                       max_tokens: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """loss = −Σ_i seq_weights_i · logp_i over `pairs` (prompt ids, response ids), backward included, in
    chunks of at most `max_tokens` tokens. Every rank runs as many chunks as the rank with the most (its
    extra chunks carry weight 0): FSDP2's all-gathers in each forward are collectives. Returns the
    sequence log-probs [N] and the loss, detached."""
    chunks = chunk_bounds(np.array([len(p) + len(r) for p, r in pairs]), max_tokens)
    count = len(chunks)
    if world.sharded and max_tokens > 0:  # with one chunk each the counts agree without asking
        count = int(all_gather_arrays(world, {"chunks": np.array([count])})["chunks"].max())
    seq_logps, loss = [], torch.zeros((), device=world.device)
    for index in range(count):
        chunk = chunks[index] if index < len(chunks) else slice(0, 1)
        weights = seq_weights[chunk] if index < len(chunks) else torch.zeros_like(seq_weights[:1])
        seq_logp, chunk_loss = policy(pack(pairs[chunk], device=world.device), weights)
        chunk_loss.backward()
        loss += chunk_loss.detach()
        if index < len(chunks):
            seq_logps.append(seq_logp.detach())
    return torch.cat(seq_logps), loss
