"""Backend selection by name: one orchestration (ops/__init__), several row-op implementations."""
from __future__ import annotations

import torch

from .reference import TorchBackend

BACKEND_NAMES = ("auto", "torch", "triton", "native")


def resolve_backend(backend, hidden):
    """A backend object for ``hidden``'s device; objects pass through unchanged."""
    if not isinstance(backend, str):
        return backend
    if backend not in BACKEND_NAMES:
        raise ValueError(f"backend: must be one of {BACKEND_NAMES} or a backend object, got {backend!r}")
    if backend == "auto":
        if hidden.is_cuda:  # the Triton kernels take f32/bf16/f16; f64 is the torch reference's job
            backend = "torch" if hidden.dtype == torch.float64 else "triton"
        else:
            backend = "native" if native_available() else "torch"
    if backend == "torch":
        return TorchBackend()
    if backend == "triton":
        from .triton_backend import TritonBackend

        return TritonBackend.for_tensor(hidden)
    from .native import NativeBackend

    return NativeBackend()


def native_available() -> bool:
    """Whether the compiled native CPU kernels (``ibpo_fast._native``) import here, i.e. whether ``"auto"`` picks
    the native backend for CPU tensors; ``ibpo_fast.ops.native.unavailable_reason()`` says why not."""
    from . import native

    return native.is_available()
