"""Sharded checkpoints with exact resume on any number of processes, and the model file `ibpo-fast eval` reads.

`out/checkpoint/` is a `torch.distributed.checkpoint` (DCP) folder: every rank writes its own shards of
the model and of the optimizer state (f32 master weights, AdamW moments), and DCP's metadata lets a run on
another number of processes load them resharded. Beside them, in the same folder:
- `trainer.pt` (rank 0): the step (also the data position: a step's prompts and sampling seeds derive
  from (seed, step) alone), the budget's sample buffer (global, the same on every rank), the config and
  the world size;
- `rng_<rank>.pt`: each rank's torch / numpy / python (and CUDA) RNG state. Resumed on W' processes,
  rank r takes saved rank r mod W. (The trainer draws nothing from these streams itself, every draw is
  seeded per (seed, step, item), so a resume on another world size is exact as well.)
A save writes `checkpoint.tmp/` and swaps it in (the previous folder survives until then): a Ctrl-C or a
crash during a save cannot leave a torn checkpoint. Every rank must see the same `out` (a shared folder).

`out/model.pt` (written once at the end by rank 0): the config and the full f32 model weights in one file,
the simplest thing for `ibpo-fast eval` and `--init_from` to read; both also take a checkpoint folder (a
run stopped early) or a run folder (its model.pt, else its checkpoint).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_state_dict,
                                                     set_state_dict)

from ibpo_fast.errors import InputError
from ibpo_fast.train.distributed import World, barrier

CHECKPOINT = "checkpoint"
MODEL = "model.pt"
TRAINER = "trainer.pt"
POLICY_PREFIX = "model."  # the `Policy` wrapper's state-dict keys are the bare model's with this prefix
# Fields a resume may change: where and how the run executes, how long it runs, how batches are cut.
# Every other field changes what the run computes and must equal the saved run's.
RESUMABLE_CHANGES = frozenset({
    "out", "resume", "stop_after", "steps", "progress", "tensorboard", "checkpoint_every", "device",
    "generate_kv_gib", "generate_engine", "update_tokens",
    "activation_checkpointing", "max_row_tokens"})


def exists(out: Path) -> bool:
    return _folder(Path(out)) is not None


def save(out: Path, *, policy, optimizer, buffer, step: int, cfg, world: World) -> None:
    """Collective: every rank writes its shards and RNG state into `out/checkpoint/`."""
    final, tmp, old = (out / (CHECKPOINT + suffix) for suffix in ("", ".tmp", ".old"))
    if world.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(world)
    model_state, optim_state = get_state_dict(policy, optimizer)
    with _single_process_ok():
        dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=tmp, no_dist=not world.sharded)
    torch.save(_rng_state(), tmp / f"rng_{world.rank}.pt")
    if world.is_main:
        torch.save({"step": step, "buffer": buffer.state_dict(), "config": dataclasses.asdict(cfg),
                    "world_size": world.size}, tmp / TRAINER)
    barrier(world)  # every rank's files are written
    if world.is_main:
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    barrier(world)


def load(out: Path, *, policy, optimizer, buffer, cfg, world: World) -> int:
    """Collective: restore what `save` wrote, resharded to this world; returns the step to run next.
    Raises ValueError when `cfg` differs from the saved config in a field that changes the run's meaning."""
    folder = _folder(out)
    trainer = torch.load(folder / TRAINER, map_location="cpu", weights_only=False)
    check_resumable(saved_config(trainer["config"]), cfg, folder)
    model_state, optim_state = get_state_dict(policy, optimizer)
    state = {"model": model_state, "optimizer": optim_state}
    with _single_process_ok():
        dcp.load(state, checkpoint_id=folder, no_dist=not world.sharded)
    set_state_dict(policy, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    buffer.load_state_dict(trainer["buffer"])
    _set_rng_state(torch.load(folder / f"rng_{world.rank % trainer['world_size']}.pt", weights_only=False))
    return int(trainer["step"])


def saved_config(saved: dict) -> dict:
    """A saved config with renamed fields in today's names: `anchor_forced` (bool) is `anchor_weight` 1.0 / 0.0."""
    saved = dict(saved)
    if "anchor_forced" in saved:
        saved["anchor_weight"] = float(saved.pop("anchor_forced"))
    return saved


def check_resumable(saved: dict, cfg, folder) -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(cfg) if f.default is not dataclasses.MISSING}
    current = dataclasses.asdict(cfg)
    changed = sorted(name for name, value in current.items()
                     if name not in RESUMABLE_CHANGES and saved.get(name, defaults.get(name)) != value)
    if changed:
        was = ", ".join(f"{name}={saved.get(name, defaults.get(name))!r}" for name in changed)
        now = ", ".join(f"{name}={current[name]!r}" for name in changed)
        raise ValueError(f"resume: {folder} was saved with {was}, the config has {now}; these change the "
                         f"run's meaning (set them back, or start a new run in another --out)")


def save_model(out: Path, *, policy, cfg, world: World) -> None:
    """Collective: the full trained weights and the config, one file written by rank 0."""
    weights = get_model_state_dict(policy, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if world.is_main:
        tmp = out / (MODEL + ".tmp")
        torch.save({"config": dataclasses.asdict(cfg), "model": bare_keys(weights)}, tmp)
        os.replace(tmp, out / MODEL)


class SavedWeights:
    """The trained weights and config of a model.pt, a checkpoint folder or a run folder (its model.pt,
    else its checkpoint), read once; `load_into` fills a freshly built model of that config."""

    def __init__(self, path: str | Path):
        path = Path(path)
        if path.is_dir() and (path / MODEL).is_file():
            path = path / MODEL
        self.path, self._file = path, None
        if path.is_file():
            self._file = torch.load(path, map_location="cpu", weights_only=False)
            self.config = saved_config(self._file["config"])
        elif (folder := _folder(path) or _folder(path.parent, path.name)) is not None:
            self.path = folder
            self.config = saved_config(torch.load(folder / TRAINER, map_location="cpu", weights_only=False)["config"])
        else:
            raise InputError(f"{str(path)!r} is neither a model file, a checkpoint folder nor a run folder "
                             f"with {MODEL} or {CHECKPOINT}/")

    def load_into(self, model: torch.nn.Module) -> None:
        if self._file is not None:
            model.load_state_dict(self._file["model"])
            return
        # DCP loads in place into the tensors it is handed, resharding from whatever world size saved them.
        state = {"model": {POLICY_PREFIX + key: value for key, value in model.state_dict().items()}}
        with _single_process_ok():
            dcp.load(state, checkpoint_id=self.path, no_dist=True)


def bare_keys(policy_weights: dict) -> dict:
    """The bare model's state dict from the `Policy` wrapper's (keys prefixed `POLICY_PREFIX`)."""
    return {key.removeprefix(POLICY_PREFIX): value for key, value in policy_weights.items()}


def _folder(out: Path, name: str = CHECKPOINT) -> Path | None:
    """The checkpoint folder in `out`, or the previous one when a save died between its two renames."""
    for folder in (out / name, out / (name + ".old")):
        if (folder / TRAINER).is_file():
            return folder
    return None


@contextlib.contextmanager
def _single_process_ok():
    """DCP warns on every single-process save or load; here they are meant."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # this rank's device
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
