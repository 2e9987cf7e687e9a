"""Native vs torch backend vs naive materialised logits: the whole `weighted_sequence_loss`, forward + backward,
on the CPU, in one run (so all three share the machine's state).

    python -m benchmarks.native_vs_torch                  # both shapes, ~8 min on 2 cores
    python -m benchmarks.native_vs_torch --shapes 4096x512x32000 --repeats 3

Writes bench_out/native_vs_torch.{json,md}. Besides the three methods it times the chunked loop with the tile
work skipped ("matmul floor": the three matmuls per tile, what no elementwise kernel can remove) and the
elementwise work alone on the same tiles, so the table says where the time goes. Peak memory is the process's peak
resident set above its level before the call (benchmarks/common.py); the gradients themselves (d_hidden,
d_weight in f32) are counted in every method since each has to produce them.
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import time

import torch

from benchmarks.common import median_time, package_note, peak_memory, write_results
from ibpo_fast import ops
from ibpo_fast.ops import TorchBackend, naive_token_logprobs
from ibpo_fast.ops.native import NativeBackend, NativeChunkKernels
from ibpo_fast.ops.reference import TorchChunkKernels

SHAPES = ["4096x512x32000", "1024x2048x128256"]
SEQUENCE_LENGTH = 256


class SkipTileWork:
    """Chunk kernels that leave the tile alone: the loop then costs its matmuls and nothing else."""

    @staticmethod
    def logsumexp_and_grad_(z, targets, row_scale):
        return torch.zeros(z.shape[0], dtype=z.dtype)


def make_inputs(T, H, V, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(T, H, generator=g).requires_grad_()  # [T, H]
    weight = (torch.randn(V, H, generator=g) / H**0.5).requires_grad_()  # [V, H]
    targets = torch.randint(0, V, (T,), generator=g)
    cu_seqlens = torch.arange(0, T + 1, SEQUENCE_LENGTH, dtype=torch.int32)
    seq_weights = torch.rand(cu_seqlens.numel() - 1, generator=g)
    return hidden, weight, targets, cu_seqlens, seq_weights


def fused_step(backend, hidden, weight, targets, cu_seqlens, seq_weights):
    def step():
        hidden.grad = weight.grad = None
        ops.weighted_sequence_loss(hidden, weight, targets, cu_seqlens, seq_weights, backend=backend).backward()

    return step


def naive_step(hidden, weight, targets, cu_seqlens, seq_weights):
    """The [T, V] logits materialised in f32, same loss ("tokens" normalisation: every token counts here)."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).to(torch.int64)
    sequence = torch.repeat_interleave(torch.arange(lengths.numel()), lengths)

    def step():
        hidden.grad = weight.grad = None
        logp = naive_token_logprobs(hidden, weight, targets, dtype=torch.float32)
        seq_logp = torch.zeros(lengths.numel()).index_add(0, sequence, logp)
        (-(seq_weights * seq_logp).sum() / (seq_weights * lengths).sum()).backward()

    return step


class CpuClock:
    """Wraps a step so each call also records the process's CPU seconds (all threads): on a shared machine the
    wall time swings with the neighbours' load, the CPU time of the same work much less."""

    def __init__(self, step):
        self.step, self.seconds = step, []

    def __call__(self):
        start = time.process_time()
        self.step()
        self.seconds.append(time.process_time() - start)

    def median(self, last: int) -> float:
        return statistics.median(self.seconds[-last:])


def measure(step, repeats, before=lambda: None):
    """-> (median wall s, median CPU s, peak MiB) of one step; ``before()`` frees what the last step left."""
    before()
    gc.collect()
    peak = peak_memory(step) / 2**20
    clock = CpuClock(step)
    wall = median_time(clock, repeats=repeats)
    return wall, clock.median(repeats), peak


def tile_work_step(kernels_fn, rows, V, num_tiles):
    """The elementwise work alone on the op's tiles ([rows, V] f32 each), minus nothing: one copy per tile
    restores the logits (measured separately and subtracted)."""
    g = torch.Generator().manual_seed(1)
    source = torch.randn(rows, V, generator=g) * 3
    tile, targets, scale = torch.empty_like(source), torch.randint(0, V, (rows,), generator=g), torch.rand(rows)

    def copies():
        for _ in range(num_tiles):
            tile.copy_(source)

    def work():
        for _ in range(num_tiles):
            kernels_fn(tile.copy_(source), targets, scale)

    return copies, work


def bench_shape(T, H, V, repeats):
    inputs = make_inputs(T, H, V)
    native = NativeBackend()
    token_chunk, _ = native.plan(T, V)
    num_tiles = -(-T // token_chunk)
    methods = {
        "native": fused_step(native, *inputs),
        # the time / memory trade-off of the default plan: tiles bounded by the 256 MiB cap alone
        "native, 256 MiB tiles": fused_step(NativeBackend(logits_fraction=1.0), *inputs),
        "torch": fused_step(TorchBackend(), *inputs),
        "naive": naive_step(*inputs),
        # the native plan with the tile work skipped: what no elementwise kernel can remove
        "matmul floor": fused_step(TorchBackend(kernels=SkipTileWork(), workspace_bytes=native.workspace_bytes),
                                   *inputs),
    }
    shape, grads_mib = f"{T}x{H}x{V}", (T * H + V * H) * 4 / 2**20
    rows = []
    hidden, weight = inputs[:2]

    def free_grads():  # else the previous step's gradients count in the level the peak is measured above
        hidden.grad = weight.grad = None

    for name, step in methods.items():
        wall, cpu, peak = measure(step, repeats, free_grads)
        rows.append({"shape": shape, "method": name, "time_s": wall, "cpu_s": cpu, "peak_mib": peak,
                     "peak_over_grads_mib": peak - grads_mib})
    copies, _ = tile_work_step(NativeChunkKernels.logsumexp_and_grad_, token_chunk, V, num_tiles)
    copy_wall, copy_cpu, _ = measure(copies, repeats)
    for name, fn in (("native", NativeChunkKernels.logsumexp_and_grad_), ("torch", TorchChunkKernels.logsumexp_and_grad_)):
        wall, cpu, _ = measure(tile_work_step(fn, token_chunk, V, num_tiles)[1], repeats)
        rows.append({"shape": shape, "method": f"tile work only: {name}", "time_s": wall - copy_wall,
                     "cpu_s": cpu - copy_cpu, "note": f"{num_tiles} tiles [{token_chunk}, {V}] f32"})
    base = {r["method"]: r for r in rows}
    for r in rows:
        ref = base["tile work only: native"] if r["method"].startswith("tile") else base["native"]
        r["time_vs_native"] = r["time_s"] / ref["time_s"]
        r["cpu_vs_native"] = r["cpu_s"] / ref["cpu_s"]
        if "peak_mib" in r:
            r["peak_vs_native"] = r["peak_mib"] / base["native"]["peak_mib"]
            r["peak_over_grads_vs_native"] = r["peak_over_grads_mib"] / base["native"]["peak_over_grads_mib"]
        r["loadavg_1m"] = os.getloadavg()[0]
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=SHAPES, help="TxHxV")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="bench_out")
    args = parser.parse_args(argv)
    if not ops.native_available():
        raise SystemExit(f"native_vs_torch: {package_note()}")
    print(package_note(), flush=True)
    rows = []
    for shape in args.shapes:
        rows += bench_shape(*map(int, shape.split("x")), args.repeats)
    columns = ["shape", "method", "time_s", "time_vs_native", "cpu_s", "cpu_vs_native", "peak_mib", "peak_vs_native",
               "peak_over_grads_mib", "peak_over_grads_vs_native", "loadavg_1m"]
    write_results(args.out, "native_vs_torch", rows, columns=columns)


if __name__ == "__main__":
    main()
