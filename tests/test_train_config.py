"""Configs: presets, --key=value overrides, validation."""
import pytest

from ibpo_fast.train.config import CONFIG_DIR, EvalConfig, TrainConfig, load_config, parse_overrides


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
    with pytest.raises(ValueError, match="unknown TrainConfig keys"):
        load_config(TrainConfig, overrides=["--stepz=3"])
    with pytest.raises(ValueError, match="missing value"):
        parse_overrides(["--steps"])
    with pytest.raises(ValueError, match="no file"):
        load_config(TrainConfig, preset="nope")
    with pytest.raises(ValueError):
        EvalConfig(problems_per_level=0)
    with pytest.raises(ValueError, match="prompt_format"):
        EvalConfig(prompt_format="cot")
