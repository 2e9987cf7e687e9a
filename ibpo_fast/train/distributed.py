"""Processes, sharding and collectives: FSDP2 under torchrun (NCCL on GPU, gloo on CPU), or one process.

    torchrun --nproc_per_node=2 -m ibpo_fast.train --preset tiny      # or python -m torch.distributed.run

Prompts are sharded across ranks (rank r samples prompts [r·P/W, (r+1)·P/W) of each step). The budget is
global: the small per-sample arrays (reward, group, prompt id, token count) are all-gathered, every rank
solves the same ILP over all W·P·n samples and keeps the weights of its own samples, so the constraint
Σ w_i 1{g_i = k} ≤ q_k · m · P holds for the whole step, not per rank. The loss normaliser (selected
tokens) is global for the same reason, so W processes take the same update as one.

Mixed precision as torchtitan does it: the parameters (master weights) and the optimizer state stay f32;
with `dtype: bfloat16` the compute is bf16. Under FSDP2 that is `MixedPrecisionPolicy(param_dtype=bf16,
reduce_dtype=f32)` (gathered weights in bf16, gradients reduce-scattered and kept in f32); in one process,
`torch.autocast` (matmuls in bf16, norms and the residual stream in f32, so the two differ by rounding).

Sampling uses the trained model itself, with no second copy (`GenerationWeights`). Under FSDP2 it
all-gathers every module once (`unshard`, in the compute dtype) and keeps the weights gathered for the
whole generation phase (`set_reshard_after_forward(False)`): `generate` stops at a data-dependent length
on each rank, and per-layer all-gathers inside it would be collectives the ranks call different numbers
of times. The hooks still run per layer but only find the weights already gathered; the phase ends with
`reshard`, freeing the gathered copy before the update.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.size > 1


def init(device: str) -> World:
    """Join the torchrun group when launched by torchrun with more than one process, else run alone."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but CUDA is not available")
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World(0, 1, torch.device(device))
    if device == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    place = torch.device("cuda", torch.cuda.current_device()) if device == "cuda" else torch.device("cpu")
    return World(dist.get_rank(), size, place)


def shutdown(world: World) -> None:
    if world.sharded and dist.is_initialized():
        dist.destroy_process_group()


def parallelize(policy: torch.nn.Module, world: World, *, compute_dtype: torch.dtype,
                activation_checkpointing: bool = False) -> torch.nn.Module:
    """Per-block activation checkpointing (optional, any world size), then the compute dtype: FSDP2 with one
    `fully_shard` per decoder layer and one for the root (embeddings, final norm, LM head) under torchrun,
    autocast in one process. The parameters must be f32 (the master weights)."""
    layers = policy.model.model.layers
    if activation_checkpointing:  # torchtitan: each block keeps only its input; backward recomputes it
        for index, layer in enumerate(layers):
            layers[index] = checkpoint_wrapper(layer)
    if not world.sharded:
        policy.autocast_dtype = None if compute_dtype == torch.float32 else compute_dtype
        return policy
    precision = MixedPrecisionPolicy() if compute_dtype == torch.float32 else MixedPrecisionPolicy(
        param_dtype=compute_dtype, reduce_dtype=torch.float32)
    for layer in layers:
        fully_shard(layer, mp_policy=precision, reshard_after_forward=True)
    # The root's floating input is the per-sequence loss weights: they stay f32 (W·w_i/Z in bf16 would
    # move each sequence's gradient by up to 2^-9).
    root_precision = dataclasses.replace(precision, cast_forward_inputs=False)
    fully_shard(policy, mp_policy=root_precision, reshard_after_forward=False)
    return policy


class GenerationWeights:
    """`with generation_weights():` the trained model, ready to generate: eval mode, gathered once under
    FSDP2, autocast in one process with bf16 compute; on exit back to train mode (and resharded).
    Collective under FSDP2: every rank enters it."""

    def __init__(self, policy: torch.nn.Module, world: World):
        self.policy, self.world = policy, world

    @contextlib.contextmanager
    def __call__(self):
        policy = self.policy
        fsdp_modules = [module for module in policy.modules() if isinstance(module, FSDPModule)]
        training = policy.training
        policy.eval()
        try:
            if fsdp_modules:
                # The root must be lazily initialised before any layer's hook runs, or the first layer
                # to run claims to be the root (the first step may generate before any training forward).
                policy._get_fsdp_state()._lazy_init()
                for module in fsdp_modules:
                    module.set_reshard_after_forward(False, recurse=False)
                handles = [module.unshard(async_op=True) for module in fsdp_modules]  # all in flight at once
                for handle in handles:
                    handle.wait()
            with policy.compute_context():
                yield policy.model
        finally:
            for module in fsdp_modules:
                module.reshard()
                # back to `parallelize`'s setting: layers reshard after forward, the root does not
                module.set_reshard_after_forward(module is not policy, recurse=False)
            policy.train(training)


def all_gather_arrays(world: World, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Concatenate each array over ranks, in rank order (a no-op with one process)."""
    if not world.sharded:
        return arrays
    gathered: list[dict] = [None] * world.size
    dist.all_gather_object(gathered, arrays)
    return {key: np.concatenate([part[key] for part in gathered]) for key in arrays}


def any_rank(world: World, flag: bool) -> bool:
    """True on every rank when it is True on some rank (Ctrl-C reaches ranks at different moments)."""
    if not world.sharded:
        return flag
    value = torch.tensor([float(flag)], device=world.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def barrier(world: World) -> None:
    if world.sharded:
        dist.barrier()
