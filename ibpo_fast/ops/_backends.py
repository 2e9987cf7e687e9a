"""Backend selection by name: one orchestration (ops/__init__), several row-op implementations."""
from __future__ import annotations

from .reference import TorchBackend

BACKEND_NAMES = ("auto", "torch", "triton", "native")


def resolve_backend(backend, hidden):
    """A backend object for ``hidden``'s device; objects pass through unchanged."""
    if not isinstance(backend, str):
        return backend
    if backend not in BACKEND_NAMES:
        raise ValueError(f"backend: must be one of {BACKEND_NAMES} or a backend object, got {backend!r}")
    if backend == "auto":
        backend = "triton" if hidden.is_cuda else ("native" if _native_available() else "torch")
    if backend == "torch":
        return TorchBackend()
    if backend == "triton":
        from .triton_backend import TritonBackend

        return TritonBackend.for_tensor(hidden)
    from .native import NativeBackend

    return NativeBackend()


def _native_available() -> bool:
    try:
        from . import native
    except ImportError:
        return False
    return native.is_available()
