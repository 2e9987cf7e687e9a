"""Everything a run holds, built once from the config: model, policy (FSDP2-sharded under torchrun),
optimizer, sampler, task, the budget's sample buffer and the metric sinks."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch

from ibpo_fast import budget
from ibpo_fast.models import load_model
from ibpo_fast.rollout import HFSampler, make_task
from ibpo_fast.train import checkpoint, distributed, run_folder
from ibpo_fast.train.config import TrainConfig
from ibpo_fast.train.metrics import MetricLogger
from ibpo_fast.train.policy import Policy


@dataclass
class Run:
    cfg: TrainConfig
    world: distributed.World
    tokenizer: object
    policy: torch.nn.Module
    optimizer: torch.optim.Optimizer
    generation_weights: distributed.GenerationWeights
    sampler: HFSampler
    task: object
    buffer: budget.SampleBuffer
    out: Path
    start_step: int
    metrics: MetricLogger
    warmup_metrics: MetricLogger
    stopped_at: int | None = None  # the step a Ctrl-C (interrupted) or `stop_after` stopped the run at
    interrupted: bool = False


def build(cfg: TrainConfig) -> Run:
    world = distributed.init(cfg.device)
    torch.manual_seed(cfg.seed)
    compute_dtype, task = cfg.torch_dtype, make_task(cfg.task, cfg.levels)  # the inputs first: no folder for bad ones
    # f32 master weights whatever the compute dtype (a bf16 weight loses updates below half an ulp)
    model, tokenizer = load_model(cfg.model, dtype=torch.float32, device=world.device, seed=cfg.seed)
    if cfg.init_from:
        checkpoint.SavedWeights(cfg.init_from).load_into(model)
    if world.device.type == "cuda" and compute_dtype != torch.float32 and importlib.util.find_spec("flash_attn"):
        # One packed row, sequences told apart by position_ids (varlen kernels); untested here (no GPU).
        model.set_attn_implementation("flash_attention_2")
    policy = Policy(model, max_row_tokens=cfg.max_row_tokens)
    policy = distributed.parallelize(policy, world, compute_dtype=compute_dtype,
                                     activation_checkpointing=cfg.activation_checkpointing)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sampler = HFSampler(model, tokenizer, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                        kv_cache_gib=cfg.generate_kv_gib, engine=cfg.generate_engine, progress=False)
    buffer = budget.SampleBuffer(cfg.accumulate_steps)
    out = run_folder.prepare(cfg.out, resume=cfg.resume, overwrite=cfg.overwrite, is_main=world.is_main)
    resuming = cfg.resume and checkpoint.exists(out)
    start = checkpoint.load(out, policy=policy, optimizer=optimizer, buffer=buffer, cfg=cfg,
                            world=world) if resuming else 0
    logger = lambda name, first: MetricLogger(  # noqa: E731
        out / name, enabled=world.is_main, resume_step=first if resuming else None, tensorboard=cfg.tensorboard)
    return Run(cfg, world, tokenizer, policy, optimizer, distributed.GenerationWeights(policy, world), sampler, task,
               buffer, out, start,
               logger("metrics.jsonl", start - cfg.warmup_steps), logger("warmup.jsonl", start))
