"""HFSampler on the tiny model, on the CPU."""
import numpy as np
import pytest
import torch

from ibpo_fast.models import encode_prompts, load_model
from ibpo_fast.rollout.formats import prompt_text
from ibpo_fast.rollout.sampler import HFSampler
from ibpo_fast.rollout.tasks import ArithmeticTask


@pytest.fixture(scope="module")
def setup():
    # Two threads on a shared two-core machine make tiny generate steps ~20x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model, tok = load_model("tiny", seed=0)
    problems = ArithmeticTask(levels=(1, 3)).problems("train", 3, seed=0)
    prompts = encode_prompts(tok, [prompt_text(p, "asv") for p in problems])
    yield model.eval(), tok, prompts
    torch.set_num_threads(threads)


def test_generate_shapes_and_determinism(setup):
    model, tok, prompts = setup
    sampler = HFSampler(model, tok, max_new_tokens=24, batch_size=4, progress=False)
    state = torch.get_rng_state()
    a = sampler.generate(prompts, n=2, seed=5)
    assert torch.equal(state, torch.get_rng_state())  # the caller's RNG is untouched
    b = sampler.generate(prompts, n=2, seed=5)
    assert [r.prompt_index for r in a] == [0, 0, 1, 1, 2, 2]
    assert [r.response_ids for r in a] == [r.response_ids for r in b]
    assert [r.response_ids for r in a] != [r.response_ids for r in sampler.generate(prompts, n=2, seed=6)]
    for r in a:
        assert r.prompt_ids == prompts[r.prompt_index] and np.array_equal(r.logprobs, b[a.index(r)].logprobs)
        assert r.logprobs.dtype == np.float32 and r.logprobs.shape == (len(r.response_ids),)
        assert (r.logprobs <= 0).all() and 1 <= len(r.response_ids) <= 24
        assert r.truncated == (tok.eos_token_id not in r.response_ids)
        assert tok.eos_token_id not in r.response_ids[:-1]  # cut after the first eos
        assert r.text == tok.decode(r.response_ids, skip_special_tokens=True)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_match_teacher_forcing(setup, temperature):
    """Left padding in the batch must not change what the model saw: recompute each response alone."""
    model, tok, prompts = setup
    sampler = HFSampler(model, tok, max_new_tokens=16, temperature=temperature, batch_size=3, progress=False)
    with torch.no_grad():
        for r in sampler.generate(prompts, n=1, seed=0):
            sequence = torch.tensor([r.prompt_ids + r.response_ids])
            logits = model(sequence, use_cache=False).logits[0, len(r.prompt_ids) - 1: -1] / temperature
            expected = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(r.response_ids)[:, None])
            np.testing.assert_allclose(r.logprobs, expected.squeeze(-1).numpy(), atol=1e-4)


def test_eos_cut():
    from ibpo_fast.rollout.sampler import _cut_at_eos
    ids, lp, truncated = _cut_at_eos([5, 2, 0, 0], np.array([-1, -2, -3, -4], dtype=np.float32), {2})
    assert ids == [5, 2] and lp.tolist() == [-1, -2] and not truncated
    assert _cut_at_eos([5, 6], np.zeros(2, np.float32), {2})[2]


def test_bad_arguments(setup):
    model, tok, prompts = setup
    for kwargs, name in [(dict(max_new_tokens=0), "max_new_tokens"), (dict(temperature=0.0), "temperature"),
                         (dict(top_p=1.5), "top_p"), (dict(batch_size=0), "batch_size")]:
        with pytest.raises(ValueError, match=name):
            HFSampler(model, tok, **{"max_new_tokens": 4, "batch_size": 2, **kwargs})
    sampler = HFSampler(model, tok, max_new_tokens=4, batch_size=2, progress=False)
    with pytest.raises(ValueError, match="n must"):
        sampler.generate(prompts, n=0, seed=0)
    with pytest.raises(ValueError, match="prompt_ids"):
        sampler.generate([[]], n=1, seed=0)


def test_vllm_sampler_needs_vllm(setup):
    import importlib.util

    from ibpo_fast.rollout.sampler import VLLMSampler
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed: VLLMSampler needs a GPU run, not covered by the CPU tests")
    with pytest.raises(ImportError, match="vllm"):
        VLLMSampler("unused", setup[1], max_new_tokens=4)


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.5, 1.0), (1.0, 0.7)])
def test_gumbel_draws_follow_the_tempered_truncated_softmax(temperature, top_p):
    from ibpo_fast.rollout.sampler import GumbelSampler
    scores = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    probs = torch.softmax(scores.double() / temperature, 0)
    if top_p < 1:  # keep the smallest prefix of the sorted probabilities whose mass reaches top_p
        kept = (probs.cumsum(0) - probs) < top_p  # scores are sorted descending already
        probs = torch.where(kept, probs, 0.0) / probs[kept].sum()
    rows = 40_000
    draw = GumbelSampler(temperature, top_p)
    torch.manual_seed(0)
    out = draw(torch.zeros(rows, 1, dtype=torch.long), scores.expand(rows, -1).clone())
    token = out.argmax(1)
    assert torch.isinf(out).sum() == rows * (scores.numel() - 1)  # one finite score per row
    freq = torch.bincount(token, minlength=scores.numel()).double() / rows
    sigma = (probs * (1 - probs) / rows).sqrt()
    assert ((freq - probs).abs() <= 5 * sigma + 1e-12).all(), (freq, probs)
    logp = torch.log_softmax(scores.double() / temperature, 0)[token]
    torch.testing.assert_close(draw.logprobs[0].double(), logp, rtol=0, atol=1e-6)
