"""One token per row, drawn by inverse-CDF from softmax(logits / temperature), with counter-based uniforms.

Every sample has a 64-bit key, derived from its prompt's seed and its sample index; the uniform behind its
token at response position t is SplitMix64(key + (t + 1) · γ), the top 53 bits as a float64 in (0, 1). So
a sample's tokens depend on its prompt, its seed and the model alone, never on which rows share its
batch, how many rows a KV budget allows, when finished rows leave, or how many ranks split the prompts:
every engine (the lean decode loop, HF `generate`) draws the same tokens, up to float rounding of the
logits (a draw flips only when a uniform lands within rounding of a CDF boundary).

Inverse-CDF needs one uniform per row and step (Gumbel-max needs one per vocabulary entry: on a CPU,
drawing those was most of a decode step at V = 32,000). The CDF is accumulated in float64: a float32
running sum over 49k entries misplaces each boundary by ~1e-7 · its value, biasing every token whose
probability is that small.

The recorded log-prob is `log_softmax(logits / temperature)` at the drawn token, the quantity the trainer
recomputes. With top_p < 1 the draw is from the nucleus (HF's `TopPLogitsWarper`) renormalised, while
the log-prob stays the untruncated one.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import TopPLogitsWarper

from ibpo_fast.seeding import derive_seed

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # SplitMix64's increment


def sample_keys(prompt_seeds: Sequence[int], n: int) -> np.ndarray:
    """[len(prompt_seeds) · n] uint64 keys, prompt-major: sample j of prompt i is (prompt_seeds[i], j)."""
    return np.array([derive_seed(seed, j) for seed in prompt_seeds for j in range(n)], np.uint64)


def uniforms(keys: np.ndarray, position: int | np.ndarray) -> np.ndarray:
    """Float64 uniforms in (0, 1), one per key, for response position(s) `position` (SplitMix64's output
    function on the counter key + (position + 1) · γ; numpy's uint64 arithmetic wraps, as it must)."""
    with np.errstate(over="ignore"):
        z = keys + (np.asarray(position, np.uint64) + np.uint64(1)) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53


class Draw:
    """`draw(logits [B, V], u [B] float64) -> (token [B] int64, logp [B] float32)`, the tempered (and
    top-p truncated) softmax sampled at u; logp is the drawn token's untruncated tempered log-prob."""

    def __init__(self, temperature: float = 1.0, top_p: float = 1.0):
        self.temperature = temperature
        self.top_p = TopPLogitsWarper(top_p) if top_p < 1 else None

    def __call__(self, logits: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logp = torch.log_softmax(logits.float() / self.temperature, dim=-1)  # [B, V]
        kept = self.top_p(None, logp) if self.top_p else logp
        cdf = kept.double().exp_().cumsum_(dim=-1)  # [B, V]
        total = cdf[:, -1:]
        # The first entry whose CDF exceeds u · total (zero-probability entries are never drawn); at most the
        # last entry of positive probability, where u · total rounds up to the total.
        token = torch.minimum(torch.searchsorted(cdf, u[:, None] * total, right=True),
                              torch.searchsorted(cdf, total.contiguous()))
        return token.squeeze(1), logp.gather(1, token).squeeze(1)
