"""`ibpo-fast plan`: the per-rank GPU memory of a training config, and whether it fits, before renting GPUs.

    ibpo-fast plan --preset llama8b --gpus 8 --gpu_memory_gib 80       # any TrainConfig field as --key=value

Per rank of W, for N parameters and b bytes per element of the compute dtype (`dtype`):
- held throughout: the f32 master weights (4N/W) and AdamW's two f32 moments (8N/W); FSDP2 shards both.
- the update (forward and backward): f32 gradients (4N/W); the gathered compute-dtype weights of the root
  (embeddings, LM head, final norm) and of two blocks (the running one and the prefetched one), with their
  unsharded gradients; the activations of one forward (`update_tokens` tokens, else every selected
  sequence of the rank at full length, the worst case); the backward's temporaries; the fused loss's
  saved gradients and its f32 accumulators and tiles (ops, DESIGN.md §3).
- the optimizer step: the gradients and foreach AdamW's temporaries (measured 1.33-1.6 f32 copies of the
  shard on SmolLM2's shapes; planned as 2).
- generation: the whole model gathered in the compute dtype (`distributed.GenerationWeights`; nothing
  extra for f32 in one process), the KV cache of the rows in flight (`models.kv_cache_bytes_per_token`), the
  sampler's logits rows.
The peak is what is held throughout plus the largest phase; it fits when the peak is at most 90 % of the
GPU (the rest: CUDA context, NCCL buffers, allocator fragmentation). The sums are conservative: the
loss head's buffers, the backward temporaries and the recomputed block are counted as if simultaneous.

Activations follow the saved tensors of HF's Llama decoder block, per token (tests/test_plan.py measures
them, with torch's MemTracker, on the tiny model and on SmolLM2): two RMSNorms save an f32 copy and the
normed output each; the projections save their inputs; attention saves q, k, v (k and v repeated to every
head on the masked sdpa path of the CPU, at the key/value heads with flash-attn) and an f32 log-sum-exp;
the SiLU MLP saves four [I] tensors. With per-block activation checkpointing a block keeps its input only,
and one block is recomputed at a time. Under autocast (bf16 in one process) the norms and the residual
stream stay f32 and every projection casts its own input copy.

The architecture comes from `model`'s config.json when it is a local directory; else from
`KNOWN_ARCHITECTURES`, keyed by the model name (the directory's last part): the GPU presets' model
directories need not exist on the machine that plans.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ibpo_fast.models import char_tokenizer, kv_cache_bytes_per_token, tiny_model
from ibpo_fast.train.config import TrainConfig

GIB = 2**30
USABLE_FRACTION = 0.9
LOSS_WORKSPACE_BYTES = 256 * 2**20  # the fused ops' tile bound (DESIGN.md §3)
ADAMW_STEP_COPIES = 2.0
PHASES = ("held", "update", "optimizer step", "generation")


@dataclass(frozen=True)
class Architecture:
    """The sizes of a Llama-style decoder (the field names of an HF LlamaConfig)."""
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    tie_word_embeddings: bool

    @classmethod
    def from_hf(cls, values: dict) -> "Architecture":
        """From an HF config's dict (config.json), with Llama's defaults for the optional fields."""
        values = {"num_key_value_heads": values["num_attention_heads"], "tie_word_embeddings": False,
                  "head_dim": values["hidden_size"] // values["num_attention_heads"],
                  **{key: value for key, value in values.items() if value is not None}}
        return cls(**{name: values[name] for name in cls.__dataclass_fields__})

    @property
    def block_parameters(self) -> int:
        H, q, kv = self.hidden_size, self.num_attention_heads * self.head_dim, self.num_key_value_heads * self.head_dim
        return 2 * H * q + 2 * H * kv + 3 * H * self.intermediate_size + 2 * H  # q, o, k, v, MLP, norms

    @property
    def root_parameters(self) -> int:
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2) + self.hidden_size

    @property
    def num_parameters(self) -> int:
        return self.root_parameters + self.num_hidden_layers * self.block_parameters


# From each model's config.json (SmolLM2: its GGUF's metadata as transformers reads it, which takes ~20 s;
# tests/test_smollm2.py compares). The tiny model's comes from `models.tiny_model` itself.
KNOWN_ARCHITECTURES = {
    "meta-llama-3.1-8b-instruct": Architecture(128256, 4096, 14336, 32, 32, 8, 128, False),
    "meta-llama-3-8b-instruct": Architecture(128256, 4096, 14336, 32, 32, 8, 128, False),
    "smollm2": Architecture(49152, 576, 1536, 30, 9, 3, 64, True),
}


def architecture(model: str) -> tuple[Architecture, str]:
    """(architecture, where it came from) for a `TrainConfig.model`."""
    if model == "tiny":
        return Architecture.from_hf(tiny_model(len(char_tokenizer()), seed=0).config.to_dict()), "models.tiny_model"
    config = Path(model) / "config.json"
    if config.is_file():
        return Architecture.from_hf(json.loads(config.read_text())), str(config)
    name = Path(model).name.lower()
    if name not in KNOWN_ARCHITECTURES:
        raise ValueError(f"plan: {model!r} has no config.json here and is not one of the known architectures "
                         f"{sorted(KNOWN_ARCHITECTURES)}")
    return KNOWN_ARCHITECTURES[name], "built-in table"


def block_activation_bytes(arch: Architecture, b: int, *, attention: str, autocast: bool = False,
                           row_tokens: int = 0) -> int:
    """Bytes one decoder block keeps for backward, per token. `attention`: "flash" (varlen, GPU) or "sdpa"
    (the CPU's masked rows of `row_tokens` tokens)."""
    H, I, heads = arch.hidden_size, arch.intermediate_size, arch.num_attention_heads
    q, kv = heads * arch.head_dim, arch.num_key_value_heads * arch.head_dim
    norm_out = 4 if autocast else b
    projection_inputs = 3 * H + 2 * H + q if autocast else H + H + q  # (q, k, v), (gate, up), o: one copy each
    attention_kv = q if attention == "sdpa" else kv
    mask = b * row_tokens if attention == "sdpa" else 0  # the float mask row sdpa builds and saves
    return (2 * (4 + norm_out) * H + b * projection_inputs + b * (q + 2 * attention_kv) + 4 * heads
            + 4 * b * I + mask)


def activation_bytes(arch: Architecture, tokens: int, b: int, *, checkpointing: bool, attention: str,
                     autocast: bool = False, row_tokens: int = 0) -> int:
    """Bytes one forward of `tokens` tokens keeps for backward, the loss head's saved gradients excluded."""
    stream = 4 if autocast else b  # the residual stream
    root = (4 + stream) * arch.hidden_size + 2 * arch.head_dim * stream + 3 * 8  # final norm, rotary, indices
    if checkpointing:  # each block's input, and the blocks' shared mask row (bool) on the sdpa path
        blocks = arch.num_hidden_layers * stream * arch.hidden_size + (row_tokens if attention == "sdpa" else 0)
    else:
        blocks = arch.num_hidden_layers * block_activation_bytes(arch, b, attention=attention, autocast=autocast,
                                                                 row_tokens=row_tokens)
    return tokens * (blocks + root)


def recompute_bytes(arch: Architecture, tokens: int, b: int, *, checkpointing: bool, attention: str,
                    autocast: bool = False, row_tokens: int = 0) -> int:
    """With checkpointing, the one block whose activations backward recomputes at a time."""
    if not checkpointing:
        return 0
    return tokens * block_activation_bytes(arch, b, attention=attention, autocast=autocast, row_tokens=row_tokens)


def loss_head_bytes(arch: Architecture, tokens: int, b: int) -> int:
    """The fused loss: d_hidden [T, H] and d_weight [V, H] saved in the compute dtype, accumulated in f32."""
    rows = (tokens + arch.vocab_size) * arch.hidden_size
    workspace = min(LOSS_WORKSPACE_BYTES, tokens * arch.vocab_size * 4 // 5)
    return rows * (b + (4 if b != 4 else 0)) + workspace


def backward_temporary_bytes(arch: Architecture, tokens: int, b: int) -> int:
    """The gradients flowing through one block in backward (measured: about 3 [I] and one [H] per token)."""
    return tokens * (3 * arch.intermediate_size + arch.hidden_size) * b


def autocast_copy_bytes(arch: Architecture, b: int) -> int:
    """Autocast's cached casts of the blocks' projection weights (kept by the saved tensors) and the LM head's
    cast during the loss."""
    return (arch.num_hidden_layers * (arch.block_parameters - 2 * arch.hidden_size)
            + arch.vocab_size * arch.hidden_size) * b


@dataclass(frozen=True)
class Plan:
    title: str
    rows: list[tuple[str, str, int]]  # (phase, what, bytes); phase is one of PHASES
    gpu_memory_gib: float

    def total(self, phase: str) -> int:
        return sum(size for where, _, size in self.rows if where == phase)

    @property
    def peak(self) -> int:
        return self.total("held") + max(self.total(phase) for phase in PHASES[1:])

    @property
    def fits(self) -> bool:
        return self.peak <= USABLE_FRACTION * self.gpu_memory_gib * GIB

    def format(self) -> str:
        lines = [self.title]
        for phase in PHASES:
            lines.append(f"  {phase} ({self.total(phase) / GIB:.2f} GiB)")
            lines += [f"    {what:<72} {size / GIB:9.3f} GiB" for where, what, size in self.rows if where == phase]
        verdict = "fits" if self.fits else "DOES NOT FIT"
        lines.append(f"  peak = held + the largest phase = {self.peak / GIB:.2f} GiB per rank; usable "
                     f"{USABLE_FRACTION:.0%} of {self.gpu_memory_gib:g} GiB = {USABLE_FRACTION * self.gpu_memory_gib:.1f}"
                     f" GiB: {verdict}")
        return "\n".join(lines)


def plan(cfg: TrainConfig, *, gpus: int, gpu_memory_gib: float, prompt_tokens: int = 512) -> Plan:
    """The memory plan of `cfg` on `gpus` GPUs (one rank each, flash-attn packed attention)."""
    if gpus < 1 or not gpu_memory_gib > 0 or prompt_tokens < 1:
        raise ValueError("plan: gpus must be >= 1, gpu_memory_gib > 0 and prompt_tokens >= 1")
    if cfg.prompts_per_step % gpus:
        raise ValueError(f"plan: prompts_per_step={cfg.prompts_per_step} does not split over {gpus} GPUs")
    arch, source = architecture(cfg.model)
    N, W, b = arch.num_parameters, gpus, torch.finfo(cfg.torch_dtype).bits // 8
    autocast = W == 1 and b != 4
    sequence = prompt_tokens + cfg.max_new_tokens
    per_rank = max(cfg.prompts_per_step // W * (cfg.max_per_prompt or cfg.samples_per_prompt),
                   -(-cfg.warmup_batch // W) if cfg.warmup_steps else 0, -(-cfg.sft_batch // W) if cfg.mode == "sft" else 0)
    tokens = per_rank * sequence
    if cfg.update_tokens:
        tokens = min(tokens, max(cfg.update_tokens, sequence))
    gathered = (arch.root_parameters + 2 * arch.block_parameters) * b * 2 if W > 1 else (
        autocast_copy_bytes(arch, b) if autocast else 0)
    kv_row = kv_cache_bytes_per_token(arch, cfg.torch_dtype) * sequence
    jobs = cfg.prompts_per_step // W * cfg.samples_per_prompt
    rows = min(jobs, int(cfg.generate_kv_gib * GIB // kv_row))  # rows in flight, as the sampler sizes them
    kind = "checkpointed" if cfg.activation_checkpointing else "all kept"
    shape = dict(arch=arch, tokens=tokens, b=b, checkpointing=cfg.activation_checkpointing, attention="flash",
                 autocast=autocast)
    rows_of = [
        ("held", f"master weights (f32, 1/{W})", 4 * N // W),
        ("held", f"AdamW moments (2 x f32, 1/{W})", 8 * N // W),
        ("update", f"gradients (f32, 1/{W})", 4 * N // W),
        ("update", "gathered weights + their gradients (root and 2 blocks)" if W > 1 else
         ("autocast's weight copies" if autocast else "gathered weights (none: one process)"), gathered),
        ("update", f"activations ({tokens} tokens per forward, {kind})", activation_bytes(**shape)),
        ("update", "block recomputed in backward (checkpointing)", recompute_bytes(**shape)),
        ("update", "backward temporaries", backward_temporary_bytes(arch, tokens, b)),
        ("update", "fused loss head (saved d_hidden, d_weight; f32 accumulators, tiles)", loss_head_bytes(arch, tokens, b)),
        ("optimizer step", f"gradients (f32, 1/{W})", 4 * N // W),
        ("optimizer step", "AdamW step temporaries (foreach)", int(ADAMW_STEP_COPIES * 4 * N / W)),
        ("generation", f"gathered weights ({cfg.dtype}, whole model)", N * b if (W > 1 or autocast) else 0),
        ("generation", f"KV cache ({rows} rows x {sequence} tokens)", rows * kv_row),
        ("generation", f"sampling logits ({rows} rows x {arch.vocab_size})", rows * arch.vocab_size * (b + 12)),
    ]
    count = f"{N / 1e9:.3g}B" if N >= 1e9 else f"{N / 1e6:.3g}M"
    title = (f"plan: {cfg.model} ({count} parameters, architecture from {source}), dtype {cfg.dtype}, "
             f"{W} GPU(s) x {gpu_memory_gib:g} GiB, prompts assumed {prompt_tokens} tokens")
    return Plan(title, rows_of, gpu_memory_gib)

