"""Everything a run holds, built once from the config: model, policy (FSDP2-sharded under torchrun),
optimizer, sampler, task, the budget's sample buffer and the metric sinks."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch

from ibpo_fast import budget
from ibpo_fast.models import load_model, trial_marker_ids
from ibpo_fast.rollout import ArithmeticTask, HFSampler, JsonlMathTask, ReasoningGymTask
from ibpo_fast.train import checkpoint, distributed
from ibpo_fast.train.config import TrainConfig
from ibpo_fast.train.metrics import MetricLogger
from ibpo_fast.train.policy import Policy


def make_task(spec: str, levels=(1, 2, 3)):
    """"arithmetic", "jsonl:PATH" or "reasoning_gym:NAME"."""
    kind, _, arg = spec.partition(":")
    if kind == "arithmetic":
        return ArithmeticTask(levels=tuple(levels))
    if kind == "jsonl" and arg:
        return JsonlMathTask(arg)
    if kind == "reasoning_gym" and arg:
        return ReasoningGymTask(arg)
    raise ValueError(f"task must be 'arithmetic', 'jsonl:PATH' or 'reasoning_gym:NAME', got {spec!r}")


@dataclass
class Run:
    cfg: TrainConfig
    world: distributed.World
    tokenizer: object
    policy: torch.nn.Module
    optimizer: torch.optim.Optimizer
    replica: distributed.SamplerReplica
    sampler: HFSampler
    task: object
    marker: list[int]
    buffer: budget.SampleBuffer
    out: Path
    start_step: int
    metrics: MetricLogger
    warmup_metrics: MetricLogger


def build(cfg: TrainConfig) -> Run:
    world = distributed.init(cfg.device)
    torch.manual_seed(cfg.seed)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.dtype]
    model, tokenizer = load_model(cfg.model, dtype=dtype, device=world.device, seed=cfg.seed)
    if cfg.init_from:
        model.load_state_dict(checkpoint.model_weights(checkpoint.load_file(cfg.init_from)))
    if world.device.type == "cuda" and dtype != torch.float32 and importlib.util.find_spec("flash_attn"):
        # One packed row, sequences told apart by position_ids (varlen kernels); untested here (no GPU).
        model.set_attn_implementation("flash_attention_2")
    policy = Policy(model, max_row_tokens=cfg.max_row_tokens)
    replica = distributed.SamplerReplica(policy, model, world)  # copied before sharding
    policy = distributed.parallelize(policy, world)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sampler = HFSampler(replica.model, tokenizer, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                        kv_cache_gib=cfg.generate_kv_gib, engine=cfg.generate_engine, progress=False)
    buffer = budget.SampleBuffer(cfg.accumulate_steps)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    resuming = cfg.resume and (out / checkpoint.CHECKPOINT).exists()
    start = checkpoint.load(out, policy=policy, optimizer=optimizer, buffer=buffer) if resuming else 0
    logger = lambda name, first: MetricLogger(  # noqa: E731
        out / name, enabled=world.is_main, resume_step=first if resuming else None, tensorboard=cfg.tensorboard)
    return Run(cfg, world, tokenizer, policy, optimizer, replica, sampler, make_task(cfg.task, cfg.levels),
               trial_marker_ids(tokenizer), buffer, out, start,
               logger("metrics.jsonl", start - cfg.warmup_steps), logger("warmup.jsonl", start))
