"""The fused ops against the materialised-logits path and the peers, same shapes, same run.

    python -m benchmarks kernels --out bench_out                # CPU: two scaled-down shapes, f32 and bf16
    python -m benchmarks kernels --device cuda --out bench_out  # CUDA: Llama-3-8B head, T = 8k ... 64k

Methods (every one on the same packed batch; sequences of 64..1024 tokens, -100 at each sequence end):
- `naive`: ``naive_token_logprobs(h, W, t, dtype=f32)`` (the [T, V] logits in f32) + segment sum + weighted
  loss; `naive_compile`: the same function under ``torch.compile(dynamic=True)`` (compile time excluded).
- `wsl[<backend>]` = ``weighted_sequence_loss``; `slp[<backend>]` = ``sequence_logprobs`` then the same loss;
  backends torch, native (CPU, when built) and triton (CUDA).
- token-level peers (unweighted token CE sum, the same matmul work): `torch_lce` =
  ``F.linear_cross_entropy`` with ``LinearCrossEntropyOptions()`` (PyTorch's chunked path), `liger` =
  Liger-Kernel's fused linear CE, `cce` = Cut Cross-Entropy (impl "cce" on CUDA, "torch_compile" on CPU,
  where its Triton kernels do not run). A peer that is not installed or fails gets a row saying why.

Figures: median time over repeats after a warm-up (CUDA events on GPU); `speedup` = naive time / time;
`vs_floor` = time / the matmul floor (``h @ W.T`` forward; plus ``G @ W`` and ``G.T @ h`` for fwd+bwd, plain
matmuls of the same sizes and dtype timed in this run); `tflops` counts 2·T·H·V (fwd) or 6·T·H·V (fwd+bwd)
whatever a method actually computes. `peak_mib` = memory at the peak above the inputs (one call after the
warm-up, ``common.peak_memory``; CPU: resident set); `workspace_mib` = that minus the gradients the call must return
(``h.grad``, ``W.grad`` in the input dtype); `ws_vs_logits` = workspace / bytes of the bf16 [T, V] logits.
`rel_err` = |value − naive| / |naive| of the loss (the token CE sum for peers), naive in f32: a sanity check.
"""
from __future__ import annotations

import argparse
import gc
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.common import (median_time, package_note, peak_memory, plot_lines, plots_available, save_partial,
                               write_results)
from ibpo_fast import ops

CPU_SHAPES = ["1024x128x32000", "512x256x64000"]  # ~4 min on 2 cores with both dtypes and the compiles
CUDA_SHAPES = ["8192x4096x128256", "16384x4096x128256", "32768x4096x128256", "65536x4096x128256"]
CUDA_F32_SHAPES = CUDA_SHAPES[:1]  # f32 matmuls at 64k tokens take seconds each: one size is enough
QUICK_SHAPES = ["96x64x1000"]
COMPILED = ("naive_compile", "cce")  # torch.compile inside: skipped by --quick on CPU (compile takes ~20 s)
COLUMNS = ["T", "H", "V", "dtype", "mode", "method", "ms", "speedup", "vs_floor", "tflops", "peak_mib",
           "workspace_mib", "ws_vs_logits", "rel_err", "status"]


@dataclass
class Batch:
    hidden: torch.Tensor  # [T, H]
    weight: torch.Tensor  # [V, H]
    targets: torch.Tensor  # [T] int64, -100 at each sequence's last token
    cu_seqlens: torch.Tensor  # [N+1] int32
    sequence: torch.Tensor  # [T] int64, the sequence of each token
    seq_weights: torch.Tensor  # [N] f32, 0 or 1
    coef: torch.Tensor  # [N] f32, -w_i / Z: the loss is sum_i coef_i * seqlogp_i


def make_batch(T, H, V, dtype, device, seed=0) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    lengths = []
    while sum(lengths) < T:
        lengths.append(min(int(torch.randint(64, 1025, (1,), generator=gen)), T - sum(lengths)))
    cu = torch.tensor([0, *lengths]).cumsum(0)
    targets = torch.randint(0, V, (T,), generator=gen)
    targets[cu[1:] - 1] = -100
    sequence = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    seq_weights = (torch.rand(len(lengths), generator=gen) < 0.5).float()
    seq_weights[0] = 1.0
    counted = torch.bincount(sequence[targets != -100], minlength=len(lengths)).float()
    coef = -seq_weights / (seq_weights * counted).sum()
    on_device = torch.Generator(device=device).manual_seed(seed)  # GBs of floats at Llama sizes: draw them there
    hidden = torch.randn(T, H, device=device, generator=on_device).to(dtype)
    weight = (torch.randn(V, H, device=device, generator=on_device) * (2 / H**0.5)).to(dtype)  # logits ~ 2: peaked
    put = lambda x, dt=None: x.to(device=device, dtype=dt or x.dtype)  # noqa: E731
    return Batch(hidden, weight, put(targets), put(cu, torch.int32), put(sequence), put(seq_weights), put(coef))


def naive_loss(hidden, weight, targets, sequence, coef):
    logp = ops.naive_token_logprobs(hidden, weight, targets, dtype=torch.float32)  # [T] via [T, V] f32 logits
    seq_logp = torch.zeros_like(coef).index_add(0, sequence, logp)
    return (coef * seq_logp).sum()


_compiled_naive = torch.compile(naive_loss, dynamic=True)


def default_backends(device: str) -> list[str]:
    if device.startswith("cuda"):
        return ["torch", "triton"]
    return ["torch", "native"] if ops.native_available() else ["torch"]


def losses(backends) -> dict:
    """name -> (kind, loss(batch)); kind "seq" = the weighted loss, "token" = the token CE sum."""
    table = {
        "naive": ("seq", lambda b: naive_loss(b.hidden, b.weight, b.targets, b.sequence, b.coef)),
        "naive_compile": ("seq", lambda b: _compiled_naive(b.hidden, b.weight, b.targets, b.sequence, b.coef)),
    }
    for name in backends:
        table[f"wsl[{name}]"] = ("seq", lambda b, n=name: ops.weighted_sequence_loss(
            b.hidden, b.weight, b.targets, b.cu_seqlens, b.seq_weights, backend=n))
        table[f"slp[{name}]"] = ("seq", lambda b, n=name: (b.coef * ops.sequence_logprobs(
            b.hidden, b.weight, b.targets, b.cu_seqlens, backend=n)).sum())
    table["torch_lce"] = ("token", lambda b: torch.nn.functional.linear_cross_entropy(
        b.hidden, b.weight, b.targets, reduction="sum", options=torch.nn.LinearCrossEntropyOptions()))
    table["liger"] = ("token", _liger)
    table["cce"] = ("token", _cce)
    return table


def _liger(b):
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

    return liger_fused_linear_cross_entropy(b.hidden, b.weight, b.targets, reduction="sum")


def _cce(b):
    from cut_cross_entropy import linear_cross_entropy

    impl = "cce" if b.hidden.is_cuda else "torch_compile"
    return linear_cross_entropy(b.hidden, b.weight, b.targets, reduction="sum", impl=impl)


def _call(loss_fn, batch, mode):
    """One timed call: forward under no_grad, or forward + backward into fresh .grad tensors."""
    if mode == "fwd":
        with torch.no_grad():
            return loss_fn(batch)
    batch.hidden.grad = batch.weight.grad = None
    loss = loss_fn(batch)
    loss.backward()
    return loss


def _floor_fn(batch, mode):
    h, W = batch.hidden.detach(), batch.weight.detach()
    G = torch.randn(h.shape[0], W.shape[0], device=h.device, dtype=h.dtype)  # [T, V] stand-in for d logits

    def fn():
        out = h @ W.T
        if mode == "fwd+bwd":
            out = (G @ W, G.T @ h)
        return out

    return fn


def _free(device):
    if device.startswith("cuda"):  # return cached blocks so the next method's peak starts clean (CPU: refcounts do it)
        gc.collect()
        torch.cuda.empty_cache()


def measure(batch, name, kind, loss_fn, mode, args, reference):
    row = {"method": name}
    try:
        value = _call(loss_fn, batch, mode).item()  # the warm-up (and compiling) call, and the value check
        ref = reference[kind]
        row["rel_err"] = None if math.isnan(ref) else abs(value - ref) / max(abs(ref), 1e-30)
        start = time.perf_counter()
        row["peak_mib"] = peak_memory(lambda: _call(loss_fn, batch, mode), device=args.device) / 2**20
        # a method 10x slower than the rest would take most of the run: one timed call is enough to say so
        slow = time.perf_counter() - start > args.slow_s
        row["repeats"] = 1 if slow else args.repeats
        row["ms"] = 1e3 * median_time(lambda: _call(loss_fn, batch, mode), repeats=row["repeats"],
                                      warmup=0, device=args.device)
        row["status"] = f"ok (1 repeat: a call took > {args.slow_s:g} s)" if slow else "ok"
    except torch.OutOfMemoryError:
        row["status"] = "oom"
    except Exception as error:  # a peer that cannot run here: say why, keep going
        first_line = str(error).splitlines()[0][:80] if str(error) else ""
        row["status"] = f"{type(error).__name__}: {first_line}".rstrip(": ")
    batch.hidden.grad = batch.weight.grad = None
    _free(args.device)
    return row


def run_shape(T, H, V, dtype, args):
    batch = make_batch(T, H, V, dtype, args.device)
    reference = {"seq": float("nan"), "token": float("nan")}  # stays NaN if the naive path cannot run at T
    try:
        with torch.no_grad():
            reference["seq"] = float(naive_loss(batch.hidden, batch.weight, batch.targets, batch.sequence, batch.coef))
            reference["token"] = -float(ops.naive_token_logprobs(batch.hidden, batch.weight, batch.targets,
                                                                 dtype=torch.float32).sum())
    except torch.OutOfMemoryError:
        _free(args.device)
    rows = []
    for mode in ("fwd", "fwd+bwd"):
        batch.hidden.requires_grad_(mode == "fwd+bwd")
        batch.weight.requires_grad_(mode == "fwd+bwd")
        floor_ms = 1e3 * median_time(_floor_fn(batch, mode), repeats=args.repeats, device=args.device)
        _free(args.device)
        flops = (2 if mode == "fwd" else 6) * T * H * V
        grads = 0 if mode == "fwd" else (T + V) * H * batch.hidden.element_size()
        found = [{"method": "matmul_floor", "ms": floor_ms, "status": "ok"}]
        for name, (kind, loss_fn) in losses(args.backends).items():
            if args.methods and name not in args.methods:
                continue
            if name in args.skip or (args.quick and name in COMPILED and args.device == "cpu"):
                found.append({"method": name, "status": "skipped"})
                continue
            found.append(measure(batch, name, kind, loss_fn, mode, args, reference))
        naive_ms = next((r.get("ms") for r in found if r["method"] == "naive"), None)
        for row in found:
            row.update(T=T, H=H, V=V, dtype=str(dtype).removeprefix("torch."), mode=mode)
            if "ms" in row:
                row["vs_floor"] = row["ms"] / floor_ms
                row["tflops"] = flops / (row["ms"] * 1e-3) / 1e12
                row["speedup"] = naive_ms / row["ms"] if naive_ms else None
            if "peak_mib" in row:
                row["workspace_mib"] = row["peak_mib"] - grads / 2**20
                row["ws_vs_logits"] = row["workspace_mib"] * 2**20 / (T * V * 2)
            print(f"  {T}x{H}x{V} {row['dtype']} {mode:8s} {row['method']:14s} "
                  f"{row.get('ms', float('nan')):10.1f} ms  {row['status']}", flush=True)
        rows += found
    return rows


def plot(out_dir, rows):
    if not plots_available():
        return []
    paths = []
    for dtype in sorted({r["dtype"] for r in rows}):
        for mode in ("fwd", "fwd+bwd"):
            sel = [r for r in rows if r["dtype"] == dtype and r["mode"] == mode]
            sizes = sorted({(r["T"], r["H"], r["V"]) for r in sel})
            x = [T * H * V for T, H, V in sizes]
            series = {}
            for method in dict.fromkeys(r["method"] for r in sel):
                by_size = {(r["T"], r["H"], r["V"]): r.get("tflops") for r in sel if r["method"] == method}
                if any(by_size.values()):
                    series[method] = [by_size.get(s) for s in sizes]
            name = f"kernels_{dtype}_{mode.replace('+', '_')}.png"
            paths.append(plot_lines(Path(out_dir) / name, x, series, xlabel="T·H·V", ylabel="TFLOP/s",
                                    title=f"{dtype} {mode}", logx=len(x) > 1))
    return paths


def summarize(rows, device, backends):
    """The goals (DESIGN, issue 6) against the bf16 fwd+bwd rows of the fused op as "auto" picks it."""
    auto = "triton" if device == "cuda" else ("native" if ops.native_available() else "torch")
    ours = f"wsl[{auto if auto in backends else backends[-1]}]"
    lines = [f"goals ({ours}, bf16 fwd+bwd; set on GPU, printed on any device):"]
    for T, H, V in sorted({(r["T"], r["H"], r["V"]) for r in rows if r["dtype"] == "bfloat16"}):
        sel = {r["method"]: r for r in rows if (r["T"], r["H"], r["V"], r["dtype"], r["mode"]) ==
               (T, H, V, "bfloat16", "fwd+bwd")}
        mine = sel.get(ours, {})
        if "ms" not in mine:
            lines.append(f"  {T}x{H}x{V}: {ours} {mine.get('status', 'not run')}")
            continue
        verdict = lambda ok: "yes" if ok else "NO"  # noqa: E731
        peers = ", ".join(f"{p} {verdict(mine['ms'] < sel[p]['ms'])} ({sel[p]['ms'] / mine['ms']:.2f}x)"
                          if "ms" in sel.get(p, {}) else f"{p} not run" for p in ("liger", "cce", "torch_lce"))
        floor, workspace = mine["vs_floor"], mine["ws_vs_logits"]
        lines.append(f"  {T}x{H}x{V}: time/floor {floor:.2f} (<= 1.15: {verdict(floor <= 1.15)}); workspace/bf16 "
                     f"logits {workspace:.3f} (< 0.05: {verdict(workspace < 0.05)}); faster than: {peers}")
    if len(lines) == 1:
        lines.append("  no bf16 rows in this run")
    print("\n".join(lines))
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench_out", help="folder for kernels.json, kernels.md, kernels_*.png")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--quick", action="store_true", help="one tiny shape, f32, one repeat, no torch.compile on CPU")
    parser.add_argument("--shapes", nargs="+", help="TxHxV each (default: per device)")
    parser.add_argument("--dtypes", nargs="+", default=None, help="default float32 bfloat16 (--quick: float32)")
    parser.add_argument("--repeats", type=int, default=None, help="default 3 (CPU), 5 (CUDA), 1 (--quick)")
    parser.add_argument("--slow-s", type=float, default=4.0,
                        help="a method whose call takes longer than this is timed once, not --repeats times")
    parser.add_argument("--skip", nargs="*", default=[], help="method names to leave out (rows say 'skipped')")
    parser.add_argument("--methods", nargs="*", help="only these methods (default: all); the floor always runs")
    parser.add_argument("--backends", nargs="+", help="backends of our ops (default: torch + native on CPU, "
                        "torch + triton on CUDA; triton on CPU needs TRITON_INTERPRET=1)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("kernels: --device cuda but no CUDA device here")
    if args.device == "cpu":
        print(package_note(), flush=True)
    args.backends = args.backends or default_backends(args.device)
    if args.repeats is None:
        args.repeats = 1 if args.quick else (5 if args.device == "cuda" else 3)
    args.dtypes = args.dtypes or (["float32"] if args.quick else ["float32", "bfloat16"])
    rows = []
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        shapes = args.shapes or (QUICK_SHAPES if args.quick else CPU_SHAPES if args.device == "cpu"
                                 else CUDA_SHAPES if dtype == torch.bfloat16 else CUDA_F32_SHAPES)
        for shape in shapes:
            rows += run_shape(*map(int, shape.split("x")), dtype, args)
            save_partial(args.out, "kernels", rows)
    path = write_results(args.out, "kernels", rows, columns=COLUMNS)
    summarize(rows, args.device, args.backends)
    plot(args.out, rows)
    (Path(args.out) / "kernels.partial.json").unlink(missing_ok=True)
    return path


if __name__ == "__main__":
    main()
