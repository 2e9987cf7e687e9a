"""ibpo_fast: inference-budget-constrained policy optimisation, fast (see README.md and DESIGN.md)."""
from .ops import sequence_logprobs, token_logprobs, weighted_sequence_loss
from .packing import PackedBatch, pack

__all__ = ["token_logprobs", "sequence_logprobs", "weighted_sequence_loss", "PackedBatch", "pack"]
__version__ = "0.1.0"
