"""The native CPU backend (ibpo_fast._native) against the float64 formula, its kernels one by one, and the
binding's refusal of tiles it would misread. Skips loudly when the extension is not built (pip install .)."""
from __future__ import annotations

import pytest
import torch

from ibpo_fast import ops
from ibpo_fast.ops import native
from ibpo_fast.ops.native import NativeBackend, NativeChunkKernels
from ops_cases import OPS, assert_close, oracle, random_case, run_op

needs_native = pytest.mark.skipif(not native.is_available(), reason="ibpo_fast._native not built: pip install .")

# default plan (one vocab tile: the fused kernel), several vocab tiles with tails (the online kernels), and
# several token tiles on the fused path
BACKENDS = {
    "default": lambda: NativeBackend(),
    "small-tiles": lambda: NativeBackend(token_chunk=7, vocab_chunk=32),
    "full-vocab": lambda: NativeBackend(token_chunk=5),
}


@needs_native
@pytest.mark.parametrize("plan", list(BACKENDS))
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("seed", range(6))
def test_matches_float64_formula(plan, op, seed):
    case = random_case(seed)
    got = run_op(op, case, BACKENDS[plan]())
    want = oracle(case, op)
    assert got[0].dtype == torch.float32
    for what, a, b in zip(("value", "d_hidden", "d_weight"), got, want):
        assert_close(a, b, 1e-5, f"{plan} {op} {what}")


@needs_native
@pytest.mark.parametrize("plan", list(BACKENDS))
@pytest.mark.parametrize("op", ["sequence", "loss-tokens"])
@pytest.mark.parametrize("seed", range(3))
def test_bfloat16_against_float64_on_same_values(plan, op, seed):
    case = random_case(seed, dtype=torch.bfloat16)
    got = run_op(op, case, BACKENDS[plan]())
    want = oracle(case, op)
    assert got[1].dtype == torch.bfloat16 and got[2].dtype == torch.bfloat16
    for what, a, b in zip(("value", "d_hidden", "d_weight"), got, want):
        assert_close(a, b, 2e-2, f"bf16 {plan} {op} {what}")


@needs_native
def test_float64_tiles_fall_back_to_torch_kernels():
    case = random_case(4, dtype=torch.float64)
    got = run_op("loss-tokens", case, NativeBackend())
    assert got[1].dtype == torch.float64
    want = oracle(case, "loss-tokens")
    assert_close(got[0], want[0], 1e-6, "f64 value")  # the ops return f32 values, f64 gradients
    for what, a, b in zip(("d_hidden", "d_weight"), got[1:], want[1:]):
        assert_close(a, b, 1e-12, f"f64 {what}")


@needs_native
def test_auto_picks_native_on_cpu():
    assert ops.resolve_backend("auto", torch.zeros(1, 1)).name == "native"


def test_absent_extension_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(native, "_native", None)
    assert not ops.native_available()
    assert "ibpo_fast._native is not built" in native.unavailable_reason()
    assert ops.resolve_backend("auto", torch.zeros(1, 1)).name == "torch"
    with pytest.raises(ValueError, match=r"backend: 'native' needs the compiled extension ibpo_fast._native.*pip install \."):
        ops.resolve_backend("native", torch.zeros(1, 1))


# --- the kernels alone, on tiles with the cases the orchestration never sends: -100 targets, targets outside
# the tile, zero row scales, -inf logits, strided rows, bf16 tiles


def _tile(rows, cols, dtype, seed, padding=0):
    """A [rows, cols] view with row stride cols + padding of a buffer whose padding must stay untouched."""
    g = torch.Generator().manual_seed(seed)
    buffer = (torch.randn(rows, cols + padding, generator=g) * 4).to(dtype)
    buffer[0, : min(cols, 3)] = float("-inf")
    if rows > 1:
        buffer[1, 0] = 60.0  # one dominant logit
    targets = torch.randint(0, cols, (rows,), generator=g)
    targets[::3] = -100
    scale = torch.rand(rows, generator=g) - 0.3
    scale[1::4] = 0.0
    return buffer, buffer[:, :cols], targets, scale


def _f64_rows(z, targets, scale):
    """(logp, lse, gradient) of the rows in float64, with -100 rows given logp 0 and a zero gradient."""
    z = z.double()
    lse = torch.logsumexp(z, dim=1)
    inside = targets >= 0
    picked = z.gather(1, targets.clamp(min=0)[:, None]).squeeze(1)
    logp = torch.where(inside, picked - lse, torch.zeros_like(lse))
    onehot = torch.zeros_like(z).scatter_(1, targets.clamp(min=0)[:, None], 1.0) * inside[:, None]
    grad = scale.double()[:, None] * (onehot - torch.softmax(z, dim=1)) * inside[:, None]
    return logp, lse, grad


@needs_native
@pytest.mark.parametrize("dtype,rel", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("rows,cols,padding", [(1, 1, 0), (13, 257, 5), (33, 1000, 0)])
def test_fused_kernel_rows(dtype, rel, rows, cols, padding):
    buffer, z, targets, scale = _tile(rows, cols, dtype, seed=rows + cols)
    want_logp, _, want_grad = _f64_rows(z, targets, scale)
    pad_before = buffer[:, cols:].clone()
    logp = NativeChunkKernels.logsumexp_and_grad_(z, targets, scale)
    assert_close(logp, want_logp, rel, "logp")
    assert_close(z, want_grad, rel, "gradient")
    assert torch.equal(buffer[:, cols:], pad_before), "wrote outside the view"


@needs_native
@pytest.mark.parametrize("dtype,rel", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("vocab_chunk", [1, 64, 1000])
def test_online_kernels_over_vocab_tiles(dtype, rel, vocab_chunk):
    _, z, targets, scale = _tile(17, 301, dtype, seed=vocab_chunk, padding=3)
    targets = targets.clamp(min=0)  # the online kernels see every target (a -100 is just "in no tile")
    want_logp, want_lse, want_grad = _f64_rows(z, targets, scale)
    running_max = torch.full((17,), float("-inf"))
    running_sum, target_logit = torch.zeros(17), torch.zeros(17)
    for v0 in range(0, 301, vocab_chunk):
        NativeChunkKernels.online_logsumexp_(z[:, v0 : v0 + vocab_chunk], targets - v0, running_max, running_sum,
                                             target_logit)
    lse = running_max + running_sum.log()
    assert_close(lse, want_lse, 1e-6, "lse")
    assert_close(target_logit - lse, want_logp, rel, "logp")
    for v0 in range(0, 301, vocab_chunk):
        NativeChunkKernels.softmax_grad_(z[:, v0 : v0 + vocab_chunk], targets - v0, lse, scale)
    assert_close(z, want_grad, rel, "gradient")


@needs_native
def test_binding_refuses_tiles_it_would_misread():
    from ibpo_fast import _native

    z, t, s, out = torch.zeros(4, 6), torch.zeros(4, dtype=torch.int64), torch.zeros(4), torch.zeros(4)
    cases = {
        "unit column stride": (z.T.contiguous().T, t, s, out),
        "float32 or bfloat16": (z.half(), t, s, out),
        "must be int64": (z, t.int(), s, out),
        "row_scale: must be float32": (z, t, s.double(), out),
        "one value per row": (z, t, s[:3], out),
        "stride 0 not allowed": (z, t, s, torch.zeros(1).expand(4)),
        "2-D logits tile": (z[0], t, s, out),
    }
    for message, args in cases.items():
        with pytest.raises(ValueError, match=message):
            _native.logsumexp_and_grad_(*args)
    z_col = torch.zeros(6, 4).T  # column stride 4: transposed storage
    with pytest.raises(ValueError, match="unit column stride"):
        _native.softmax_grad_(z_col, t, s, s)
