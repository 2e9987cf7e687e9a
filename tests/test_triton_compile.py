"""Every Triton kernel of the package compiled for Hopper (sm_90) and Ampere (sm_80) on this CPU machine, for bf16,
f16 and f32 inputs, at every launch the backend makes (its launch table; shapes whose sizes and strides are and
are not multiples of 16, which the JIT specialises differently): no compile error, no register spills (stack or
local bytes) and shared memory within the target's limit, read from each cubin with cuobjdump.

The compiles run in two child processes without TRITON_INTERPRET (conftest sets it for this one), ~2-4 min
on 2 cores; ``IBPO_SLOW_TESTS=1`` adds every candidate of ``python -m benchmarks compile --sweep`` (compiles
only, spills allowed there).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from ibpo_fast.ops.triton_backend import KERNELS, LAUNCH_TABLE, Tiles, TritonBackend
from ibpo_fast.ops.triton_compile import OPS, TARGETS, Request, Shape, resource_table

DTYPES = ("bfloat16", "float16", "float32")
SIZES = [(8192, 128256, 4096), (1000, 50257, 577)]  # (R, V, H): Llama-3 8B's head; nothing divisible by 16
SHAPES = [Shape(op, R, V, H, dtype) for dtype in DTYPES for op in OPS for R, V, H in SIZES]
JOBS = min(2, os.cpu_count() or 1)


@pytest.fixture(scope="module")
def compiled():
    return resource_table(SHAPES, tuple(TARGETS), jobs=JOBS)


def test_cuobjdump_ships_with_triton():
    import triton

    assert (Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump").is_file()


def test_every_default_launch_compiles_without_spills(compiled):
    bad = [f"{r.kernel} {r.target} {r.dtype} {r.config} ({r.shape}): {r.stack_bytes} B stack, {r.local_bytes} B "
           f"local, {r.registers} registers" for r in compiled if r.spills]
    assert not bad, "spills at the default launch configurations:\n" + "\n".join(bad)


def test_shared_memory_within_the_target(compiled):
    bad = [f"{r.kernel} {r.target} {r.dtype} {r.config}: {r.shared_bytes} B > {r.shared_limit} B"
           for r in compiled if r.shared_bytes > r.shared_limit]
    assert not bad, "\n".join(bad)


def test_the_whole_launch_table_was_compiled(compiled):
    """Every (kernel, dtype) entry of the table reached the compiler on every target, for every kernel."""
    kernels = KERNELS
    got = {(r.kernel, r.target, r.dtype, r.config) for r in compiled}
    entries = [(kernels[k], target, str(dtype).removeprefix("torch."), str(tiles)) for table in LAUNCH_TABLE.values()
               for k, by_dtype in table.items() for dtype, tiles in by_dtype.items() for target in TARGETS]
    missing = [entry for entry in entries if entry not in got]
    assert not missing, missing
    assert {r.kernel for r in compiled} == set(kernels.values())


@pytest.mark.skipif(os.environ.get("IBPO_SLOW_TESTS") != "1", reason="slow (~150 compiles): IBPO_SLOW_TESTS=1")
def test_every_sweep_candidate_compiles():
    sys.path.append(str(Path(__file__).resolve().parents[1]))  # the repository's benchmarks/, after the package
    from benchmarks.compile import OP_OF, REFERENCE, SWEEP

    requests = [Request(Shape(OP_OF[k], dtype=dtype, **REFERENCE), TritonBackend(tiles=Tiles(*c)), KERNELS[k])
                for k, configs in SWEEP.items() for c in configs for dtype in DTYPES]
    assert len(resource_table(requests, tuple(TARGETS), jobs=JOBS)) == len(requests) * len(TARGETS)


def test_the_table_has_every_dtype():
    for table in LAUNCH_TABLE.values():
        assert set(table) == set(KERNELS)
        assert all(set(by_dtype) == {torch.bfloat16, torch.float16, torch.float32} for by_dtype in table.values())
