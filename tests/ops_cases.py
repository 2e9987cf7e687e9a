"""Packed cases, the ops run on them, and the float64 oracle: shared by the ops tests of every backend."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ibpo_fast import ops
from ibpo_fast.ops import naive_token_logprobs

OPS = ["token", "sequence", "loss-tokens", "loss-sequences", "loss-none"]


@dataclass
class Case:
    hidden: torch.Tensor  # [T, H]
    weight: torch.Tensor  # [V, H]
    targets: torch.Tensor  # [T]
    cu_seqlens: torch.Tensor  # [N+1] int32
    loss_mask: torch.Tensor  # [T] bool
    seq_weights: torch.Tensor  # [N]
    temperature: float


def packed_case(seed: int, lengths, hidden_size: int, vocab: int, *, dtype=torch.float32, temperature=1.0,
                lm_logits: bool = False) -> Case:
    """Packed rollouts of the given sequence lengths: target -100 at each sequence's last position (as
    `packing.pack` writes) and on ~10% more, ~30% of the tokens masked, sequence weights of both signs and 0.

    Logits are N(0, 3^2) by default. ``lm_logits`` gives the shape of a real LM head's instead (measured on
    SmolLM2-135M: row std ~3.6, max ~22 above the row mean): a bulk of std 3 and one likely token per row
    about 20 above it, the target half the time. There almost all of the sum of exponentials is bulk terms
    ~e^-20 of the largest, the case where a naive f32 accumulation drops them.
    """
    g = torch.Generator().manual_seed(seed)
    lengths = torch.as_tensor(lengths, dtype=torch.int64)
    cu = torch.zeros(lengths.numel() + 1, dtype=torch.int32)
    cu[1:] = lengths.cumsum(0)
    T = int(cu[-1])
    hidden = torch.randn(T, hidden_size, generator=g)
    weight = torch.randn(vocab, hidden_size, generator=g) * (3 / hidden_size**0.5)
    targets = torch.randint(0, vocab, (T,), generator=g)
    if lm_logits:
        likely = torch.randint(0, vocab, (T,), generator=g)
        norms = weight[likely].norm(dim=1, keepdim=True)
        hidden += weight[likely] * (20 / norms**2)
        targets = torch.where(torch.rand(T, generator=g) < 0.5, likely, targets)
    targets[torch.rand(T, generator=g) < 0.1] = -100
    targets[cu[1:][lengths > 0].long() - 1] = -100
    seq_weights = torch.rand(lengths.numel(), generator=g) * 2 - 0.5
    seq_weights[torch.rand(lengths.numel(), generator=g) < 0.3] = 0.0
    return Case(hidden=hidden.to(dtype), weight=weight.to(dtype), targets=targets, cu_seqlens=cu,
                loss_mask=torch.rand(T, generator=g) < 0.7, seq_weights=seq_weights, temperature=temperature)


@dataclass
class RowCase:
    """Rows for a backend's row ops (`forward`, `forward_backward`) and their float64 references."""
    hidden: torch.Tensor  # [R, H]
    weight: torch.Tensor  # [V, H]
    targets: torch.Tensor  # [R], none ignored
    coef: torch.Tensor  # [R], the per-row coefficients of forward_backward
    inv_temperature: float
    want: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # f64 token log-probs, d_hidden, d_weight of sum(coef * logp)


def row_case(vocab: int, hidden_size: int, rows: int = 16, temperature: float = 0.9) -> RowCase:
    """LM-shaped logits (`packed_case(lm_logits=True)`) on `rows` rows, for the Triton row ops at a real vocabulary."""
    case = packed_case(7, [rows], hidden_size, vocab, lm_logits=True)
    hidden, weight, targets = case.hidden, case.weight, case.targets.clamp(min=0)
    coef = torch.randn(rows, generator=torch.Generator().manual_seed(0))
    h64, w64 = hidden.double().requires_grad_(), weight.double().requires_grad_()
    logp64 = naive_token_logprobs(h64, w64, targets, temperature=temperature)
    want = (logp64.detach(), *torch.autograd.grad((logp64 * coef.double()).sum(), [h64, w64]))
    return RowCase(hidden, weight, targets, coef, 1 / temperature, want)


def random_case(seed: int, *, max_tokens=200, max_vocab=300, dtype=torch.float32) -> Case:
    """`packed_case` at random small sizes: 1-6 ragged sequences with an empty and a length-1 one, odd H and V."""
    g = torch.Generator().manual_seed(seed)
    randint = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=g))  # noqa: E731
    num_sequences = randint(1, 6)
    lengths = torch.randint(0, max(2, max_tokens // num_sequences), (num_sequences,), generator=g)
    lengths[randint(0, num_sequences - 1)] = 0
    if num_sequences > 2:
        lengths[randint(0, num_sequences - 1)] = 1
    if int(lengths.sum()) == 0:
        lengths[0] = 3
    return packed_case(seed, lengths, randint(3, 24) | 1, randint(17, max_vocab) | 1, dtype=dtype,
                       temperature=[1.0, 0.7, 1.3][seed % 3])


def run_op(op: str, case: Case, backend):
    """One of OPS on the case -> (value, d_hidden, d_weight). The gradients are of the value times a fixed
    random probe (`_probe`), so every output element enters them differently."""
    hidden, weight = case.hidden.detach().requires_grad_(), case.weight.detach().requires_grad_()
    op_name, _, normalize = _parse(op)
    if op_name == "token":
        value = ops.token_logprobs(hidden, weight, case.targets, temperature=case.temperature, backend=backend)
    elif op_name == "sequence":
        value = ops.sequence_logprobs(hidden, weight, case.targets, case.cu_seqlens, case.loss_mask,
                                      temperature=case.temperature, backend=backend)
    else:
        value = ops.weighted_sequence_loss(hidden, weight, case.targets, case.cu_seqlens, case.seq_weights,
                                           case.loss_mask, normalize=normalize, temperature=case.temperature,
                                           backend=backend)
    weighted = (value.double() * _probe(value)).sum() if value.dim() else value
    return (value, *torch.autograd.grad(weighted, [hidden, weight]))


def _parse(op: str) -> tuple[str, str, str]:
    op_name, sep, normalize = op.partition("-")
    return op_name, sep, normalize or "tokens"


def _probe(value: torch.Tensor) -> torch.Tensor:
    return torch.randn(value.shape, generator=torch.Generator().manual_seed(1234), dtype=torch.float64)


class PlainF32Backend:
    """A backend object whose row ops are autograd through `naive_token_logprobs` in f32, the [R, V] logits
    materialised: "the plain f32 formula" the torch backend is held to."""

    name = "plain-f32"

    def forward(self, hidden, weight, targets, inv_temp):
        logits = hidden.float() @ weight.float().T * inv_temp
        lse = logits.logsumexp(dim=1)
        return logits.gather(1, targets[:, None]).squeeze(1) - lse, lse

    def backward(self, hidden, weight, targets, lse, grad_logp, inv_temp):
        with torch.enable_grad():  # called from inside an autograd.Function's backward, where grad mode is off
            h, w = hidden.detach().float().requires_grad_(), weight.detach().float().requires_grad_()
            logp = naive_token_logprobs(h, w, targets, temperature=1 / inv_temp, dtype=torch.float32)
            return torch.autograd.grad((logp * grad_logp.float()).sum(), [h, w])

    def forward_backward(self, hidden, weight, targets, coef, inv_temp):
        logp, lse = self.forward(hidden, weight, targets, inv_temp)
        return (logp, *self.backward(hidden, weight, targets, lse, coef, inv_temp))


def sequence_ids(cu_seqlens: torch.Tensor) -> torch.Tensor:
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).to(torch.int64)
    return torch.repeat_interleave(torch.arange(lengths.numel()), lengths)


def oracle(case: Case, op: str):
    """The plain formula in float64 on the case's own (possibly bf16) values, with the [T, V] logits
    materialised, independent of every backend -> (value, d_hidden, d_weight) as `run_op` returns them."""
    hidden = case.hidden.detach().double().requires_grad_()
    weight = case.weight.detach().double().requires_grad_()
    token_logp = naive_token_logprobs(hidden, weight, case.targets, temperature=case.temperature)
    op_name, _, normalize = _parse(op)
    if op_name == "token":
        value = token_logp
    else:
        counted = ((case.targets != -100) & case.loss_mask).double()
        seq = sequence_ids(case.cu_seqlens)
        N = case.cu_seqlens.numel() - 1
        seq_logp = torch.zeros(N, dtype=torch.float64).index_add(0, seq, token_logp * counted)
        if op_name == "sequence":
            value = seq_logp
        else:
            w = case.seq_weights.double()
            n = torch.zeros(N, dtype=torch.float64).index_add(0, seq, counted)
            z = {"tokens": (w.abs() * n).sum(), "sequences": w.abs().sum(), "none": torch.tensor(1.0)}[normalize]
            value = -(w * seq_logp).sum() / z if float(z) > 0 else (w * seq_logp).sum() * 0.0
    weighted = (value * _probe(value)).sum() if value.dim() else value
    d_hidden, d_weight = torch.autograd.grad(weighted, [hidden, weight])
    return value.detach(), d_hidden, d_weight


def assert_close(actual, expected, rel: float, what: str, scale=None) -> None:
    """max |actual - expected| <= rel * scale (default max |expected|): relative to the tensor's scale, not per
    element; names the worst element on failure."""
    actual, expected = actual.detach().double(), expected.detach().double()
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    error = (actual - expected).abs()
    if scale is None:
        scale = float(expected.abs().max()) if expected.numel() else 0.0
    scale = max(float(scale), 1e-12)
    if error.numel() and float(error.max()) > rel * scale:
        worst = int(error.argmax())
        raise AssertionError(
            f"{what}: max abs error {float(error.max()):.3e} > {rel:.1e} * {scale:.3e} at flat index {worst} "
            f"(got {float(actual.flatten()[worst]):.8g}, want {float(expected.flatten()[worst]):.8g})"
        )
