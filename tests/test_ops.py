"""The public ops against the float64 formula, for every backend available here."""
from __future__ import annotations

import pytest
import torch

from ibpo_fast import ops
from ibpo_fast.ops import TorchBackend
from ops_cases import OPS, assert_close, oracle, random_case, run_op

# (id, backend, seeds): the default plan, forced small tiles (several token and vocab tiles, tails), and
# a two-pass plan for the weighted loss (vocab_chunk < V).
BACKENDS = [
    ("torch-default", "torch", range(12)),
    ("torch-small-tiles", TorchBackend(token_chunk=7, vocab_chunk=32), range(12)),
    ("torch-full-vocab", TorchBackend(token_chunk=5), range(6)),
]
if ops.native_available():
    from ibpo_fast.ops.native import NativeBackend

    BACKENDS += [("native", NativeBackend(), range(12)), ("native-small", NativeBackend(token_chunk=7, vocab_chunk=32), range(6))]

CASES = [(name, backend, seed) for name, backend, seeds in BACKENDS for seed in seeds]
IDS = [f"{name}-{seed}" for name, _, seed in CASES]


@pytest.mark.parametrize("name,backend,seed", CASES, ids=IDS)
@pytest.mark.parametrize("op", OPS)
def test_matches_float64_formula(name, backend, seed, op):
    case = random_case(seed)
    got = run_op(op, case, backend)
    want = oracle(case, op)
    assert got[0].dtype == torch.float32
    for what, a, b in zip(("value", "d_hidden", "d_weight"), got, want):
        assert_close(a, b, 1e-5, f"{op} {what}")


@pytest.mark.parametrize("name,backend", [(n, b) for n, b, _ in BACKENDS], ids=[n for n, _, _ in BACKENDS])
@pytest.mark.parametrize("seed", range(3))
def test_bfloat16_against_float64_on_same_values(name, backend, seed):
    case = random_case(seed, dtype=torch.bfloat16)
    got = run_op("loss", case, backend)
    want = oracle(case, "loss")
    assert got[1].dtype == torch.bfloat16 and got[2].dtype == torch.bfloat16
    for what, a, b in zip(("value", "d_hidden", "d_weight"), got, want):
        assert_close(a, b, 2e-2, f"bf16 {what}")
    seq = ops.sequence_logprobs(case.hidden, case.weight, case.targets, case.cu_seqlens, case.loss_mask,
                                temperature=case.temperature, backend=backend)
    assert_close(seq, oracle(case, "sequence")[0], 2e-2, "bf16 sequence_logprobs")


def test_float64_inputs_run_in_float64():
    case = random_case(3, dtype=torch.float64)
    got = run_op("sequence", case, "torch")
    want = oracle(case, "sequence")
    for what, a, b in zip(("value", "d_hidden", "d_weight"), got, want):
        assert_close(a, b, 1e-6, what)  # the f32 output is the only rounding left
    assert got[1].dtype == torch.float64


def _sequence(case, i):
    start, end = int(case.cu_seqlens[i]), int(case.cu_seqlens[i + 1])
    return slice(start, end)


@pytest.mark.parametrize("name,backend", [(n, b) for n, b, _ in BACKENDS], ids=[n for n, _, _ in BACKENDS])
def test_batch_invariance(name, backend):
    """A sequence's log-prob ignores its neighbours, their order and the chunk sizes (1e-6 relative)."""
    case = random_case(7, max_tokens=160)
    args = lambda c: (c.hidden, c.weight, c.targets, c.cu_seqlens, c.loss_mask)  # noqa: E731
    packed = ops.sequence_logprobs(*args(case), backend=backend)
    N = case.cu_seqlens.numel() - 1
    order = torch.randperm(N, generator=torch.Generator().manual_seed(0))
    spans = [_sequence(case, int(i)) for i in order]
    lengths = torch.tensor([s.stop - s.start for s in spans])
    shuffled_cu = torch.cat([torch.zeros(1, dtype=torch.int32), lengths.cumsum(0).to(torch.int32)])
    cat = lambda t: torch.cat([t[s] for s in spans])  # noqa: E731
    shuffled = ops.sequence_logprobs(
        cat(case.hidden), case.weight, cat(case.targets), shuffled_cu, cat(case.loss_mask), backend=backend
    )
    for chunks in [TorchBackend(token_chunk=3, vocab_chunk=50), TorchBackend(token_chunk=1000)]:
        assert_close(ops.sequence_logprobs(*args(case), backend=chunks), packed, 1e-6, f"chunks {chunks.plan(99, 999)}")
    for position, i in enumerate(order.tolist()):
        s = spans[position]
        alone = ops.sequence_logprobs(
            case.hidden[s], case.weight, case.targets[s], torch.tensor([0, s.stop - s.start], dtype=torch.int32),
            case.loss_mask[s], backend=backend,
        )
        assert_close(alone, packed[i : i + 1], 1e-6, f"sequence {i} alone")
        assert_close(shuffled[position : position + 1], packed[i : i + 1], 1e-6, f"sequence {i} reordered")


class RowCounter:
    """A backend wrapper that records how many rows reach the matmuls."""

    def __init__(self, inner):
        self.inner, self.rows = inner, []

    def __getattr__(self, name):
        method = getattr(self.inner, name)

        def recorded(hidden, *args):
            self.rows.append(hidden.shape[0])
            return method(hidden, *args)

        return recorded


def test_masked_positions_never_reach_the_backend():
    case = random_case(5)
    counted = int(((case.targets != -100) & case.loss_mask).sum())
    spy = RowCounter(TorchBackend())
    loss = ops.weighted_sequence_loss(
        case.hidden.requires_grad_(), case.weight, case.targets, case.cu_seqlens, case.seq_weights,
        case.loss_mask, backend=spy,
    )
    loss.backward()
    seq = ops.sequence_logprobs(case.hidden, case.weight, case.targets, case.cu_seqlens, case.loss_mask, backend=spy)
    seq.sum().backward()
    assert spy.rows == [counted] * 3  # forward_backward, forward, backward
    masked = ~((case.targets != -100) & case.loss_mask)
    assert float(case.hidden.grad[masked].abs().max()) == 0.0


@pytest.mark.parametrize("normalize", ["tokens", "sequences", "none"])
def test_zero_normaliser_gives_zero_loss_and_gradients(normalize):
    case = random_case(2)
    case.hidden.requires_grad_()
    zero_weights = torch.zeros_like(case.seq_weights)
    loss = ops.weighted_sequence_loss(case.hidden, case.weight, case.targets, case.cu_seqlens, zero_weights,
                                      case.loss_mask, normalize=normalize)
    loss.backward()
    assert float(loss) == 0.0 and not torch.isnan(case.hidden.grad).any()
    assert float(case.hidden.grad.abs().max()) == 0.0


def test_nothing_counted_gives_zeros():
    hidden = torch.randn(4, 5, requires_grad=True)
    weight = torch.randn(11, 5, requires_grad=True)
    targets = torch.full((4,), -100)
    cu = torch.tensor([0, 4], dtype=torch.int32)
    assert ops.sequence_logprobs(hidden, weight, targets, cu).tolist() == [0.0]
    loss = ops.weighted_sequence_loss(hidden, weight, targets, cu, torch.ones(1))
    loss.backward()
    assert float(loss) == 0.0 and float(weight.grad.abs().sum()) == 0.0
    empty = ops.sequence_logprobs(hidden[:0], weight, targets[:0], torch.zeros(1, dtype=torch.int32))
    assert empty.shape == (0,)


def test_integer_inputs_get_no_gradient():
    case = random_case(1)
    case.hidden.requires_grad_()
    loss = ops.weighted_sequence_loss(case.hidden, case.weight, case.targets, case.cu_seqlens,
                                      case.seq_weights.requires_grad_(), case.loss_mask)
    loss.backward()
    assert case.weight.grad is None and case.seq_weights.grad is None and case.targets.grad is None


def test_weighted_loss_backward_scales_with_the_incoming_gradient():
    case = random_case(3)
    grads = []
    for scale in (1.0, -2.5):
        loss = ops.weighted_sequence_loss(case.hidden.requires_grad_(), case.weight.requires_grad_(), case.targets,
                                          case.cu_seqlens, case.seq_weights, case.loss_mask)
        grads.append(torch.autograd.grad(loss * scale, [case.hidden, case.weight]))
    for unit, scaled in zip(*grads):
        torch.testing.assert_close(scaled, -2.5 * unit)


def test_default_plan_bounds_the_workspace():
    backend = TorchBackend()
    for rows, vocab in ((4096, 32000), (1024, 128256), (100_000, 128256), (300, 50), (1, 7)):
        token_chunk, vocab_chunk = backend.plan(rows, vocab)
        assert vocab_chunk == vocab and 1 <= token_chunk <= rows
        workspace = 4 * token_chunk * vocab
        assert workspace <= backend.workspace_bytes
        assert workspace <= 0.2 * 4 * rows * vocab or token_chunk == min(rows, backend.min_token_chunk)
