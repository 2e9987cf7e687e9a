"""The `native` backend: the chunked torch loop (reference.py) with the per-tile elementwise work done by the
C++ kernels of ``kernels/`` (ibpo_fast._native), one fused pass per row instead of torch eager's several.

The matmuls stay with torch (BLAS); only what sits between them is native. The extension is optional: it is
built by ``pip install .`` (scikit-build-core, CMakeLists.txt). Without it ``is_available()`` is False, "auto"
picks the torch backend, and asking for "native" raises a ValueError saying how to build it.

f64 tiles (the high-precision reference path) run the torch kernels: the native ones compute in f32.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .reference import TorchBackend, TorchChunkKernels

try:
    from .. import _native
except ImportError as error:  # not built: keep the reason for the message
    _native, _IMPORT_ERROR = None, error
else:
    _IMPORT_ERROR = None


def is_available() -> bool:
    return _native is not None


def unavailable_reason() -> str | None:
    """None when the extension is built, else one line: where the package was imported from and the import error.

    The usual cause is a source checkout first on ``sys.path`` (running from the repository root) while the built
    extension lives in the installed copy.
    """
    if _native is not None:
        return None
    from .. import __file__ as package_file

    return (f"ibpo_fast._native is not built in the ibpo_fast imported from {Path(package_file).parent} "
            f"({_IMPORT_ERROR}); pip install . builds it")


class NativeChunkKernels:
    """`TorchChunkKernels`' methods on the C++ row kernels (f32 and bf16 tiles), OpenMP over rows.

    The team size follows ``torch.get_num_threads()`` at each call, so ``torch.set_num_threads`` governs both.
    """

    @staticmethod
    def online_logsumexp_(z, local_targets, running_max, running_sum, target_logit) -> None:
        if z.dtype == torch.float64:
            return TorchChunkKernels.online_logsumexp_(z, local_targets, running_max, running_sum, target_logit)
        _native.online_logsumexp_(z, local_targets, running_max, running_sum, target_logit, torch.get_num_threads())

    @staticmethod
    def softmax_grad_(z, local_targets, lse, row_scale) -> None:
        if z.dtype == torch.float64:
            return TorchChunkKernels.softmax_grad_(z, local_targets, lse, row_scale)
        _native.softmax_grad_(z, local_targets, lse, row_scale, torch.get_num_threads())

    @staticmethod
    def logsumexp_and_grad_(z, targets, row_scale) -> torch.Tensor:
        """Whole-vocabulary tile: -> logp [rows]; z <- d(row_scale * logp)/dz in place (-100 rows: 0, 0)."""
        if z.dtype == torch.float64:
            return TorchChunkKernels.logsumexp_and_grad_(z, targets, row_scale)
        logp = torch.empty(z.shape[0], dtype=torch.float32)
        _native.logsumexp_and_grad_(z, targets, row_scale, logp, torch.get_num_threads())
        return logp


@dataclass(frozen=True)
class NativeBackend(TorchBackend):
    """The torch backend's loop and plan with the native kernels.

    The plan is torch's: at most 256 MiB and at most a fifth of the f32 logits. Measured on the whole op at
    T=1024, H=2048, V=128256 (2 cores, 3 interleaved repeats): a fifth (204-row tiles) costs ~12 %
    over 256 MiB tiles and a quarter ~5 %, since d_weight [V, H] f32 is read and written once per token tile
    (the row kernels themselves run at ~1/250 of the matmuls' time there); the fifth keeps the extra memory
    over 4x under the naive path's, which a quarter does not.
    """

    kernels: object = field(default_factory=NativeChunkKernels)
    name: str = "native"

    def __post_init__(self):
        if not is_available():
            raise ValueError(
                "backend: 'native' needs the compiled extension ibpo_fast._native, which is not built: "
                "pip install . (or pip install --no-build-isolation -e .) builds it with CMake and a C++17 "
                f"compiler with OpenMP; or use backend='torch' ({unavailable_reason()})"
            )
