"""ibpo_fast: inference-budget-constrained policy optimisation, fast (see README.md and DESIGN.md).

The exports load on first use (PEP 562), so `import ibpo_fast` and the command line stay free of torch
until a name that needs it is touched."""
from ibpo_fast._lazy import lazy_exports

_EXPORTS = {"token_logprobs": "ops", "sequence_logprobs": "ops", "weighted_sequence_loss": "ops",
            "PackedBatch": "packing", "pack": "packing"}

__all__ = list(_EXPORTS)
__version__ = "0.1.0"

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
