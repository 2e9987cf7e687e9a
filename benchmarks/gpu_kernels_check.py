"""Triton backend on a CUDA device at real sizes: values and gradients against the torch backend, and timings.

    PYTHONPATH=. python benchmarks/gpu_kernels_check.py                        # T=8192, H=4096, V=128256 bf16
    PYTHONPATH=. python benchmarks/gpu_kernels_check.py --tiles 128 64 64 8 2    # one config for every kernel

Prints, per dtype, the max relative error (norm-wise: max |a - b| / max |b|) of the triton backend against the
torch backend (the reference) on row slices, both against the float64 formula on a few rows, then the median
time (CUDA events) of forward, backward and forward_backward for both backends with their TFLOP/s
(2·H·V per row per matmul: 1 forward, 4 backward, 4 forward_backward for triton; the torch figure is the same
work for comparison). Import-safe without CUDA; exits with a message there.
"""
from __future__ import annotations

import argparse

import torch

from benchmarks.common import median_time, peak_memory
from ibpo_fast.ops import TorchBackend, naive_token_logprobs
from ibpo_fast.ops.triton_backend import Tiles, TritonBackend


def rel(a, b) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp(min=1e-30))


def make_inputs(T, H, V, dtype, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    hidden = torch.randn(T, H, device="cuda", generator=gen).to(dtype)
    weight = (torch.randn(V, H, device="cuda", generator=gen) * 2 / H**0.5).to(dtype)
    targets = torch.randint(0, V, (T,), device="cuda", generator=gen)
    grad = torch.randn(T, device="cuda", generator=gen) / T
    return hidden, weight, targets, grad


def check(triton_backend, T, H, V, dtype, inv_temp, slice_rows):
    hidden, weight, targets, grad = make_inputs(T, H, V, dtype)
    reference = TorchBackend()
    logp, lse = triton_backend.forward(hidden, weight, targets, inv_temp)
    d_hidden, _ = triton_backend.backward(hidden, weight, targets, lse, grad, inv_temp)
    errors, deterministic = {}, True
    for name, rows in (("head", slice(0, slice_rows)), ("tail", slice(T - slice_rows, T))):
        h, t, g = hidden[rows], targets[rows], grad[rows]
        ref_logp, ref_lse = reference.forward(h, weight, t, inv_temp)
        ref_dh, ref_dw = reference.backward(h, weight, t, ref_lse, g, inv_temp)
        # d_hidden of a row depends on that row only: the full-batch result is compared on the slice;
        # d_weight sums over all rows: the triton backward is rerun on the slice alone
        slice_dh, slice_dw = triton_backend.backward(h, weight, t, lse[rows], g, inv_temp)
        again = triton_backend.backward(h, weight, t, lse[rows], g, inv_temp)  # a race would show here
        deterministic &= torch.equal(again[0], slice_dh) and torch.equal(again[1], slice_dw)
        errors[f"logp[{name}]"] = rel(logp[rows], ref_logp)
        errors[f"lse[{name}]"] = rel(lse[rows], ref_lse)
        errors[f"d_hidden[{name}]"] = rel(d_hidden[rows], ref_dh)
        errors[f"d_weight[{name}]"] = rel(slice_dw, ref_dw)
    few = slice(0, 16)  # the float64 formula materialises [rows, V]: a few rows only
    exact = naive_token_logprobs(hidden[few].double(), weight.double(), targets[few], temperature=1 / inv_temp)
    errors["logp vs f64 (triton)"] = rel(logp[few], exact)
    errors["logp vs f64 (torch)"] = rel(reference.forward(hidden[few], weight, targets[few], inv_temp)[0], exact)
    print(f"\n## {dtype} T={T} H={H} V={V} inv_temp={inv_temp:g}: max relative error, triton vs reference")
    for key, value in errors.items():
        print(f"  {key:24s} {value:.3e}")
    print(f"  backward bitwise reproducible: {deterministic}")
    return hidden, weight, targets, grad


def timings(backends, hidden, weight, targets, grad, inv_temp, repeats):
    T, H = hidden.shape
    flop = 2 * T * H * weight.shape[0]
    print(f"\n## median of {repeats} (ms, TFLOP/s)  {hidden.dtype} T={T} H={H} V={weight.shape[0]}")
    for name, backend in backends.items():
        _, lse = backend.forward(hidden, weight, targets, inv_temp)
        calls = {
            "forward": (1, lambda: backend.forward(hidden, weight, targets, inv_temp)),
            "backward": (4, lambda: backend.backward(hidden, weight, targets, lse, grad, inv_temp)),
            "forward_backward": (4, lambda: backend.forward_backward(hidden, weight, targets, grad, inv_temp)),
        }
        for op, (matmuls, fn) in calls.items():
            seconds = median_time(fn, repeats=repeats, warmup=1, device="cuda")
            print(f"  {name:7s} {op:17s} {seconds * 1e3:9.2f} ms {matmuls * flop / seconds / 1e12:7.1f} TFLOP/s")
        peak = peak_memory(calls["forward_backward"][1], device="cuda")
        print(f"  {name:7s} forward_backward peak memory above inputs {peak / 2**30:.2f} GiB")


def jit_resources() -> None:
    """Registers, spills and shared memory of every kernel the JIT compiled in this run, as the driver loaded
    them: the measured twin of `python -m benchmarks compile` (which reads cubins compiled without a GPU)."""
    from ibpo_fast.ops import triton_kernels

    print("\n## kernels as compiled by the JIT here (registers / spills / shared bytes; compare compile.md)")
    for name in ("_logprob_fwd_kernel", "_fwd_d_hidden_kernel", "_d_weight_kernel"):
        for caches in getattr(triton_kernels, name).device_caches.values():
            for compiled in caches[0].values():
                compiled._init_handles()
                names = compiled.src.fn.arg_names
                meta = {names[k[0]]: v for k, v in compiled.src.constants.items() if names[k[0]].startswith("BLOCK")}
                print(f"  {name:22s} regs {compiled.n_regs:3d} spills {compiled.n_spills:4d} shared "
                      f"{compiled.metadata.shared:6d} warps {compiled.metadata.num_warps} {meta}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="8192x4096x128256", help="TxHxV")
    parser.add_argument("--f32-shape", default="1024x1024x32000", help="TxHxV of the f32 check")
    parser.add_argument("--slice-rows", type=int, default=512)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tiles", type=int, nargs=5, metavar=("ROWS", "VOCAB", "HIDDEN", "WARPS", "STAGES"),
                        help="one launch config for every kernel (default: the backend's launch table)")
    parser.add_argument("--vocab-per-program", type=int, default=TritonBackend().vocab_per_program)
    parser.add_argument("--f32-precision", default="ieee")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("gpu_kernels_check: no CUDA device here; run it on a GPU machine")
    triton_backend = TritonBackend(tiles=Tiles(*args.tiles) if args.tiles else None,
                                   vocab_per_program=args.vocab_per_program, f32_precision=args.f32_precision)
    print(torch.cuda.get_device_name(), triton_backend)
    inv_temp = 1 / args.temperature
    T, H, V = map(int, args.f32_shape.split("x"))
    check(triton_backend, T, H, V, torch.float32, inv_temp, min(args.slice_rows, T // 2))
    T, H, V = map(int, args.shape.split("x"))
    inputs = check(triton_backend, T, H, V, torch.bfloat16, inv_temp, min(args.slice_rows, T // 2))
    timings({"triton": triton_backend, "torch": TorchBackend()}, *inputs, inv_temp, args.repeats)
    jit_resources()


if __name__ == "__main__":
    main()
