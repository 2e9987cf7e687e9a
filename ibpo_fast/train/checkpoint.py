"""Checkpoints with exact resume, and the final model file that `ibpo-fast eval` reads.

`out/checkpoint.pt` holds everything the next step depends on: full (unsharded) model and optimizer
state, the step (which is also the data position: a step's prompts and sampling seeds derive from
(seed, step) alone), the budget's sample buffer with its counters, and the torch / numpy / python RNG
states. Full state dicts are gathered collectively and written by rank 0 (write to a temporary file,
then rename: a Ctrl-C during the write cannot leave a torn checkpoint). `out/model.pt` holds the config
and the model weights only.
"""
from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path

import numpy as np
import torch
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_state_dict,
                                                     set_state_dict)

from ibpo_fast.train.distributed import World

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _full_state(policy, optimizer):
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_state_dict(policy, optimizer, options=options)


def save(out: Path, *, policy, optimizer, buffer, step: int, cfg, world: World) -> None:
    """Collective: every rank calls it; rank 0 writes `out/checkpoint.pt`."""
    model_state, optim_state = _full_state(policy, optimizer)
    if world.is_main:
        _atomic_save({"step": step, "model": model_state, "optimizer": optim_state, "buffer": buffer.state_dict(),
                      "rng": _rng_state(), "config": dataclasses.asdict(cfg)}, out / CHECKPOINT)


def load(out: Path, *, policy, optimizer, buffer) -> int:
    """Restore everything `save` wrote (every rank reads the file); returns the step to run next."""
    state = load_file(out / CHECKPOINT)
    set_state_dict(policy, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                   options=StateDictOptions(full_state_dict=True))
    buffer.load_state_dict(state["buffer"])
    _set_rng_state(state["rng"])
    return int(state["step"])


def save_model(out: Path, *, policy, cfg, world: World) -> None:
    """Collective: the trained weights and the config, for `ibpo-fast eval`."""
    weights = get_model_state_dict(policy, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if world.is_main:
        _atomic_save({"config": dataclasses.asdict(cfg), "model": _bare(weights)}, out / MODEL)


def _bare(policy_weights: dict) -> dict:
    """The model's own state dict from the `Policy` wrapper's (keys prefixed "model.")."""
    return {key.removeprefix("model."): value for key, value in policy_weights.items()}


def load_file(path: str | Path) -> dict:
    """A model.pt or checkpoint.pt as saved (on the CPU)."""
    return torch.load(path, map_location="cpu", weights_only=False)


def model_weights(state: dict) -> dict:
    """The bare model's state dict from a loaded model.pt or checkpoint.pt (`load_file`)."""
    return state["model"] if "step" not in state else _bare(state["model"])
