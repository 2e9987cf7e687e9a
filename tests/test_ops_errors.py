"""Every input rule of DESIGN.md §3 raises a ValueError that names the argument."""
import pytest
import torch

from ibpo_fast import ops


def _args(**changes):
    T, H, V = 6, 4, 9
    args = dict(
        hidden=torch.randn(T, H), weight=torch.randn(V, H), targets=torch.randint(0, V, (T,)),
        cu_seqlens=torch.tensor([0, 2, 6], dtype=torch.int32), seq_weights=torch.ones(2),
        loss_mask=torch.ones(T, dtype=torch.bool),
    )
    args.update(changes)
    return args


def _loss(kwargs, **options):
    a = dict(kwargs)
    return ops.weighted_sequence_loss(
        a.pop("hidden"), a.pop("weight"), a.pop("targets"), a.pop("cu_seqlens"), a.pop("seq_weights"),
        a.pop("loss_mask"), **options,
    )


BAD = [
    ("hidden", dict(hidden=torch.randn(6))),
    ("hidden", dict(hidden=torch.randint(0, 3, (6, 4)))),
    ("weight", dict(weight=torch.randn(9, 5))),
    ("weight", dict(weight=torch.randn(9, 4, dtype=torch.float64))),
    ("weight", dict(weight=torch.randn(0, 4))),
    ("targets", dict(targets=torch.randint(0, 9, (5,)))),
    ("targets", dict(targets=torch.tensor([0, 1, 2, 9, 0, 0]))),
    ("targets", dict(targets=torch.tensor([0, 1, 2, -5, 0, 0]))),
    ("targets", dict(targets=torch.zeros(6))),
    ("cu_seqlens", dict(cu_seqlens=torch.tensor([1, 2, 6], dtype=torch.int32))),
    ("cu_seqlens", dict(cu_seqlens=torch.tensor([0, 2, 5], dtype=torch.int32))),
    ("cu_seqlens", dict(cu_seqlens=torch.tensor([0, 4, 2, 6], dtype=torch.int32), seq_weights=torch.ones(3))),
    ("cu_seqlens", dict(cu_seqlens=torch.tensor([0.0, 6.0]), seq_weights=torch.ones(1))),
    ("loss_mask", dict(loss_mask=torch.ones(5, dtype=torch.bool))),
    ("loss_mask", dict(loss_mask=torch.ones(6))),
    ("seq_weights", dict(seq_weights=torch.ones(3))),
    ("seq_weights", dict(seq_weights=torch.tensor([1.0, float("nan")]))),
    ("seq_weights", dict(seq_weights=torch.tensor([1, 0]))),
]


@pytest.mark.parametrize("name,changes", BAD, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD)])
def test_bad_input_names_the_argument(name, changes):
    with pytest.raises(ValueError, match=f"^{name}:"):
        _loss(_args(**changes))


@pytest.mark.parametrize("name,options", [
    ("temperature", dict(temperature=0.0)),
    ("temperature", dict(temperature=float("nan"))),
    ("normalize", dict(normalize="mean")),
    ("backend", dict(backend="cuda")),
])
def test_bad_options_name_the_argument(name, options):
    with pytest.raises(ValueError, match=f"^{name}:"):
        _loss(_args(), **options)


def test_token_and_sequence_ops_check_too():
    a = _args(targets=torch.tensor([0, 1, 2, 9, 0, 0]))
    with pytest.raises(ValueError, match="^targets:"):
        ops.token_logprobs(a["hidden"], a["weight"], a["targets"])
    a = _args(cu_seqlens=torch.tensor([0, 2, 7], dtype=torch.int32))
    with pytest.raises(ValueError, match="^cu_seqlens:"):
        ops.sequence_logprobs(a["hidden"], a["weight"], a["targets"], a["cu_seqlens"])
