"""Processes, sharding and collectives: FSDP2 under torchrun (NCCL on GPU, gloo on CPU), or one process.

    torchrun --nproc_per_node=2 -m ibpo_fast.train --preset tiny      # or python -m torch.distributed.run

Prompts are sharded across ranks (rank r samples prompts [r·P/W, (r+1)·P/W) of each step). The budget is
global: the small per-sample arrays (reward, group, prompt id, token count) are all-gathered, every rank
solves the same ILP over all W·P·n samples and keeps the weights of its own samples, so the constraint
Σ w_i 1{g_i = k} ≤ q_k · m · P holds for the whole step, not per rank. The loss normaliser (selected
tokens) is global for the same reason, so W processes take the same update as one.

Sampling under FSDP uses a full, unsharded replica of the model (`SamplerReplica`) refreshed from the
sharded weights before each step: `generate` stops at a data-dependent length on each rank, which would
desynchronise the per-layer all-gathers of a sharded model.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import fully_shard


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


def parallelize(policy: torch.nn.Module, world: World) -> torch.nn.Module:
    """FSDP2: one `fully_shard` per decoder layer, then the root (embeddings, final norm, LM head)."""
    if not world.sharded:
        return policy
    for layer in policy.model.model.layers:
        fully_shard(layer)
    fully_shard(policy)
    return policy


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


class SamplerReplica:
    """The model that generates. Without sharding it is the trained model itself; under FSDP a plain
    copy whose weights `refresh` gathers from the shards (collective: every rank calls it)."""

    def __init__(self, policy: torch.nn.Module, model: torch.nn.Module, world: World):
        self.policy, self.world = policy, world
        self.model = copy.deepcopy(model) if world.sharded else model  # copied before fully_shard

    def refresh(self) -> torch.nn.Module:
        if self.world.sharded:
            full = get_model_state_dict(self.policy, options=StateDictOptions(full_state_dict=True))
            self.model.load_state_dict({key.removeprefix("model."): value for key, value in full.items()})
        self.model.eval()
        return self.model
