"""Measured CPU tensor memory of a training step and of generation, by torch's MemTracker (a dispatch mode
that follows every tensor's storage: the CPU counterpart of CUDA's allocator statistics), and what the
planner (`ibpo_fast.train.plan`) says for the same shapes."""
from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch.distributed._tools.mem_tracker import MemTracker, _MemRefType

from ibpo_fast.packing import pack
from ibpo_fast.train import plan
from ibpo_fast.train.distributed import World, parallelize
from ibpo_fast.train.policy import Policy, RowBatch

CPU = torch.device("cpu")


def make_policy(model, *, compute_dtype, checkpointing: bool, row_tokens: int) -> Policy:
    """The trainer's policy in one process: f32 master weights with autocast for bf16, or a model in bf16
    (`model` already cast): the activations FSDP2's MixedPrecisionPolicy produces, since it casts the weights."""
    policy = Policy(model, max_row_tokens=row_tokens)
    return parallelize(policy, World(0, 1, CPU), compute_dtype=compute_dtype, activation_checkpointing=checkpointing)


def random_pairs(vocab: int, num: int, prompt: int, response: int, seed: int = 0) -> list:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(4, vocab, (prompt,), generator=g).tolist(), torch.randint(4, vocab, (response,), generator=g).tolist())
            for _ in range(num)]


def training_step(policy: Policy, pairs: list) -> dict[str, int]:
    """Tensor bytes of a steady-state step (the optimizer state exists: one step was taken before): after
    the forward (activations, parameters and optimizer state excluded) and at the step's peak (all)."""
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-6)
    batch = pack(pairs)
    weights = torch.full((len(pairs),), 1.0 / int(batch.loss_mask.sum()))
    for tracked in (False, True):
        tracker = MemTracker()
        if tracked:
            tracker.track_external(policy, optimizer)
        with tracker if tracked else contextlib.nullcontext():
            _, loss = policy(batch, weights)
            after_forward = tracker.get_tracker_snapshot("current")[CPU] if tracked else None
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return {"activations": after_forward[_MemRefType.ACT], "peak": tracker.get_tracker_snapshot("peak")[CPU]["Total"]}


def planned_training(arch: plan.Architecture, policy: Policy, pairs: list, b: int, *, checkpointing: bool) -> dict:
    """The planner's figures, one process, for exactly this batch on the CPU's sdpa rows: the activations
    after the forward, and the step's peak (f32 master weights and moments + the larger of the update and
    the optimizer step)."""
    batch = pack(pairs)
    rows = RowBatch(batch, policy.max_row_tokens)
    tokens, width = rows.input_ids.numel(), rows.input_ids.shape[1]  # padded row slots count as tokens
    learned = int(batch.loss_mask.sum())
    autocast = policy.autocast_dtype is not None
    shape = dict(checkpointing=checkpointing, attention="sdpa", autocast=autocast, row_tokens=width)
    activations = plan.activation_bytes(arch, tokens, b, **shape)
    saved_head = (learned + arch.vocab_size) * arch.hidden_size * b  # d_hidden, d_weight (ops, saved)
    # autocast's cast projection weights stay alive through the saved tensors, which checkpointed blocks
    # do not keep; the LM head's cast lives during the loss only
    weight_copies = plan.autocast_copy_bytes(arch, b) if autocast else 0
    kept_copies = weight_copies - arch.vocab_size * arch.hidden_size * b if autocast and not checkpointing else 0
    N = arch.num_parameters
    update = (4 * N + weight_copies + activations + plan.recompute_bytes(arch, tokens, b, **shape)
              + plan.backward_temporary_bytes(arch, tokens, b) + plan.loss_head_bytes(arch, learned, b))
    step = 4 * N + int(plan.ADAMW_STEP_COPIES * 4 * N)
    return {"activations": activations + saved_head + kept_copies, "peak": 12 * N + max(update, step)}


def relative_error(planned: float, measured: float) -> float:
    return float(np.abs(planned - measured) / measured)
