"""Random packed cases and the float64 oracle shared by the ops tests of every backend."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ibpo_fast.ops import naive_token_logprobs


@dataclass
class Case:
    hidden: torch.Tensor  # [T, H]
    weight: torch.Tensor  # [V, H]
    targets: torch.Tensor  # [T]
    cu_seqlens: torch.Tensor  # [N+1] int32
    loss_mask: torch.Tensor  # [T] bool
    seq_weights: torch.Tensor  # [N]
    temperature: float


def random_case(seed: int, *, max_tokens=200, max_vocab=300, dtype=torch.float32) -> Case:
    """Ragged lengths with empty and length-1 sequences, masked tokens and -100 targets."""
    g = torch.Generator().manual_seed(seed)
    randint = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=g))  # noqa: E731
    num_sequences = randint(1, 6)
    lengths = torch.randint(0, max(2, max_tokens // num_sequences), (num_sequences,), generator=g)
    lengths[randint(0, num_sequences - 1)] = 0
    if num_sequences > 2:
        lengths[randint(0, num_sequences - 1)] = 1
    if int(lengths.sum()) == 0:
        lengths[0] = 3
    T = int(lengths.sum())
    H = randint(3, 24) | 1  # odd
    V = randint(17, max_vocab) | 1
    cu = torch.zeros(num_sequences + 1, dtype=torch.int32)
    cu[1:] = lengths.cumsum(0)
    targets = torch.randint(0, V, (T,), generator=g)
    targets[torch.rand(T, generator=g) < 0.1] = -100
    seq_weights = torch.rand(num_sequences, generator=g) * 2 - 0.5
    seq_weights[torch.rand(num_sequences, generator=g) < 0.3] = 0.0
    return Case(
        hidden=(torch.randn(T, H, generator=g) * 2).to(dtype),
        weight=(torch.randn(V, H, generator=g) / H**0.5 * 3).to(dtype),
        targets=targets,
        cu_seqlens=cu,
        loss_mask=torch.rand(T, generator=g) < 0.7,
        seq_weights=seq_weights,
        temperature=[1.0, 0.7, 1.3][seed % 3],
    )


def sequence_ids(cu_seqlens: torch.Tensor) -> torch.Tensor:
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).to(torch.int64)
    return torch.repeat_interleave(torch.arange(lengths.numel()), lengths)


def oracle(case: Case, op: str, normalize: str = "tokens"):
    """The plain formula in float64 on the case's own (possibly bf16) values -> (value, d_hidden, d_weight)."""
    hidden = case.hidden.detach().double().requires_grad_()
    weight = case.weight.detach().double().requires_grad_()
    token_logp = naive_token_logprobs(hidden, weight, case.targets, temperature=case.temperature)
    if op == "token":
        value = token_logp
    else:
        counted = ((case.targets != -100) & case.loss_mask).double()
        seq = sequence_ids(case.cu_seqlens)
        N = case.cu_seqlens.numel() - 1
        seq_logp = torch.zeros(N, dtype=torch.float64).index_add(0, seq, token_logp * counted)
        if op == "sequence":
            value = seq_logp
        else:
            w = case.seq_weights.double()
            n = torch.zeros(N, dtype=torch.float64).index_add(0, seq, counted)
            z = {"tokens": (w.abs() * n).sum(), "sequences": w.abs().sum(), "none": torch.tensor(1.0)}[normalize]
            value = -(w * seq_logp).sum() / z if float(z) > 0 else (w * seq_logp).sum() * 0.0
    probe = _probe(value)
    d_hidden, d_weight = torch.autograd.grad((value * probe).sum(), [hidden, weight], allow_unused=True)
    return value.detach(), d_hidden, d_weight


def _probe(value: torch.Tensor) -> torch.Tensor:
    """Fixed random output weights, so the gradient check covers every output element differently."""
    g = torch.Generator().manual_seed(1234)
    return torch.randn(value.shape, generator=g, dtype=torch.float64) if value.dim() else torch.ones((), dtype=torch.float64)


def assert_close(actual, expected, rel: float, what: str) -> None:
    """max |actual - expected| <= rel * max |expected|: relative to the tensor's scale, not per element."""
    actual, expected = actual.detach().double(), expected.detach().double()
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    error = (actual - expected).abs()
    scale = max(float(expected.abs().max()) if expected.numel() else 0.0, 1e-12)
    if error.numel() and float(error.max()) > rel * scale:
        worst = int(error.argmax())
        raise AssertionError(
            f"{what}: max abs error {float(error.max()):.3e} > {rel:.1e} * {scale:.3e} at flat index {worst} "
            f"(got {float(actual.flatten()[worst]):.8g}, want {float(expected.flatten()[worst]):.8g})"
        )
