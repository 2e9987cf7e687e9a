"""The IBPO trainer: config, loop, FSDP2 sharding, checkpoints, metrics (DESIGN.md §5).

The exports load on first use (PEP 562): the configs need no torch, the loop does."""
from ibpo_fast._lazy import lazy_exports

_EXPORTS = {"TrainConfig": "config", "EvalConfig": "config", "load_config": "config", "train": "loop"}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
