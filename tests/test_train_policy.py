"""Packed forward == separate forwards: the same loss and the same gradients (DESIGN.md §2)."""
import numpy as np
import pytest
import torch

from ibpo_fast.models import tiny_model
from ibpo_fast.packing import pack
from ibpo_fast.train.distributed import World, parallelize
from ibpo_fast.train.policy import Policy, backward_in_chunks, chunk_bounds, row_layout

VOCAB = 40


def _pairs(seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = [(3, 9), (5, 1), (2, 14), (4, 0), (6, 7), (1, 11)]  # ragged, one empty response
    return [(torch.randint(4, VOCAB, (p,), generator=g).tolist(), torch.randint(4, VOCAB, (r,), generator=g).tolist())
            for p, r in lengths]


def _separate_loss(model, pairs, weights):
    """Plain reference: each sequence alone through the full model (its own logits)."""
    total, tokens = 0.0, 0
    for (prompt, response), w in zip(pairs, weights):
        ids = torch.tensor([prompt + response])
        logits = model(input_ids=ids, use_cache=False).logits[0].float()
        logp = torch.log_softmax(logits[:-1], -1).gather(1, ids[0, 1:, None])[:, 0]
        learned = logp[len(prompt) - 1:]  # positions predicting response tokens
        total = total - w * learned.sum()
        tokens += w * len(learned)
    return total / tokens


def test_row_layout_keeps_sequences_whole():
    rows, width = row_layout(np.array([5, 4, 3, 9, 2]), 8)
    assert rows.tolist() == [0, 1, 1, 2, 3] and width == 9


@pytest.mark.parametrize("max_row_tokens", [1, 16, 10_000])  # one per row, several per row, one row
def test_packed_update_equals_unpacked(max_row_tokens):
    torch.manual_seed(0)
    pairs = _pairs()
    weights = [1.0, 0.5, 1.0, 1.0, 0.0, 2.0]
    model = tiny_model(VOCAB, seed=0)
    reference = _separate_loss(model, pairs, weights)
    reference.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    policy = Policy(model, max_row_tokens=max_row_tokens)
    batch = pack(pairs)
    counted = np.array([len(r) for _, r in pairs])
    seq_weights = torch.tensor(weights) / float(np.dot(weights, counted))
    _, loss = policy(batch, seq_weights)
    loss.backward()
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-6)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_packed_hidden_equals_separate_hidden():
    model = tiny_model(VOCAB, seed=1)
    pairs = _pairs(1)
    hidden = Policy(model, max_row_tokens=24).hidden(pack(pairs))
    start = 0
    for prompt, response in pairs:
        ids = torch.tensor([prompt + response])
        alone = model.model(input_ids=ids, use_cache=False).last_hidden_state[0]
        torch.testing.assert_close(hidden[start:start + ids.shape[1]], alone, rtol=1e-5, atol=1e-5)
        start += ids.shape[1]


def test_chunk_bounds_keep_sequences_whole():
    assert chunk_bounds(np.array([5, 4, 3, 9, 2]), 8) == [slice(0, 1), slice(1, 3), slice(3, 4), slice(4, 5)]
    assert chunk_bounds(np.array([5, 4]), 0) == [slice(0, 2)]
    assert chunk_bounds(np.array([], np.int64), 8) == [slice(0, 0)]


@pytest.mark.parametrize("max_tokens,checkpointing", [(0, True), (12, False), (20, True)])
def test_chunked_and_checkpointed_update_gives_the_one_pass_gradients(max_tokens, checkpointing):
    """Update chunks accumulate the gradients of one pass; per-block activation checkpointing recomputes
    exactly what it dropped."""
    pairs, weights = _pairs(), torch.tensor([1.0, 0.5, 1.0, 1.0, 0.0, 2.0]) / 40
    world = World(0, 1, torch.device("cpu"))
    grads = []
    for chunks, checkpoint in ((0, False), (max_tokens, checkpointing)):
        model = tiny_model(VOCAB, seed=0)
        policy = parallelize(Policy(model, max_row_tokens=16), world, compute_dtype=torch.float32,
                             activation_checkpointing=checkpoint)
        seq_logp, loss = backward_in_chunks(policy, pairs, weights, world, chunks)
        grads.append((seq_logp, loss, {n.replace("._checkpoint_wrapped_module", ""): p.grad for n, p in model.named_parameters()}))
    (logp_a, loss_a, grad_a), (logp_b, loss_b, grad_b) = grads
    assert len(logp_b) == len(pairs)
    torch.testing.assert_close(logp_b, logp_a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-7)
    assert grad_a.keys() == grad_b.keys()
    for name in grad_a:
        torch.testing.assert_close(grad_b[name], grad_a[name], rtol=1e-4, atol=1e-7, msg=name)
