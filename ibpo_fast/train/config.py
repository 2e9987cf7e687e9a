"""Trainer configuration: one typed dataclass per command, YAML presets, ``--key=value`` overrides.

    cfg = load_config(TrainConfig, preset="tiny", overrides=["--steps=3", "--q", "0.25"])

A preset is a name under ``configs/`` (``tiny``, ``smollm2``, ``llama8b``) or a path to a YAML file; its
keys are the field names below. Overrides come last and win; a value is converted to its field's type
(a YAML scalar, ``--levels=[1,2,3]``, ``--max_per_prompt=null``; a string field takes it verbatim).
Each field is documented by the string right below it: ``ibpo-fast train --help`` lists them from there
(`config_schema`), so a new field needs its type, default and that docstring; ``__post_init__`` checks
the types first, then the rules.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ibpo_fast.rollout.formats import FORMATS
from ibpo_fast.train.config_schema import check_types, convert
from ibpo_fast.rollout.engines import ENGINES

# The presets live in the top-level configs/ of a source checkout; the package build installs a copy into
# ibpo_fast/configs for installed packages.
_PACKAGE = Path(__file__).resolve().parents[1]
_CHECKOUT = _PACKAGE.parent
CONFIG_DIR = _CHECKOUT / "configs" if (_CHECKOUT / "pyproject.toml").is_file() else _PACKAGE / "configs"
MODES = ("ibpo", "sft", "rft")
DTYPES = ("float32", "bfloat16")  # torch dtype names
SFT_FORMATS = ("sv", "asv")


@dataclass(kw_only=True)
class TrainConfig:
    mode: str = "ibpo"
    """"ibpo": budget-constrained selection with budget q; "rft": the same with no budget (q = 1);
    "sft": the SV-SFT / ASV-SFT baselines on generated demonstrations (see `sft_format`)."""
    model: str = "tiny"
    """"tiny" (random char-level Llama, trained from scratch), "smollm2", or a local model directory."""
    init_from: str = ""
    """Start from the weights of this model.pt, checkpoint folder or run folder (e.g. a warm-up-only run)
    instead of the fresh `model`; baselines compared at equal settings start from the same file."""
    dtype: str = "float32"
    """Compute dtype: "float32" or "bfloat16". The parameters (master weights) and the optimizer state are
    f32 either way; "bfloat16" runs the forward, backward and generation in bf16 (FSDP2
    MixedPrecisionPolicy under torchrun, autocast in one process) and reduces gradients in f32."""
    device: str = "auto"
    """"auto" (cuda when available, else cpu), "cpu" or "cuda"."""
    seed: int = 0
    """Seeds the model init, the data order and every sampling call."""
    task: str = "arithmetic"
    """"arithmetic", "jsonl:PATH" (problem/answer[/level] lines) or "reasoning_gym:NAME"."""
    levels: list[int] = field(default_factory=lambda: [1, 2, 3])
    """Difficulty levels of the arithmetic task."""
    verbose_prompts: bool = False
    """Spell out the response format in the prompt (pretrained instruction models) instead of a short tag."""
    steps: int = 40
    """Optimisation steps of the main phase (IBPO / RFT / SFT), after the warm-up."""
    warmup_steps: int = 0
    """SFT steps on demonstrations before the main phase (the tiny model needs them to learn the formats)."""
    warmup_batch: int = 64
    """Demonstrations per warm-up step (global, split across ranks)."""
    prompts_per_step: int = 16
    """P: prompts per step, global; every rank takes P / world_size of them."""
    samples_per_prompt: int = 8
    """n: responses drawn per prompt."""
    max_new_tokens: int = 256
    """Generation length cap; a response that hits it is truncated and gets reward 0."""
    temperature: float = 1.0
    """Sampling temperature (the trainer's log-prob health metric uses the same one)."""
    generate_kv_gib: float = 2.0
    """GiB of KV cache per rank for generation: the rows in flight are as many as fit, each of (longest
    prompt + max_new_tokens) tokens (`models.kv_cache_bytes_per_token`). Samples do not depend on it."""
    generate_engine: str = "decode"
    """"decode": the lean decode loop (finished rows leave, free slots refill, shared prompt prefill);
    "generate": transformers' `model.generate`, the reference. Both draw the same tokens."""
    q: float = 0.5
    """Budget: the share of extended responses allowed, of m · P (DESIGN.md §1). Ignored in rft / sft."""
    utility: str = "value"
    """Utility handed to the ILP (`budget.utilities`): "value" (reward x the success rate of the sample's group
    on its prompt: the budget buys voting where it beats answering once the most), "reward" (reward alone:
    credits a group when any one of its samples is right, so voting is never needed) or the paper's "margin"
    (reward minus the other groups' mean: no target on easy prompts)."""
    explore_per_group: int = 1
    """Exploration: of each prompt's n samples, this many are drawn under the forced regular prompt and as many
    under the forced voting prompt (the rest under the adaptive one), and trained as answers to the adaptive
    prompt, so both groups' success rates are estimated on every prompt (ibpo / rft only)."""
    anchor_weight: float = 1.0
    """Also train every correct exploration sample under the forced prompt that drew it, with this weight (0:
    not at all), so the forced regular and voting modes (the references of the frontier) do not drift while the
    adaptive prompt learns. Anchored tokens count in the update's normaliser Z, so the weight also sets the
    share of the update that goes to the adaptive prompt's selected targets."""
    max_per_prompt: int | None = 1
    """m: at most m selected responses per prompt (null: no per-prompt rows)."""
    accumulate_steps: int = 1
    """Steps of scored samples the budget constraint is estimated over (`budget.SampleBuffer`)."""
    ilp_method: str = "auto"
    """`budget.solve` method: "auto", "exact" or "highs"."""
    extended_trials: int = 2
    """A response with at least this many [TRIAL] blocks is extended (group 1)."""
    sft_format: str = "asv"
    """mode=sft: "sv" (vote on every problem) or "asv" (vote from level 3 up, else answer once)."""
    sft_batch: int = 64
    """mode=sft: demonstrations per step (global)."""
    lr: float = 1e-3
    """AdamW learning rate (constant)."""
    warmup_lr: float = 3e-3
    """Learning rate of the warm-up SFT phase (its first step)."""
    warmup_lr_end: float | None = None
    """The warm-up's learning rate falls linearly from `warmup_lr` at its first step to this at its last (null:
    constant `warmup_lr`)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 disables)."""
    update_tokens: int = 0
    """Most tokens (prompt + response) per forward/backward of the update, in chunks of whole sequences
    whose gradients accumulate (0: all of a rank's selected sequences at once). Bounds activation memory."""
    activation_checkpointing: bool = False
    """Recompute each decoder block's activations in backward instead of keeping them (torchtitan's
    per-block checkpointing): activations shrink to one hidden state per token and block."""
    max_row_tokens: int = 512
    """sdpa path: packed sequences are laid out in rows of at most this many tokens (whole sequences
    only, a block-diagonal mask per row), so attention costs O(T · row) instead of O(T²)."""
    out: str = "runs/tiny"
    """Output folder: metrics.jsonl, warmup.jsonl, checkpoints, final model."""
    checkpoint_every: int = 0
    """Save a checkpoint every k steps (0: only at the end and on Ctrl-C)."""
    resume: bool = False
    """Continue from the checkpoint in `out` when there is one (on any number of processes); fields that
    change the run's meaning must equal the saved run's (`checkpoint.RESUMABLE_CHANGES` may differ). A
    non-empty `out` is refused without it or `overwrite`."""
    overwrite: bool = False
    """Delete the previous run's files in `out` first (a non-empty `out` is refused without it or `resume`)."""
    stop_after: int = 0
    """Stop (with a checkpoint) after this many steps in total (0: run to the end); for resume tests."""
    summary_problems_per_level: int = 64
    """Held-out test problems per level answered at the end of the run for summary.json (0: none)."""
    progress: bool = True
    """tqdm progress bars (rank 0)."""
    tensorboard: bool = True
    """Also log to tensorboard under `out`/tb when tensorboard is installed."""

    def __post_init__(self):
        check_types(self)
        checks = [
            (self.mode in MODES, "mode", f"one of {MODES}"),
            (self.dtype in DTYPES, "dtype", f"one of {DTYPES}"),
            (self.device in ("auto", "cpu", "cuda"), "device", '"auto", "cpu" or "cuda"'),
            (self.steps >= 0 and self.warmup_steps >= 0, "steps", ">= 0 (and warmup_steps too)"),
            (self.prompts_per_step >= 1 and self.samples_per_prompt >= 1, "prompts_per_step", ">= 1 (and n too)"),
            (self.warmup_batch >= 1 and self.sft_batch >= 1, "warmup_batch", ">= 1 (and sft_batch too)"),
            (self.max_new_tokens >= 1 and self.temperature > 0, "max_new_tokens", ">= 1 with temperature > 0"),
            (self.generate_kv_gib > 0, "generate_kv_gib", "> 0"),
            (self.generate_engine in ENGINES, "generate_engine", f"one of {ENGINES}"),
            (0.0 <= self.q <= 1.0, "q", "in [0, 1]"),
            (self.utility in ("value", "reward", "margin"), "utility", '"value", "reward" or "margin"'),
            (0 <= 2 * self.explore_per_group <= self.samples_per_prompt, "explore_per_group",
             f">= 0 with 2 x explore_per_group <= samples_per_prompt ({self.samples_per_prompt})"),
            (0.0 <= self.anchor_weight < float("inf"), "anchor_weight", ">= 0 and finite"),
            (self.max_per_prompt is None or self.max_per_prompt >= 1, "max_per_prompt", ">= 1 or null"),
            (self.accumulate_steps >= 1 and self.extended_trials >= 1, "accumulate_steps", ">= 1 (and extended_trials)"),
            (self.ilp_method in ("auto", "exact", "highs"), "ilp_method", '"auto", "exact" or "highs"'),
            (self.sft_format in SFT_FORMATS, "sft_format", f"one of {SFT_FORMATS}"),
            (self.lr > 0 and self.warmup_lr > 0, "lr", "> 0 (and warmup_lr too)"),
            (self.warmup_lr_end is None or self.warmup_lr_end > 0, "warmup_lr_end", "> 0 or null"),
            (self.max_row_tokens >= 1 and self.checkpoint_every >= 0, "max_row_tokens", ">= 1, checkpoint_every >= 0"),
            (self.stop_after >= 0, "stop_after", ">= 0"),
            (self.update_tokens >= 0, "update_tokens", ">= 0"),
            (self.seed >= 0, "seed", ">= 0"),
            (self.summary_problems_per_level >= 0, "summary_problems_per_level", ">= 0"),
            (not (self.resume and self.overwrite), "resume", "false when overwrite is true (continue or start afresh)"),
        ]
        for ok, name, rule in checks:
            if not ok:
                raise ValueError(f"{name} must be {rule}; got {getattr(self, name)!r}")

    @property
    def budget(self) -> float:
        """The q handed to the ILP: rft has no budget."""
        return 1.0 if self.mode == "rft" else self.q

    @property
    def torch_dtype(self):
        """`dtype` as a torch.dtype (torch is imported here, not with the config)."""
        import torch
        return getattr(torch, self.dtype)


@dataclass(kw_only=True)
class EvalConfig:
    checkpoint: str = "runs/tiny"
    """A run folder (its model.pt, else its checkpoint: a run stopped early), a model.pt or a checkpoint folder."""
    problems_per_level: int = 64
    """Test problems per difficulty level."""
    method: str = "sample"
    """"sample": every response scored on its own (`samples_per_problem` per problem, `prompt_format`);
    "sc": self-consistency, `k` regular-format answers per problem and the majority of their final answers
    (ties to the first seen), costing all k responses' tokens."""
    k: int = 4
    """Answers per problem of method "sc"."""
    samples_per_problem: int = 1
    """Responses drawn per problem (method "sample")."""
    max_new_tokens: int = 0
    """0: the run's own cap."""
    temperature: float = 1.0
    """Sampling temperature."""
    seed: int = 1234
    """Test problem and sampling seed."""
    prompt_format: str = "asv"
    """The prompt the model answers: "asv" (it chooses, as trained), "regular" or "sv" (forced): comparing
    the forced two says how much a vote gains over one attempt."""
    out: str = ""
    """JSON file for the result ("": `checkpoint`/eval.json)."""
    device: str = "auto"
    """"auto", "cpu" or "cuda"."""

    def __post_init__(self):
        check_types(self)
        if self.problems_per_level < 1 or self.samples_per_problem < 1:
            raise ValueError("problems_per_level and samples_per_problem must be >= 1")
        if self.method not in ("sample", "sc") or self.k < 1:
            raise ValueError(f"method must be 'sample' or 'sc' and k >= 1, got {self.method!r}, k={self.k}")
        if self.max_new_tokens < 0 or not self.temperature > 0:
            raise ValueError("max_new_tokens must be >= 0 and temperature > 0")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.prompt_format not in FORMATS:
            raise ValueError(f"prompt_format must be one of {FORMATS}, got {self.prompt_format!r}")


def preset_values(preset: str | None) -> dict:
    """The keys of a preset (a name under configs/ or a YAML path) as written; {} for none."""
    if not preset:
        return {}
    path = Path(preset) if preset.endswith((".yaml", ".yml")) else CONFIG_DIR / f"{preset}.yaml"
    if not path.is_file():
        raise ValueError(f"preset: no file {str(path)!r} (presets: {sorted(p.stem for p in CONFIG_DIR.glob('*.yaml'))})")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"preset {str(path)!r}: not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(values, dict):
        raise ValueError(f"preset {str(path)!r}: expected key: value lines, got a {type(values).__name__}")
    return values


def parse_overrides(args: list[str]) -> dict[str, str]:
    """["--a=1", "--b", "x"] -> {"a": "1", "b": "x"}; `load_config` converts the values by type."""
    values, i = {}, 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ValueError(f"override {arg!r}: expected --key=value or --key value")
        key, sep, value = arg[2:].partition("=")
        if not sep:
            if i + 1 >= len(args):
                raise ValueError(f"override --{key}: missing value")
            i, value = i + 1, args[i + 1]
        values[key.replace("-", "_")] = value
        i += 1
    return values


def load_config(cls, *, preset: str | None = None, overrides: list[str] | dict | None = None):
    """An instance of the dataclass `cls` from a preset and overrides (strings are converted to each
    field's type); unknown keys, values of the wrong type and broken rules raise ValueError."""
    values = preset_values(preset)
    values.update(overrides if isinstance(overrides, dict) else parse_overrides(overrides or []))
    return cls(**convert(cls, values))
