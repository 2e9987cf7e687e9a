"""Configs: presets, --key=value overrides, validation, types, the help listing."""
import dataclasses
import typing

import pytest

from ibpo_fast.train.config import CONFIG_DIR, EvalConfig, TrainConfig, load_config, parse_overrides
from ibpo_fast.train.config_schema import field_docs, help_text, type_name


@pytest.mark.parametrize("preset", ["tiny", "smollm2", "llama8b"])
def test_presets_load(preset):
    cfg = load_config(TrainConfig, preset=preset)
    assert cfg.mode == "ibpo" and 0 <= cfg.q <= 1


def test_tiny_preset_is_the_embedded_default():
    cfg = load_config(TrainConfig, preset="tiny")
    assert cfg.model == "tiny" and cfg.q == 0.5 and cfg.warmup_steps > 0
    assert (CONFIG_DIR / "tiny.yaml").is_file()


def test_overrides_win_and_parse_yaml_scalars():
    cfg = load_config(TrainConfig, preset="tiny", overrides=["--steps", "3", "--q=0.25", "--levels=[1,2]",
                                                             "--max_per_prompt=null", "--out=/tmp/x"])
    assert (cfg.steps, cfg.q, cfg.levels, cfg.max_per_prompt, cfg.out) == (3, 0.25, [1, 2], None, "/tmp/x")
    assert parse_overrides(["--sft-format=sv"]) == {"sft_format": "sv"}


def test_rft_has_no_budget():
    assert TrainConfig(mode="rft", q=0.25).budget == 1.0
    assert TrainConfig(mode="ibpo", q=0.25).budget == 0.25


@pytest.mark.parametrize("bad, name", [({"q": 1.5}, "q"), ({"mode": "ppo"}, "mode"), ({"sft_format": "x"}, "sft_format"),
                                       ({"samples_per_prompt": 0}, "prompts_per_step"), ({"lr": 0}, "lr")])
def test_bad_values_raise(bad, name):
    with pytest.raises(ValueError, match=name):
        TrainConfig(**bad)


def test_unknown_keys_and_missing_values_raise():
    with pytest.raises(ValueError, match=r"unknown TrainConfig key 'stepz' \(did you mean 'steps'\?\)"):
        load_config(TrainConfig, overrides=["--stepz=3"])
    with pytest.raises(ValueError, match=r"keys 'sft_formt' \(did you mean 'sft_format'\?\), 'zzz';"):
        load_config(TrainConfig, overrides=["--sft_formt=sv", "--zzz=1"])
    with pytest.raises(ValueError, match="missing value"):
        parse_overrides(["--steps"])
    with pytest.raises(ValueError, match="no file"):
        load_config(TrainConfig, preset="nope")
    with pytest.raises(ValueError):
        EvalConfig(problems_per_level=0)
    with pytest.raises(ValueError, match="prompt_format"):
        EvalConfig(prompt_format="cot")


@pytest.mark.parametrize("override, message", [
    ("--steps=three", "steps must be int; got 'three' (str)"),
    ("--q=half", "q must be float; got 'half' (str)"),
    ("--progress=maybe", "progress must be bool; got 'maybe' (str)"),
    ("--levels=[1,x]", "levels must be list[int]; got [1, 'x'] (list)"),
    ("--max_per_prompt=1.5", "max_per_prompt must be int|null; got 1.5 (float)"),
])
def test_values_of_the_wrong_type_raise_one_line(override, message):
    with pytest.raises(ValueError) as error:
        load_config(TrainConfig, preset="tiny", overrides=[override])
    assert str(error.value) == message


def test_values_take_their_fields_type():
    cfg = load_config(TrainConfig, overrides=["--lr=1e-3", "--out=007", "--init_from=", "--seed", "3",
                                              "--q=1", "--resume=true"])
    assert (cfg.lr, cfg.out, cfg.init_from, cfg.seed, cfg.q, cfg.resume) == (1e-3, "007", "", 3, 1, True)
    assert parse_overrides(["--steps=3"]) == {"steps": "3"}  # strings until the field's type is known
    with pytest.raises(ValueError, match="steps must be int"):
        TrainConfig(steps="3")  # the dataclass itself checks, whoever builds it


def test_resume_and_overwrite_exclude_each_other():
    with pytest.raises(ValueError, match="resume must be false when overwrite is true"):
        TrainConfig(resume=True, overwrite=True)


@pytest.mark.parametrize("cls", [TrainConfig, EvalConfig])
def test_every_field_is_documented_in_the_help(cls):
    docs, text, hints = field_docs(cls), help_text(cls), typing.get_type_hints(cls)
    flat = " ".join(text.split())
    for f in dataclasses.fields(cls):
        assert docs.get(f.name), f"{cls.__name__}.{f.name} has no docstring below it"
        assert f"--{f.name} {type_name(hints[f.name])}   (default: " in text
        assert docs[f.name] in flat, f.name


def test_help_shows_the_presets_values():
    text = help_text(TrainConfig, load_config(TrainConfig, preset="tiny").__dict__, "tiny")
    assert "--warmup_steps int   (default: 0; preset tiny: 1200)" in text
    assert "--q float   (default: 0.5)\n" in text  # equal values are not repeated
