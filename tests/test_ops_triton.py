"""The `triton` backend under TRITON_INTERPRET=1 (set in conftest.py), against the float64 formula.

Small tiles (16 rows x 32 vocabulary x 16 hidden, 64 columns per forward program) so that the small shapes
here still cover several row, vocabulary and hidden tiles, several vocabulary splits and every tail.

    PYTHONPATH=. python -m pytest tests/test_ops_triton.py      # about 30 s on 2 cores
"""
import pytest
import torch

from ibpo_fast.ops import naive_token_logprobs, sequence_logprobs, token_logprobs, weighted_sequence_loss
from ibpo_fast.ops import triton_kernels
from ibpo_fast.ops.triton_backend import TritonBackend

SMALL = TritonBackend(block_rows=16, block_vocab=32, block_hidden=16, vocab_per_program=64)
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 1e-2}


def assert_close(actual, expected, rel, what, scale=None):
    """max |actual - expected| <= rel * scale (default max |expected|), naming the worst element on failure."""
    actual, expected = actual.detach().double(), expected.detach().double()
    error = (actual - expected).abs()
    scale = (expected.abs().max() if scale is None else scale).clamp(min=1e-30)
    worst = int(error.argmax()) if error.numel() else 0
    assert error.numel() == 0 or error.max() <= rel * scale, (
        f"{what}: max error {float(error.max()):.3g} > {rel:g} * {float(scale):.3g} at flat index {worst}: "
        f"got {float(actual.flatten()[worst]):.8g}, expected {float(expected.flatten()[worst]):.8g}"
    )


def packed_batch(seed, lengths, hidden_size, vocab, dtype):
    """Random packed rollouts: -100 at each sequence's last position, about 30% of the tokens masked."""
    gen = torch.Generator().manual_seed(seed)
    cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    num_tokens = int(cu_seqlens[-1])
    hidden = torch.randn(num_tokens, hidden_size, generator=gen).to(dtype)
    weight = (torch.randn(vocab, hidden_size, generator=gen) * 3 / hidden_size**0.5).to(dtype)
    targets = torch.randint(0, vocab, (num_tokens,), generator=gen)
    ends = cu_seqlens[1:][cu_seqlens[1:] > cu_seqlens[:-1]].long() - 1
    targets[ends] = -100
    loss_mask = torch.rand(num_tokens, generator=gen) > 0.3
    return hidden, weight, targets, cu_seqlens, loss_mask


def f64_sequence_logprobs(hidden, weight, targets, cu_seqlens, loss_mask, temperature):
    """The oracle: the naive f64 formula on the same (possibly bf16) values, with autograd."""
    counted_targets = torch.where(loss_mask, targets, torch.full_like(targets, -100))
    logp = naive_token_logprobs(hidden, weight, counted_targets, temperature=temperature)
    sequence = torch.repeat_interleave(torch.arange(cu_seqlens.numel() - 1), cu_seqlens.diff().long())
    return logp.new_zeros(cu_seqlens.numel() - 1).index_add(0, sequence, logp), counted_targets


def leaves(hidden, weight):
    """Autograd leaves: the inputs as they are, and their f64 copies for the oracle."""
    return (hidden.clone().requires_grad_(), weight.clone().requires_grad_(),
            hidden.double().requires_grad_(), weight.double().requires_grad_())


# -- the row ops, straight against the formula ------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("rows,hidden_size,vocab", [(37, 45, 150), (16, 17, 33), (5, 16, 200)])
def test_row_ops_match_f64(dtype, rows, hidden_size, vocab):
    hidden, weight, targets, _, _ = packed_batch(rows + vocab, [rows], hidden_size, vocab, dtype)
    targets = targets.clamp(min=0)
    # tiny, like the weighted loss's 1 / (selected tokens): f16 gradient tiles must not underflow
    grad_logp = torch.randn(rows, generator=torch.Generator().manual_seed(1)) * 1e-6
    inv_temp = 1 / 0.7
    logp, lse = SMALL.forward(hidden, weight, targets, inv_temp)
    logits = hidden.double() @ weight.double().T * inv_temp
    expected_lse = logits.logsumexp(1)
    assert logp.dtype == lse.dtype == torch.float32
    assert_close(lse, expected_lse, TOLERANCE[dtype], "lse")
    assert_close(logp, logits.gather(1, targets[:, None]).squeeze(1) - expected_lse, TOLERANCE[dtype], "logp")

    h64, w64 = hidden.double().requires_grad_(), weight.double().requires_grad_()
    (naive_token_logprobs(h64, w64, targets, temperature=0.7) * grad_logp.double()).sum().backward()
    d_hidden, d_weight = SMALL.backward(hidden, weight, targets, lse, grad_logp, inv_temp)
    assert d_hidden.dtype == d_weight.dtype == torch.float32
    assert_close(d_hidden, h64.grad, TOLERANCE[dtype], "d_hidden")
    assert_close(d_weight, w64.grad, TOLERANCE[dtype], "d_weight")

    fused_logp, fused_d_hidden, fused_d_weight = SMALL.forward_backward(hidden, weight, targets, grad_logp, inv_temp)
    assert torch.equal(fused_logp, logp)
    assert torch.equal(fused_d_hidden, d_hidden) and torch.equal(fused_d_weight, d_weight)


def test_zero_coefficient_blocks():
    """Row blocks whose coefficients are all 0 (unselected sequences) are skipped; the others still count."""
    hidden, weight, targets, _, _ = packed_batch(8, [53], 20, 90, torch.bfloat16)
    targets[-1] = 5
    coef = torch.randn(53, generator=torch.Generator().manual_seed(3))
    coef[:32] = 0  # two whole blocks of 16 rows, and a partly zero third one
    coef[40:45] = 0
    d_hidden = _forward_backward_matches_f64(hidden, weight, weight, targets, coef, 2e-2)
    assert torch.all(d_hidden[:32] == 0) and torch.all(d_hidden[40:45] == 0)


def _forward_backward_matches_f64(hidden, weight, weight_layout, targets, coef, tolerance):
    """SMALL.forward_backward on (hidden, weight_layout) against the f64 formula on (hidden, weight)."""
    logp, d_hidden, d_weight = SMALL.forward_backward(hidden, weight_layout, targets, coef, 1.0)
    h64, w64 = hidden.double().requires_grad_(), weight.double().requires_grad_()
    expected = naive_token_logprobs(h64, w64, targets)
    (expected * coef.double()).sum().backward()
    assert_close(logp, expected, tolerance, "logp")
    assert_close(d_hidden, h64.grad, tolerance, "d_hidden")
    assert_close(d_weight, w64.grad, tolerance, "d_weight")
    return d_hidden


def test_strided_weight():
    """A weight stored transposed ([H, V] memory, strides (1, V)) goes through the stride arguments."""
    hidden, weight, targets, _, _ = packed_batch(7, [20], 18, 70, torch.float32)
    targets[-1] = 0
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
    assert d_hidden.shape == (0, 16) and torch.equal(d_weight, torch.zeros(40, 16))


# -- the public API with the triton backend object ---------------------------------------------------------
CASES = [  # (seed, sequence lengths with empty and length-1 ones, H, V, temperature)
    (0, [7, 0, 19, 1, 30], 33, 97, 1.0),
    (1, [0, 25, 3, 0, 28], 17, 130, 0.6),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("seed,lengths,hidden_size,vocab,temperature", CASES)
def test_sequence_and_token_logprobs(dtype, seed, lengths, hidden_size, vocab, temperature):
    hidden, weight, targets, cu_seqlens, loss_mask = packed_batch(seed, lengths, hidden_size, vocab, dtype)
    h, w, h64, w64 = leaves(hidden, weight)
    seq = sequence_logprobs(h, w, targets, cu_seqlens, loss_mask, temperature=temperature, backend=SMALL)
    expected, counted_targets = f64_sequence_logprobs(h64, w64, targets, cu_seqlens, loss_mask, temperature)
    assert seq.dtype == torch.float32 and seq.shape == (len(lengths),)
    assert_close(seq, expected, TOLERANCE[dtype], "sequence_logprobs")
    assert torch.all(seq[torch.tensor(lengths) <= 1] == 0)
    seq_grad = torch.linspace(-1, 2, len(lengths))
    (seq * seq_grad).sum().backward()
    (expected * seq_grad.double()).sum().backward()
    assert h.grad.dtype == dtype and w.grad.dtype == dtype
    assert_close(h.grad, h64.grad, TOLERANCE[dtype], "d_hidden")
    assert_close(w.grad, w64.grad, TOLERANCE[dtype], "d_weight")
    assert torch.all(h.grad[counted_targets == -100] == 0)

    tok = token_logprobs(hidden, weight, counted_targets, temperature=temperature, backend=SMALL)
    expected_tok = naive_token_logprobs(hidden.double(), weight.double(), counted_targets, temperature=temperature)
    assert_close(tok, expected_tok, TOLERANCE[dtype], "token_logprobs")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("normalize", ["tokens", "sequences", "none"])
def test_weighted_sequence_loss(dtype, normalize):
    lengths = [12, 0, 9, 20, 1, 17]
    hidden, weight, targets, cu_seqlens, loss_mask = packed_batch(3, lengths, 21, 75, dtype)
    seq_weights = torch.tensor([1.0, 0.5, 0.0, -0.7, 2.0, 0.0])
    h, w, h64, w64 = leaves(hidden, weight)
    loss = weighted_sequence_loss(
        h, w, targets, cu_seqlens, seq_weights, loss_mask, normalize=normalize, temperature=1.3, backend=SMALL
    )
    seq64, counted_targets = f64_sequence_logprobs(h64, w64, targets, cu_seqlens, loss_mask, 1.3)
    sequence = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    counted = (counted_targets != -100).double()
    num_tokens = torch.zeros(len(lengths), dtype=torch.float64).index_add(0, sequence, counted)
    normaliser = {"tokens": (seq_weights.abs().double() * num_tokens).sum(),
                  "sequences": seq_weights.abs().double().sum(), "none": torch.tensor(1.0, dtype=torch.float64)}
    expected = -(seq_weights.double() * seq64).sum() / normaliser[normalize]
    assert loss.dtype == torch.float32 and loss.shape == ()
    # the terms have both signs: measure against the size of the terms, not of their (cancelling) sum
    term_scale = (seq_weights.double() * seq64).abs().sum().detach() / normaliser[normalize]
    assert_close(loss, expected, TOLERANCE[dtype], "loss", scale=term_scale)
    loss.backward()
    expected.backward()
    assert_close(h.grad, h64.grad, TOLERANCE[dtype], "d_hidden")
    assert_close(w.grad, w64.grad, TOLERANCE[dtype], "d_weight")


def test_zero_weights_and_all_masked():
    hidden, weight, targets, cu_seqlens, loss_mask = packed_batch(4, [10, 6], 16, 40, torch.float32)
    h, w, _, _ = leaves(hidden, weight)
    loss = weighted_sequence_loss(h, w, targets, cu_seqlens, torch.zeros(2), loss_mask, backend=SMALL)
    loss.backward()
    assert loss.item() == 0 and torch.all(h.grad == 0) and torch.all(w.grad == 0)
    h, w, _, _ = leaves(hidden, weight)
    nothing = torch.zeros_like(loss_mask)
    assert torch.all(sequence_logprobs(h, w, targets, cu_seqlens, nothing, backend=SMALL) == 0)
    loss = weighted_sequence_loss(h, w, targets, cu_seqlens, torch.ones(2), nothing, backend=SMALL)
    loss.backward()
    assert loss.item() == 0 and torch.all(h.grad == 0) and torch.all(w.grad == 0)


# -- batch invariance ---------------------------------------------------------------------------------------
def test_batch_invariance():
    """Sequence 0's log-prob ignores its neighbours, their order and the tile sizes (1e-6 relative)."""
    hidden, weight, targets, cu_seqlens, loss_mask = packed_batch(5, [23, 14, 31, 9], 19, 111, torch.float32)
    bounds = cu_seqlens.tolist()
    pieces = [slice(bounds[i], bounds[i + 1]) for i in range(4)]

    def logprob_of_first(order, backend):
        index = torch.cat([torch.arange(pieces[i].start, pieces[i].stop) for i in order])
        lengths = torch.tensor([pieces[i].stop - pieces[i].start for i in order])
        cu = torch.cat([torch.zeros(1, dtype=torch.int32), lengths.cumsum(0).to(torch.int32)])
        seq = sequence_logprobs(hidden[index], weight, targets[index], cu, loss_mask[index], backend=backend)
        return seq[order.index(0)]

    alone = logprob_of_first([0], SMALL)
    other_tiles = TritonBackend(block_rows=32, block_vocab=16, block_hidden=32, vocab_per_program=16)
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
    hidden, weight, targets, _, _ = packed_batch(6, [9], 16, 20, torch.float32)
    targets[-1] = 3
    assert_close(
        token_logprobs(hidden, weight, targets, backend="triton"),
        naive_token_logprobs(hidden.double(), weight.double(), targets), 1e-5, "token_logprobs via 'triton'",
    )


@pytest.mark.parametrize("field,value", [("block_rows", 24), ("block_vocab", 8), ("f32_precision", "fast")])
def test_bad_options(field, value):
    with pytest.raises(ValueError, match=field):
        TritonBackend(**{field: value})


def test_float64_is_refused():
    hidden, weight = torch.zeros(3, 16, dtype=torch.float64), torch.zeros(5, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match="hidden: backend 'triton' takes f32, bf16 or f16"):
        SMALL.forward(hidden, weight, torch.zeros(3, dtype=torch.int64), 1.0)
