"""Grouper throughput: numba kernels vs the numpy twin of the same computation, results checked equal.

Packs of n sequences (prompt 4-12 tokens, response 8-56 tokens, ids from a 32k vocabulary) with 0-4
two-token `[TRIAL]` markers dropped into each response; P = n / 8 prompts, K = 2. Parts timed:
``assign`` by trial markers, ``assign`` by response length, ``statistics`` (counts, means, CSR rows),
and ``grouper`` = marker assign + statistics, the per-step work of the trainer. Median of repeats.

    python -m benchmarks.grouper --out bench_out
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks.common import median_time, plot_lines, write_results
from ibpo_fast import grouping

SIZES = (10_000, 100_000, 1_000_000)
MARKER = np.array([31_001, 31_002])
COLUMNS = ["n", "tokens", "part", "numba_ms", "numpy_ms", "speedup", "numba_Msamples_s", "equal"]


def make_pack(num_seqs, rng):
    prompt_len, response_len = rng.integers(4, 13, num_seqs), rng.integers(8, 57, num_seqs)
    cu_seqlens = np.concatenate(([0], np.cumsum(prompt_len + response_len))).astype(np.int32)
    input_ids = rng.integers(0, 31_000, cu_seqlens[-1])
    response_start = cu_seqlens[:-1] + prompt_len
    loss_mask = np.arange(cu_seqlens[-1]) >= np.repeat(response_start, prompt_len + response_len)
    trials = rng.integers(0, 5, num_seqs)
    owner = np.repeat(np.arange(num_seqs), trials)
    at = response_start[owner] + rng.integers(0, response_len[owner] - len(MARKER) + 1)
    for j, token in enumerate(MARKER):
        input_ids[at + j] = token
    return input_ids, cu_seqlens, loss_mask


def _time_part(name, run, args, num_seqs, tokens):
    numba_result, numpy_result = (run(backend) for backend in ("numba", "numpy"))
    equal = all(np.array_equal(a, b, equal_nan=a.dtype.kind == "f") for a, b in zip(numba_result, numpy_result))
    numba_s = median_time(lambda: run("numba"), repeats=args.repeats)
    numpy_s = median_time(lambda: run("numpy"), repeats=args.repeats)
    return {"n": num_seqs, "tokens": tokens, "part": name, "numba_ms": 1e3 * numba_s, "numpy_ms": 1e3 * numpy_s,
            "speedup": numpy_s / numba_s, "numba_Msamples_s": num_seqs / numba_s / 1e6, "equal": equal}


def measure(num_seqs, args, rng):
    pack = make_pack(num_seqs, rng)
    prompts = np.arange(num_seqs) // 8
    rewards = rng.integers(0, 2, num_seqs).astype(np.float64)
    groups = grouping.assign(*pack, trial_marker=MARKER)
    parts = {
        "assign(markers)": lambda b: (grouping.assign(*pack, trial_marker=MARKER, backend=b),),
        "assign(lengths)": lambda b: (grouping.assign(*pack, length_thresholds=(32,), backend=b),),
        "statistics": lambda b: tuple(grouping.statistics(groups, rewards, prompts, 2, backend=b)),
        "grouper": lambda b: tuple(grouping.statistics(grouping.assign(*pack, trial_marker=MARKER, backend=b),
                                                       rewards, prompts, 2, backend=b)),
    }
    return [_time_part(name, run, args, num_seqs, len(pack[0])) for name, run in parts.items()]


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
               title="grouper: marker assign + statistics", logx=True)
    return path


if __name__ == "__main__":
    main()
