"""Fused per-sequence log-prob ops on packed rollouts, never materialising the [T, V] logits (DESIGN.md §3).

    from ibpo_fast.ops import weighted_sequence_loss
    loss = weighted_sequence_loss(hidden, lm_head.weight, targets, cu_seqlens, seq_weights, loss_mask)

``backend`` is "auto" (triton on CUDA, native on CPU when built, else torch), "torch", "triton", "native",
or a backend object (e.g. ``TorchBackend(token_chunk=64)`` to choose chunk sizes). ``native_available()``
says whether the native CPU kernels are built here.
"""
from __future__ import annotations

import torch

from . import _inputs
from ._autograd import RowLogprobs, RowWeightedSum
from ._backends import native_available, resolve_backend
from .reference import TorchBackend, naive_token_logprobs

__all__ = [
    "token_logprobs",
    "sequence_logprobs",
    "weighted_sequence_loss",
    "sequence_logprobs_and_loss",
    "TorchBackend",
    "naive_token_logprobs",
    "resolve_backend",
    "native_available",
]


def token_logprobs(hidden, weight, targets, *, temperature=1.0, backend="auto") -> torch.Tensor:
    """log_softmax(hidden @ weight.T / temperature)[t, targets[t]] as [T] f32; 0 where targets is -100."""
    _inputs.check_head(hidden, weight, targets, temperature)
    rows = _inputs.counted_rows(targets)
    logp = _row_logprobs(hidden, weight, rows, temperature, backend)
    return logp.new_zeros(hidden.shape[0]).index_put((rows.index,), logp)


def sequence_logprobs(hidden, weight, targets, cu_seqlens, loss_mask=None, *, temperature=1.0, backend="auto"):
    """Sum of the counted token log-probs of each sequence -> [N] f32 (0 for a sequence with none)."""
    _inputs.check_head(hidden, weight, targets, temperature)
    _inputs.check_segments(hidden.shape[0], hidden.device, cu_seqlens, loss_mask)
    rows = _inputs.counted_rows(targets, loss_mask, cu_seqlens)
    logp = _row_logprobs(hidden, weight, rows, temperature, backend)
    return logp.new_zeros(cu_seqlens.numel() - 1).index_add(0, rows.sequence, logp)


def weighted_sequence_loss(
    hidden, weight, targets, cu_seqlens, seq_weights, loss_mask=None, *, normalize="tokens", temperature=1.0,
    backend="auto",
) -> torch.Tensor:
    """-sum_i w_i * seqlogp_i / Z as a [] f32 tensor; see ``sequence_logprobs_and_loss``."""
    return sequence_logprobs_and_loss(
        hidden, weight, targets, cu_seqlens, seq_weights, loss_mask,
        normalize=normalize, temperature=temperature, backend=backend,
    )[1]


def sequence_logprobs_and_loss(
    hidden, weight, targets, cu_seqlens, seq_weights, loss_mask=None, *, normalize="tokens", temperature=1.0,
    backend="auto",
):
    """(sequence log-probs [N] without gradient, weighted loss []) from one pass over the vocabulary.

    Z is sum_i |w_i| * n_i ("tokens", n_i = counted tokens of i), sum_i |w_i| ("sequences") or 1 ("none");
    Z = 0 gives a zero loss and zero gradients.
    """
    _inputs.check_head(hidden, weight, targets, temperature)
    _inputs.check_segments(hidden.shape[0], hidden.device, cu_seqlens, loss_mask)
    num_sequences = cu_seqlens.numel() - 1
    _inputs.check_loss_args(num_sequences, hidden.device, seq_weights, normalize)
    rows = _inputs.counted_rows(targets, loss_mask, cu_seqlens)
    seq_weights = seq_weights.detach().double()
    if normalize == "tokens":
        tokens_per_sequence = torch.bincount(rows.sequence, minlength=num_sequences).double()
        normaliser = (seq_weights.abs() * tokens_per_sequence).sum()
    elif normalize == "sequences":
        normaliser = seq_weights.abs().sum()
    else:
        normaliser = torch.ones((), dtype=torch.float64, device=hidden.device)
    scale = torch.where(normaliser > 0, 1.0 / normaliser.clamp(min=1e-300), torch.zeros_like(normaliser))
    coef = (-seq_weights * scale).index_select(0, rows.sequence)  # [R] d loss / d logp_r
    backend = resolve_backend(backend, hidden)
    loss, logp = RowWeightedSum.apply(
        hidden.index_select(0, rows.index), weight, rows.targets, coef, 1.0 / temperature, backend
    )
    return logp.new_zeros(num_sequences).index_add(0, rows.sequence, logp), loss


def _row_logprobs(hidden, weight, rows, temperature, backend):
    backend = resolve_backend(backend, hidden)
    return RowLogprobs.apply(hidden.index_select(0, rows.index), weight, rows.targets, 1.0 / temperature, backend)
