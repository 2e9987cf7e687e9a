"""Compile the `triton` backend's kernels for an NVIDIA GPU on any machine (no GPU needed) and read the cubins.

    from ibpo_fast.ops.triton_compile import Shape, resource_table
    for row in resource_table([Shape("forward_backward", 8192, 128256, 4096, "bfloat16")], ["sm_90"]):
        print(row)                                  # registers, stack (spills), shared memory per kernel

The backend's own launch code runs on meta tensors with its ``_launch`` recorded instead of called, so what
is compiled is exactly what that shape would launch (kernel, grid, constexprs, warps, stages). Each launch
is specialised the way Triton's JIT specialises those arguments (unit strides as constants, 16-divisible
sizes and pointers marked so), compiled by ``triton.compile`` with the ptxas of the triton wheel, and its
cubin read by the wheel's ``cuobjdump --dump-resource-usage``. Compiled results are cached per process.
Used by tests/test_triton_compile.py and ``python -m benchmarks compile``.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend
from triton.runtime.jit import create_function_from_signature

from . import triton_kernels
from .triton_backend import TritonBackend

# name -> (target, the most shared memory one block may use: cudaDevAttrMaxSharedMemoryPerBlockOptin)
TARGETS = {
    "sm_90": (GPUTarget("cuda", 90, 32), 227 * 1024),  # H100 / H200
    "sm_80": (GPUTarget("cuda", 80, 32), 163 * 1024),  # A100
}
OPS = ("forward", "backward", "forward_backward")
_CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
_USAGE = re.compile(r"Function (\w+):\s+REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")


@dataclass(frozen=True)
class Shape:
    """A row op at one problem size and input dtype: what the backend's plan (and launch table) sees."""

    op: str
    num_rows: int
    vocab: int
    hidden_size: int
    dtype: str  # "bfloat16", "float16", "float32"

    def __str__(self) -> str:
        return f"{self.op} R={self.num_rows} V={self.vocab} H={self.hidden_size} {self.dtype}"


@dataclass(frozen=True)
class Launch:
    """One kernel launch as the backend makes it for ``shape``: arguments (meta tensors, scalars) and options."""

    shape: Shape
    kernel: str
    grid: tuple
    args: tuple = field(repr=False, compare=False)
    meta: tuple  # sorted (name, value) pairs: constexprs, num_warps, num_stages
    arg_summary: tuple = field(repr=False)  # what the JIT specialises on: dtypes, shapes, strides, int values

    @property
    def config(self) -> str:
        """The launch options that shape the code, e.g. "R64 V128 H64 w8 s2"."""
        meta = dict(self.meta)
        return (f"R{meta['BLOCK_R']} V{meta['BLOCK_V']} H{meta['BLOCK_H']} w{meta['num_warps']} "
                f"s{meta['num_stages']}")

    @property
    def compile_key(self) -> tuple:
        """Equal for launches that compile to the same binary (per target)."""
        return self.kernel, self.meta, self.arg_summary


@dataclass(frozen=True)
class Resources:
    """What ptxas allotted one compiled kernel (per thread: registers; per block: shared memory)."""

    kernel: str
    target: str
    dtype: str
    config: str
    shape: str  # the first shape whose launch compiled to this binary
    registers: int
    stack_bytes: int  # the stack frame: where spilled registers go
    local_bytes: int
    shared_bytes: int  # Triton's dynamic shared memory plus any static
    shared_limit: int
    compile_s: float

    @property
    def spills(self) -> bool:
        return self.stack_bytes > 0 or self.local_bytes > 0


@dataclass(frozen=True)
class _Recorder(TritonBackend):
    """The backend with its launches recorded and the device check skipped (meta tensors never run)."""

    launches: list = field(default_factory=list, compare=False)

    def _check(self, hidden) -> None:
        pass

    def _launch(self, kernel, grid, *args, **meta) -> None:
        meta["UPCAST"] = False  # what a GPU launch uses, also when this process interprets (the tests)
        self.launches.append((kernel.__name__, tuple(grid), args, tuple(sorted(meta.items()))))


def _summary(arg):
    if isinstance(arg, torch.Tensor):
        return str(arg.dtype), tuple(arg.shape), arg.stride()
    return arg


def record_launches(shape: Shape, backend: TritonBackend | None = None) -> list[Launch]:
    """The launches ``backend`` (default: what ``backend="triton"`` uses) makes for ``shape``, in order."""
    if shape.op not in OPS:
        raise ValueError(f"op: must be one of {OPS}, got {shape.op!r}")
    options = {} if backend is None else {k: getattr(backend, k) for k in backend.__dataclass_fields__}
    recorder = _Recorder(**options)
    dtype, R, V, H = getattr(torch, shape.dtype), shape.num_rows, shape.vocab, shape.hidden_size
    hidden = torch.empty(R, H, dtype=dtype, device="meta")
    weight = torch.empty(V, H, dtype=dtype, device="meta")
    targets = torch.empty(R, dtype=torch.int64, device="meta")
    row_values = torch.empty(R, dtype=torch.float32, device="meta")  # lse, grad_logp or coef
    if shape.op == "forward":
        recorder.forward(hidden, weight, targets, 1.0)
    elif shape.op == "backward":
        recorder.backward(hidden, weight, targets, row_values, row_values, 1.0)
    else:
        recorder.forward_backward(hidden, weight, targets, row_values, 1.0)
    return [Launch(shape, name, grid, args, meta, tuple(map(_summary, args)))
            for name, grid, args, meta in recorder.launches]


def compile_launch(launch: Launch, target: str) -> Resources:
    """Compile one recorded launch for ``target`` ("sm_90", "sm_80") -> its resources; raises on a compile error.

    Needs a process that does not interpret Triton: under ``TRITON_INTERPRET=1`` triton.language itself is built
    for the interpreter (``resource_table`` then compiles in a child process).
    """
    if triton_kernels.INTERPRETED:
        raise RuntimeError("compile_launch: this process interprets Triton (TRITON_INTERPRET=1); use resource_table")
    kernel = getattr(triton_kernels, launch.kernel)
    gpu_target, shared_limit = TARGETS[target]
    key = (launch.compile_key, target)
    if key not in _COMPILED:
        _COMPILED[key] = _compile(kernel, launch, gpu_target)
    registers, stack, local, shared, seconds = _COMPILED[key]
    return Resources(launch.kernel, target, launch.shape.dtype, launch.config, str(launch.shape), registers, stack,
                     local, shared, shared_limit, seconds)


_COMPILED: dict = {}  # (compile key, target) -> _compile's result, for the life of the process


def _compile(kernel, launch: Launch, target) -> tuple[int, int, int, int, float]:
    """Specialise the launch's arguments as the JIT would (``JITFunction.run``), compile, read the cubin."""
    backend, meta = make_backend(target), dict(launch.meta)
    bound, specialization, options = create_function_from_signature(kernel.signature, kernel.params, backend)(
        *launch.args, **meta)
    options, signature, constexprs, attrs = kernel._pack_args(backend, meta, bound, specialization, options)
    start = time.perf_counter()
    compiled = triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=target, options=options.__dict__)
    seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as folder:
        cubin = Path(folder) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        dump = subprocess.run([str(_CUOBJDUMP), "--dump-resource-usage", str(cubin)], check=True,
                              capture_output=True, text=True).stdout
    match = _USAGE.search(dump)
    if match is None:
        raise RuntimeError(f"cuobjdump gave no resource line for {kernel.__name__}:\n{dump}")
    registers, stack, static_shared, local = (int(match.group(i)) for i in (2, 3, 4, 5))
    return registers, stack, local, compiled.metadata.shared + static_shared, seconds


@dataclass(frozen=True)
class Request:
    """What to compile: the launches ``backend`` (None: the default one) makes for ``shape``, or only the one
    of ``kernel``."""

    shape: Shape
    backend: TritonBackend | None = None
    kernel: str | None = None


def resource_table(requests, targets=tuple(TARGETS), *, jobs: int = 1) -> list[Resources]:
    """Compile the distinct launches of ``requests`` (each a Request, or a Shape) for every target, in ``jobs``
    processes -> rows in the order of targets, then first appearance. From an interpreting process (or with
    jobs > 1) the compiles run in child processes started with TRITON_INTERPRET unset."""
    distinct = {}  # compile key -> (shape, backend, launch index)
    for request in (r if isinstance(r, Request) else Request(r) for r in requests):
        for index, launch in enumerate(record_launches(request.shape, request.backend)):
            if request.kernel in (None, launch.kernel):
                distinct.setdefault(launch.compile_key, (request.shape, request.backend, index))
    work = [(*item, target) for target in targets for item in distinct.values()]
    if jobs == 1 and not triton_kernels.INTERPRETED:
        return [_compile_one(item) for item in work]
    with _interpret_unset(), ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_compile_one, work))


def _compile_one(item) -> Resources:
    shape, backend, index, target = item
    return compile_launch(record_launches(shape, backend)[index], target)


@contextlib.contextmanager
def _interpret_unset():
    """Children inherit the environment: start them without TRITON_INTERPRET."""
    saved = os.environ.pop("TRITON_INTERPRET", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["TRITON_INTERPRET"] = saved
