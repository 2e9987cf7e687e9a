"""The Triton kernels compiled for sm_90 (H100/H200) and sm_80 (A100) on this machine, no GPU: ptxas resources
per kernel x target x dtype x launch config, and a static cost model of each kernel per row.

    python -m benchmarks compile --out bench_out                 # the configurations the backend launches
    python -m benchmarks compile --sweep --jobs 2 --out bench_out  # plus every candidate in SWEEP

Compiles go through ``ibpo_fast.ops.triton_compile`` (the backend's own launches, recorded on meta tensors,
specialised as the JIT would; ptxas and cuobjdump from the triton wheel). Columns: `registers` per thread,
`stack_B` (spill space), `shared_KiB` per block (limit: 227 KiB sm_90, 163 KiB sm_80), `default` = the
backend's launch table picks this config, `compile_s` (~0 when Triton's disk cache already had it). Static model at R = 8192, H = 4096, V = 128256 (the kernels' loop
structure, counted per row, every row selected): `gflop_row`; `mb_row` = global-memory bytes the kernel issues
per row (operand tiles each time a tile is loaded, f32 gradient rows each time they are read and written back;
no cache reuse assumed); `flop_per_byte`; `est_us_row_*` = a roofline **estimate**, not a measurement:
max(flops / peak, issued bytes / HBM bandwidth), with H100 SXM / H200 SXM datasheet peaks (dense bf16/f16
989 TFLOP/s, f32 ieee on CUDA cores 67 TFLOP/s; HBM 3.35 / 4.8 TB/s). Issued bytes mostly hit L2 on a real
GPU, so the memory term is an upper bound: read the estimate as which kernel is bound by what.
"""
from __future__ import annotations

import argparse
import os
import time

from benchmarks.common import write_results
from ibpo_fast.ops.triton_backend import KERNELS, LAUNCH_TABLE, Tiles, TritonBackend

REFERENCE = dict(num_rows=8192, vocab=128256, hidden_size=4096)
DTYPES = ("bfloat16", "float16", "float32")
# kernel -> candidates (rows, vocab, hidden, warps[, stages]) tried by --sweep; the launch table picks among them
SWEEP = {
    "forward": [(64, 128, 64, 8), (128, 128, 64, 8), (64, 256, 64, 8), (128, 256, 64, 8), (64, 128, 32, 4),
                (32, 128, 32, 4), (128, 128, 32, 8)],
    "fwd_d_hidden": [(64, 128, 64, 8), (64, 256, 64, 8), (64, 256, 32, 8), (32, 256, 64, 4), (128, 128, 64, 8),
                     (64, 128, 32, 4), (32, 128, 32, 4), (32, 64, 32, 4), (16, 128, 32, 4), (32, 256, 32, 4),
                     (64, 128, 32, 8), (32, 128, 32, 8), (64, 64, 32, 8), (32, 256, 32, 8), (64, 128, 16, 8)],
    "d_weight": [(128, 64, 64, 8), (128, 64, 32, 8), (256, 64, 32, 8), (256, 64, 64, 8), (128, 32, 32, 4),
                 (64, 32, 32, 4), (128, 32, 64, 4), (64, 64, 32, 4), (256, 32, 32, 4), (128, 64, 16, 8),
                 (256, 32, 32, 8), (128, 32, 32, 8), (256, 64, 16, 8)],
}
PEAK_TFLOPS = {"bfloat16": 989.0, "float16": 989.0, "float32": 67.0}
HBM_TBPS = {"h100": 3.35, "h200": 4.8}
OP_OF = {"forward": "forward", "fwd_d_hidden": "forward_backward", "d_weight": "forward_backward"}
COLUMNS = ["kernel", "target", "dtype", "config", "default", "registers", "stack_B", "shared_KiB", "shared_ok",
           "compile_s", "gflop_row", "mb_row", "flop_per_byte", "est_us_row_h100", "est_us_row_h200"]


def static_cost(kernel: str, tiles: Tiles, dtype: str, *, num_rows: int, vocab: int, hidden_size: int) -> dict:
    """(flops, issued global bytes) per row of one kernel, from its loop structure (triton_kernels.py)."""
    R, V, H, e = num_rows, vocab, hidden_size, 4 if dtype == "float32" else 2
    vocab_tiles, row_tiles = -(-V // tiles.block_vocab), -(-R // tiles.block_rows)
    # every kernel recomputes the logits: each (row tile, vocab tile) pair loads its hidden and weight slices
    logits = (row_tiles * tiles.block_rows * H * e * vocab_tiles + vocab_tiles * tiles.block_vocab * H * e * row_tiles) / R
    if kernel == "forward":
        flops, moved = 2 * H * V, logits
    elif kernel == "fwd_d_hidden":  # + the weight tiles again for P @ W, d_hidden read and written per vocab tile
        flops = 4 * H * V
        moved = logits + V * H * e / tiles.block_rows + 8 * H * vocab_tiles + (8 + e) * H
    elif kernel == "d_weight":  # + hidden again for G^T @ h, d_weight rows read and written per row tile
        flops = 4 * H * V
        moved = logits + H * e * vocab_tiles + 8 * V * H * row_tiles / R
    else:
        raise ValueError(f"kernel: {kernel!r}")
    return {"flops": flops, "bytes": moved}


def row(resources, kernel: str, tiles: Tiles, default: bool) -> dict:
    cost = static_cost(kernel, tiles, resources.dtype, **REFERENCE)
    out = {"kernel": KERNELS[kernel], "target": resources.target, "dtype": resources.dtype, "config": str(tiles),
           "default": default, "registers": resources.registers, "stack_B": resources.stack_bytes + resources.local_bytes,
           "shared_KiB": resources.shared_bytes / 1024, "shared_ok": resources.shared_bytes <= resources.shared_limit,
           "compile_s": resources.compile_s, "gflop_row": cost["flops"] / 1e9, "mb_row": cost["bytes"] / 1e6,
           "flop_per_byte": cost["flops"] / cost["bytes"]}
    for gpu, bandwidth in HBM_TBPS.items():
        seconds = max(cost["flops"] / (PEAK_TFLOPS[resources.dtype] * 1e12), cost["bytes"] / (bandwidth * 1e12))
        out[f"est_us_row_{gpu}"] = seconds * 1e6
    return out


def print_op_totals(rows) -> None:
    """The static model summed over the kernels each row op launches (defaults): what one row costs."""
    ops = {"forward": ["forward"], "forward_backward / backward": ["fwd_d_hidden", "d_weight"]}
    print("static totals per row at the defaults (an estimate: issued bytes, no cache reuse; R=8192 H=4096 V=128256):")
    for dtype in dict.fromkeys(r["dtype"] for r in rows):
        for op, kernels in ops.items():
            sel = [r for r in rows if r["default"] and r["dtype"] == dtype and r["target"] == rows[0]["target"]
                   and r["kernel"] in {KERNELS[k] for k in kernels}]
            if len(sel) == len(kernels):
                total = {c: sum(r[c] for r in sel) for c in ("gflop_row", "mb_row", "est_us_row_h100", "est_us_row_h200")}
                print(f"  {dtype:8s} {op:27s} {total['gflop_row']:.2f} GFLOP, {total['mb_row']:.1f} MB, "
                      f"est. {total['est_us_row_h100']:.1f} us H100 / {total['est_us_row_h200']:.1f} us H200 per row")


def candidates(kernel: str, dtype: str, sweep: bool) -> list[tuple[Tiles, bool]]:
    import torch

    default = LAUNCH_TABLE[True][kernel][getattr(torch, dtype)]  # REFERENCE's strides are multiples of 16
    found = [(default, True)]
    if sweep:
        found += [(tiles, False) for tiles in (Tiles(*c) for c in SWEEP[kernel]) if tiles != default]
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench_out", help="folder for compile.json and compile.md")
    parser.add_argument("--targets", nargs="+", default=["sm_90", "sm_80"])
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES))
    parser.add_argument("--kernels", nargs="+", default=list(KERNELS), choices=list(KERNELS))
    parser.add_argument("--sweep", action="store_true", help="also every candidate config in SWEEP (slow)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="compiles in parallel")
    parser.add_argument("--quick", action="store_true", help="bf16, sm_90, the defaults only")
    parser.add_argument("--device", default="cpu", help="ignored: compiling needs no GPU")
    args = parser.parse_args(argv)
    if args.quick:
        args.targets, args.dtypes, args.sweep = ["sm_90"], ["bfloat16"], False
    from ibpo_fast.ops.triton_compile import Request, Shape, resource_table

    requests, labels = [], []  # one per kernel x dtype x config, all compiled in one pool per target
    for kernel in args.kernels:
        for dtype in args.dtypes:
            for tiles, default in candidates(kernel, dtype, args.sweep):
                shape = Shape(OP_OF[kernel], dtype=dtype, **REFERENCE)
                requests.append(Request(shape, TritonBackend(tiles=None if default else tiles), KERNELS[kernel]))
                labels.append((kernel, tiles, default))
    start, rows = time.perf_counter(), []
    for target in args.targets:  # one target at a time, so that a long sweep shows progress
        results = resource_table(requests, [target], jobs=args.jobs)
        print(f"  {target}: {len(results)} kernels compiled, {time.perf_counter() - start:.0f} s", flush=True)
        by_config = {(r.kernel, r.dtype, r.config): r for r in results}
        for (kernel, tiles, default), request in zip(labels, requests):
            rows.append(row(by_config[(request.kernel, request.shape.dtype, str(tiles))], kernel, tiles, default))
    path = write_results(args.out, "compile", rows, columns=COLUMNS)
    print_op_totals(rows)
    bad = [r for r in rows if r["default"] and (r["stack_B"] or not r["shared_ok"])]
    print(f"defaults that spill or exceed shared memory: {len(bad)}" + "".join(
        f"\n  {r['kernel']} {r['target']} {r['dtype']} {r['config']}: stack {r['stack_B']} B" for r in bad))
    if bad:
        raise SystemExit(f"compile: {len(bad)} default launch configurations spill or exceed shared memory")
    return path


if __name__ == "__main__":
    main()
