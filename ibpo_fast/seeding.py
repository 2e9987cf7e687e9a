"""Seeds of every random stream of a run, derived in one place.

A stream is named by the run's seed and a few keys (what it is for, the step, a prompt index...);
`derive_seed` hashes them with numpy's `SeedSequence`, so any non-negative seed and index works (no
overflow, as with the former ``seed * 1_000_003 + step`` arithmetic) and distinct names give
independent streams.
"""
from __future__ import annotations

import zlib

import numpy as np


def derive_seed(*keys: int | str) -> int:
    """A 63-bit seed for the stream named by ``keys`` (non-negative ints or strings), e.g.
    ``derive_seed(cfg.seed, "sample", step, first_prompt)``; the same keys always give the same seed."""
    entropy = []
    for key in keys:
        if isinstance(key, str):
            entropy.append(zlib.crc32(key.encode()))
        elif isinstance(key, (int, np.integer)) and not isinstance(key, bool) and key >= 0:
            entropy.append(int(key))
        else:
            raise ValueError(f"seed keys must be non-negative ints or strings, got {key!r}")
    high, low = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
    return (int(high) << 31) ^ int(low)
