"""Grouper throughput: numba kernels vs the numpy twin of the same computation, results checked equal.

Responses as the trainer groups them: n texts (20-200 bytes of arithmetic-like characters) with 0-4
`[TRIAL]` markers dropped into each, packed as UTF-8 bytes with offsets (`grouping.encode_texts`);
P = n / 8 prompts, K = 2. Parts timed: ``count_markers`` (the trial count of every response),
``statistics`` (counts, means, CSR rows), and ``grouper`` = count + ``assign`` + statistics, the per-step
work of the trainer after the texts are encoded; ``encode`` (Python: joining the texts' UTF-8 bytes) is
timed once, for scale. Median of repeats.

    python -m benchmarks.grouper --out bench_out
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.common import median_time, plot_lines, write_results
from ibpo_fast import grouping

SIZES = (10_000, 100_000, 1_000_000)
COLUMNS = ["n", "bytes", "part", "numba_ms", "numpy_ms", "speedup", "numba_Msamples_s", "equal", "encode_ms"]
ALPHABET = np.frombuffer(b"0123456789+=%[]/ \\boxed{}TRIAL", np.uint8)


def make_texts(num_texts, rng):
    lengths = rng.integers(20, 201, num_texts)
    data = rng.choice(ALPHABET, int(lengths.sum()))
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    trials = rng.integers(0, 5, num_texts)
    owner = np.repeat(np.arange(num_texts), trials)
    at = offsets[owner] + rng.integers(0, lengths[owner] - len(grouping.TRIAL_MARKER) + 1)
    for j, byte in enumerate(grouping.TRIAL_MARKER):
        data[at + j] = byte
    return [data[a:b].tobytes().decode() for a, b in zip(offsets[:-1], offsets[1:])]


def _time_part(name, run, args, num_seqs, tokens):
    numba_result, numpy_result = (run(backend) for backend in ("numba", "numpy"))
    equal = all(np.array_equal(a, b, equal_nan=a.dtype.kind == "f") for a, b in zip(numba_result, numpy_result))
    numba_s = median_time(lambda: run("numba"), repeats=args.repeats)
    numpy_s = median_time(lambda: run("numpy"), repeats=args.repeats)
    return {"n": num_seqs, "bytes": tokens, "part": name, "numba_ms": 1e3 * numba_s, "numpy_ms": 1e3 * numpy_s,
            "speedup": numpy_s / numba_s, "numba_Msamples_s": num_seqs / numba_s / 1e6, "equal": equal}


def measure(num_texts, args, rng):
    texts = make_texts(num_texts, rng)
    start = time.perf_counter()
    data, offsets = grouping.encode_texts(texts)
    encode_ms = 1e3 * (time.perf_counter() - start)
    prompts = np.arange(num_texts) // 8
    rewards = rng.integers(0, 2, num_texts).astype(np.float64)
    groups = grouping.assign(grouping.count_markers(data, offsets), (2,))
    parts = {
        "count_markers": lambda b: (grouping.count_markers(data, offsets, backend=b),),
        "statistics": lambda b: tuple(grouping.statistics(groups, rewards, prompts, 2, backend=b)),
        "grouper": lambda b: tuple(grouping.statistics(grouping.assign(grouping.count_markers(data, offsets, backend=b),
                                                                        (2,)), rewards, prompts, 2, backend=b)),
    }
    return [{**_time_part(name, run, args, num_texts, len(data)), "encode_ms": encode_ms} for name, run in parts.items()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench_out", help="folder for grouper.json, grouper.md and grouper.png")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = [row for n in args.sizes for row in measure(n, args, rng)]
    path = write_results(args.out, "grouper", rows, columns=COLUMNS)
    ends = [r for r in rows if r["part"] == "grouper"]
    plot_lines(Path(args.out) / "grouper.png", [r["n"] for r in ends],
               {backend: [r["n"] / r[f"{backend}_ms"] / 1e3 for r in ends] for backend in grouping.BACKENDS},
               xlabel="sequences n", ylabel="throughput (M sequences / s)",
               title="grouper: trial count + assign + statistics", logx=True)
    return path


if __name__ == "__main__":
    main()
