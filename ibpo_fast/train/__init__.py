"""The IBPO trainer: config, loop, FSDP2 sharding, checkpoints, metrics (DESIGN.md §5)."""
from ibpo_fast.train.config import EvalConfig, TrainConfig, load_config
from ibpo_fast.train.loop import train

__all__ = ["TrainConfig", "EvalConfig", "load_config", "train"]
