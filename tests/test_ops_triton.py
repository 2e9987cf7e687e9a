"""The `triton` backend under TRITON_INTERPRET=1 (set in conftest.py), against the float64 formula.

Small tiles (16 rows x 32 vocabulary x 16 hidden, 64 columns per forward program) so that the small shapes
here still cover several row, vocabulary and hidden tiles, several vocabulary splits and every tail; the
default launch table runs in test_batch_invariance, test_for_tensor and tests/test_ops_real_vocab.py.

    pytest tests/test_ops_triton.py      # about 30 s on 2 cores
"""
import pytest
import torch

from ibpo_fast.ops import naive_token_logprobs, sequence_logprobs, token_logprobs, weighted_sequence_loss
from ibpo_fast.ops import triton_kernels
from ibpo_fast.ops.triton_backend import Tiles, TritonBackend
from ops_cases import assert_close, oracle, packed_case, run_op, sequence_ids

SMALL = TritonBackend(tiles=Tiles(16, 32, 16), vocab_per_program=64)
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 1e-2}


def row_inputs(seed, rows, hidden_size, vocab, dtype):
    """hidden [rows, H], weight [V, H] and targets all in [0, V): what the orchestration hands a backend."""
    case = packed_case(seed, [rows], hidden_size, vocab, dtype=dtype)
    targets = torch.randint(0, vocab, (rows,), generator=torch.Generator().manual_seed(seed))
    return case.hidden, case.weight, targets


def f64_row_grads(hidden, weight, targets, grad_logp, temperature=1.0):
    h64, w64 = hidden.double().requires_grad_(), weight.double().requires_grad_()
    logp = naive_token_logprobs(h64, w64, targets, temperature=temperature)
    return (logp.detach(), *torch.autograd.grad((logp * grad_logp.double()).sum(), [h64, w64]))


# -- the row ops, straight against the formula ------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("rows,hidden_size,vocab", [(37, 45, 150), (16, 17, 33), (5, 16, 200)])
def test_row_ops_match_f64(dtype, rows, hidden_size, vocab):
    hidden, weight, targets = row_inputs(rows + vocab, rows, hidden_size, vocab, dtype)
    # tiny, like the weighted loss's 1 / (selected tokens): f16 gradient tiles must not underflow
    grad_logp = torch.randn(rows, generator=torch.Generator().manual_seed(1)) * 1e-6
    inv_temp = 1 / 0.7
    logp, lse = SMALL.forward(hidden, weight, targets, inv_temp)
    expected_lse = (hidden.double() @ weight.double().T * inv_temp).logsumexp(1)
    expected_logp, expected_dh, expected_dw = f64_row_grads(hidden, weight, targets, grad_logp, temperature=0.7)
    assert logp.dtype == lse.dtype == torch.float32
    assert_close(lse, expected_lse, TOLERANCE[dtype], "lse")
    assert_close(logp, expected_logp, TOLERANCE[dtype], "logp")

    d_hidden, d_weight = SMALL.backward(hidden, weight, targets, lse, grad_logp, inv_temp)
    assert d_hidden.dtype == d_weight.dtype == torch.float32
    assert_close(d_hidden, expected_dh, TOLERANCE[dtype], "d_hidden")
    assert_close(d_weight, expected_dw, TOLERANCE[dtype], "d_weight")

    fused_logp, fused_d_hidden, fused_d_weight = SMALL.forward_backward(hidden, weight, targets, grad_logp, inv_temp)
    # one pass over the vocabulary instead of the forward's splits: equal up to the order of the f32 sums
    assert_close(fused_logp, logp, 1e-6, "forward_backward logp vs forward", scale=logp.abs().max() + 1)
    assert torch.equal(fused_d_hidden, d_hidden) and torch.equal(fused_d_weight, d_weight)


def test_likely_target_keeps_its_gradient():
    """p_target ~ 0.999 in bf16: d_hidden ~ (1 - p) * W is small, and a kernel that rounded p to bf16 before
    subtracting it from 1 would get it wrong by ~40 %; within bf16 rounding of the f64 gradient here."""
    hidden, weight, targets = row_inputs(11, 20, 32, 96, torch.float32)
    hidden += 9 * weight[targets] / weight[targets].norm(dim=1, keepdim=True) ** 2 * 3  # target logit ~27 higher
    hidden, weight = hidden.bfloat16(), weight.bfloat16()
    grad_logp = torch.ones(20)
    logp, d_hidden, d_weight = SMALL.forward_backward(hidden, weight, targets, grad_logp, 1.0)
    expected_logp, expected_dh, expected_dw = f64_row_grads(hidden, weight, targets, grad_logp)
    assert float(expected_logp.exp().min()) > 0.99
    assert_close(d_hidden, expected_dh, 2e-2, "d_hidden")
    assert_close(d_weight, expected_dw, 2e-2, "d_weight")


def test_zero_coefficient_blocks():
    """Row blocks whose coefficients are all 0 (unselected sequences) are skipped; the others still count."""
    hidden, weight, targets = row_inputs(8, 53, 20, 90, torch.bfloat16)
    coef = torch.randn(53, generator=torch.Generator().manual_seed(3))
    coef[:32] = 0  # two whole blocks of 16 rows, and a partly zero third one
    coef[40:45] = 0
    d_hidden = _forward_backward_matches_f64(hidden, weight, weight, targets, coef, 2e-2)
    assert torch.all(d_hidden[:32] == 0) and torch.all(d_hidden[40:45] == 0)


def _forward_backward_matches_f64(hidden, weight, weight_layout, targets, coef, tolerance):
    """SMALL.forward_backward on (hidden, weight_layout) against the f64 formula on (hidden, weight)."""
    logp, d_hidden, d_weight = SMALL.forward_backward(hidden, weight_layout, targets, coef, 1.0)
    expected_logp, expected_dh, expected_dw = f64_row_grads(hidden, weight, targets, coef)
    assert_close(logp, expected_logp, tolerance, "logp")
    assert_close(d_hidden, expected_dh, tolerance, "d_hidden")
    assert_close(d_weight, expected_dw, tolerance, "d_weight")
    return d_hidden


def test_strided_weight():
    """A weight stored transposed ([H, V] memory, strides (1, V)) goes through the stride arguments."""
    hidden, weight, targets = row_inputs(7, 20, 18, 70, torch.float32)
    transposed = weight.T.contiguous().T
    assert transposed.stride() == (1, 70)
    grad_logp = torch.randn(20, generator=torch.Generator().manual_seed(2))
    _forward_backward_matches_f64(hidden, weight, transposed, targets, grad_logp, 1e-5)


def test_no_rows():
    weight = torch.randn(40, 16)
    logp, lse = SMALL.forward(torch.zeros(0, 16), weight, torch.zeros(0, dtype=torch.int64), 1.0)
    assert logp.shape == lse.shape == (0,)
    logp, d_hidden, d_weight = SMALL.forward_backward(
        torch.zeros(0, 16), weight, torch.zeros(0, dtype=torch.int64), torch.zeros(0), 1.0
    )
    assert logp.shape == (0,) and d_hidden.shape == (0, 16) and torch.equal(d_weight, torch.zeros(40, 16))


# -- the public API with the triton backend object ---------------------------------------------------------
CASES = [  # (seed, sequence lengths with empty and length-1 ones, H, V, temperature)
    (0, [7, 0, 19, 1, 30], 33, 97, 1.0),
    (1, [0, 25, 3, 0, 28], 17, 130, 0.6),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("seed,lengths,hidden_size,vocab,temperature", CASES)
@pytest.mark.parametrize("op", ["token", "sequence"])
def test_sequence_and_token_logprobs(dtype, seed, lengths, hidden_size, vocab, temperature, op):
    case = packed_case(seed, lengths, hidden_size, vocab, dtype=dtype, temperature=temperature)
    value, d_hidden, d_weight = run_op(op, case, SMALL)
    want = oracle(case, op)
    assert value.dtype == torch.float32 and d_hidden.dtype == dtype and d_weight.dtype == dtype
    for what, got, expected in zip(("value", "d_hidden", "d_weight"), (value, d_hidden, d_weight), want):
        assert_close(got, expected, TOLERANCE[dtype], f"{op} {what}")
    if op == "sequence":
        assert torch.all(value[torch.tensor(lengths) <= 1] == 0)  # empty, or only a -100 target
    uncounted = (case.targets == -100) | (~case.loss_mask if op == "sequence" else torch.zeros_like(case.loss_mask))
    assert torch.all(d_hidden[uncounted] == 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("normalize", ["tokens", "sequences", "none"])
def test_weighted_sequence_loss(dtype, normalize):
    case = packed_case(3, [12, 0, 9, 20, 1, 17], 21, 75, dtype=dtype, temperature=1.3)
    case.seq_weights = torch.tensor([1.0, 0.5, 0.0, -0.7, 2.0, 0.0])
    op = f"loss-{normalize}"
    loss, d_hidden, d_weight = run_op(op, case, SMALL)
    want = oracle(case, op)
    assert loss.dtype == torch.float32 and loss.shape == ()
    # the terms have both signs: measure against the size of the terms, not of their (cancelling) sum
    w, seq64 = case.seq_weights.double(), oracle(case, "sequence")[0]
    counted = ((case.targets != -100) & case.loss_mask).double()
    tokens = torch.zeros(6, dtype=torch.float64).index_add(0, sequence_ids(case.cu_seqlens), counted)
    normaliser = {"tokens": (w.abs() * tokens).sum(), "sequences": w.abs().sum(), "none": 1.0}[normalize]
    term_scale = (w * seq64).abs().sum() / normaliser
    assert_close(loss, want[0], TOLERANCE[dtype], "loss", scale=term_scale)
    assert_close(d_hidden, want[1], TOLERANCE[dtype], "d_hidden")
    assert_close(d_weight, want[2], TOLERANCE[dtype], "d_weight")


def test_zero_weights_and_all_masked():
    case = packed_case(4, [10, 6], 16, 40)
    h, w = case.hidden.requires_grad_(), case.weight.requires_grad_()
    loss = weighted_sequence_loss(h, w, case.targets, case.cu_seqlens, torch.zeros(2), case.loss_mask, backend=SMALL)
    loss.backward()
    assert loss.item() == 0 and torch.all(h.grad == 0) and torch.all(w.grad == 0)
    h.grad = w.grad = None
    nothing = torch.zeros_like(case.loss_mask)
    assert torch.all(sequence_logprobs(h, w, case.targets, case.cu_seqlens, nothing, backend=SMALL) == 0)
    loss = weighted_sequence_loss(h, w, case.targets, case.cu_seqlens, torch.ones(2), nothing, backend=SMALL)
    loss.backward()
    assert loss.item() == 0 and torch.all(h.grad == 0) and torch.all(w.grad == 0)


# -- batch invariance ---------------------------------------------------------------------------------------
def test_batch_invariance():
    """Sequence 0's log-prob ignores its neighbours, their order and the tile sizes (1e-6 relative)."""
    case = packed_case(5, [23, 14, 31, 9], 19, 111)
    bounds = case.cu_seqlens.tolist()
    pieces = [slice(bounds[i], bounds[i + 1]) for i in range(4)]

    def logprob_of_first(order, backend):
        index = torch.cat([torch.arange(pieces[i].start, pieces[i].stop) for i in order])
        lengths = torch.tensor([pieces[i].stop - pieces[i].start for i in order])
        cu = torch.cat([torch.zeros(1, dtype=torch.int32), lengths.cumsum(0).to(torch.int32)])
        seq = sequence_logprobs(case.hidden[index], case.weight, case.targets[index], cu, case.loss_mask[index],
                                backend=backend)
        return seq[order.index(0)]

    alone = logprob_of_first([0], SMALL)
    other_tiles = TritonBackend(tiles=Tiles(32, 16, 32), vocab_per_program=16)
    for order, backend in [([0, 1, 2, 3], SMALL), ([2, 0, 3, 1], SMALL), ([3, 1, 2, 0], SMALL),
                           ([0], other_tiles), ([1, 2, 0], other_tiles), ([0], TritonBackend())]:
        got = logprob_of_first(order, backend)
        assert abs(float(got - alone)) <= 1e-6 * abs(float(alone)), (order, backend, float(got), float(alone))


# -- selection and argument errors -------------------------------------------------------------------------
def test_for_tensor():
    cpu = torch.zeros(2, 4)
    with pytest.raises(ValueError, match="backend: 'triton' needs CUDA tensors"):
        TritonBackend.for_tensor(cpu, interpreting=False)
    assert triton_kernels.INTERPRETED  # conftest set TRITON_INTERPRET=1 before the kernels were imported
    assert TritonBackend.for_tensor(cpu) == TritonBackend()
    # the string name reaches the same backend through the orchestration
    hidden, weight, targets = row_inputs(6, 9, 16, 20, torch.float32)
    assert_close(token_logprobs(hidden, weight, targets, backend="triton"),
                 naive_token_logprobs(hidden.double(), weight.double(), targets), 1e-5, "token_logprobs via 'triton'")


@pytest.mark.parametrize("options,field", [
    (dict(block_rows=24, block_vocab=32, block_hidden=16), "block_rows"),
    (dict(block_rows=16, block_vocab=8, block_hidden=16), "block_vocab"),
    (dict(block_rows=16, block_vocab=32, block_hidden=16, num_warps=3), "num_warps"),
])
def test_bad_tiles(options, field):
    with pytest.raises(ValueError, match=field):
        Tiles(**options)


@pytest.mark.parametrize("options,field", [(dict(f32_precision="fast"), "f32_precision"),
                                           (dict(vocab_per_program=0), "vocab_per_program")])
def test_bad_options(options, field):
    with pytest.raises(ValueError, match=field):
        TritonBackend(**options)


def test_float64_is_refused():
    hidden, weight = torch.zeros(3, 16, dtype=torch.float64), torch.zeros(5, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match="hidden: backend 'triton' takes f32, bf16 or f16"):
        SMALL.forward(hidden, weight, torch.zeros(3, dtype=torch.int64), 1.0)
