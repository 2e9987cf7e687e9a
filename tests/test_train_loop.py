"""The trainer's loop on the tiny model: odd batches behave as documented in `train/phases.py`, and a
run killed with Ctrl-C resumes to the same metrics as an uninterrupted one."""
import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import subprocess_env
import torch

from ibpo_fast import budget, pack
from ibpo_fast.models import char_tokenizer, encode_prompts, tiny_model
from ibpo_fast.rollout import FORMATS, ArithmeticTask, HFSampler, Problem, Rollout, prompt_text
from ibpo_fast.rollout.tasks import readings
from ibpo_fast.train import TrainConfig, train
from ibpo_fast.train.config import EvalConfig, load_config
from ibpo_fast.train.evaluate import evaluate, load_trained
from ibpo_fast.train.loop import warmup_lr
from ibpo_fast.train import phases
from ibpo_fast.train.distributed import World
from ibpo_fast.train.policy import Policy

SMALL = dict(model="tiny", warmup_steps=2, warmup_batch=4, steps=2, prompts_per_step=2, samples_per_prompt=2,
             explore_per_group=1, max_new_tokens=16, progress=False, tensorboard=False)
WORLD = World(0, 1, torch.device("cpu"))
# Figures that depend on the computation only (not on wall time).
DETERMINISTIC = ("step", "loss", "train_tokens", "reward_mean", "sampled_extended_share", "selected_extended_share",
                 "response_tokens_mean", "num_selected")


def _lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _samples(rewards, groups, prompts, tokenizer):
    texts = ["[TRIAL]3[/TRIAL]" if g else "3" for g in groups]
    pairs = [(tokenizer("auto:1+2\n").input_ids, tokenizer(t).input_ids) for t in texts]
    n = len(rewards)
    return phases.Samples(pairs, texts, np.array(prompts), np.ones(n, np.int64), np.array(rewards, float),
                          np.array(groups), np.full(n, phases.ADAPTIVE), np.full(n, np.nan), np.zeros(n))


def test_every_response_truncated_gives_a_zero_loss_step_that_is_still_logged(tmp_path):
    train(TrainConfig(**{**SMALL, "warmup_steps": 0, "max_new_tokens": 1}, out=str(tmp_path)))
    records = _lines(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1]
    for r in records:
        assert r["loss"] == 0.0 and r["update_skipped"] and r["num_selected"] == 0 and r["reward_mean"] == 0.0
        assert r["ilp_status"] == "optimal" and r["selected_extended_share"] <= r["q"]


def test_zero_budget_with_only_extended_correct_selects_nothing():
    tokenizer = char_tokenizer()
    policy = Policy(tiny_model(len(tokenizer), seed=0))
    for q, selected in ((0.0, 0), (0.5, 1)):
        samples = _samples([0, 1, 0, 1], [0, 1, 0, 1], [0, 0, 1, 1], tokenizer)
        cfg = TrainConfig(q=q)
        gathered, selection = phases.select(WORLD, samples, budget.SampleBuffer(1), cfg)
        assert int(gathered["weight"].sum()) == selected and selection.status == "optimal"
        figures = phases.update(policy, samples, gathered["weight"], gathered["tokens"], WORLD, cfg)
        assert figures["skipped"] == (selected == 0)
        assert (float(figures["loss"]) == 0.0) == (selected == 0)
        policy.zero_grad()


def test_rank_with_nothing_selected_runs_a_zero_weight_forward():
    tokenizer = char_tokenizer()
    policy = Policy(tiny_model(len(tokenizer), seed=0))
    samples = _samples([0, 0], [0, 0], [0, 0], tokenizer)
    # Another rank selected 5 tokens' worth; this rank none.
    figures = phases.update(policy, samples, np.array([0.0, 0.0, 1.0]), np.array([3, 3, 5]), WORLD, TrainConfig())
    assert not figures["skipped"] and float(figures["loss"]) == 0.0
    assert all(p.grad is None or not p.grad.any() for p in policy.parameters())


def test_nan_reward_raises():
    class NanTask(ArithmeticTask):
        def is_correct(self, problem, answer):
            return float("nan")

    problem = Problem("p", "1+2", "3", 1)
    rollout = Rollout(0, [1, 5], [6, 2], "\\boxed{3}", np.zeros(2, np.float32), False)
    drawn = phases.Drawn([rollout], np.array([phases.ADAPTIVE]), np.array([0]), {fmt: [[1, 5]] for fmt in FORMATS})
    with pytest.raises(ValueError, match="NaN"):
        phases.grade(NanTask(), [problem], drawn, 0)


def test_malformed_responses_grade_zero_and_group_by_trials():
    tokenizer = char_tokenizer()
    problem = Problem("p", "1+2", "3", 1)
    texts = ["", "no answer at all", "[TRIAL]\\boxed{4}[/TRIAL][TRIAL]\\boxed{3", "\\boxed{3}", "[TRIAL]\\boxed{3}[/TRIAL]" * 3]
    truncated = [False, False, False, True, False]
    rollouts = [Rollout(0, [1, 5], tokenizer(t, add_special_tokens=False).input_ids, t, np.zeros(1, np.float32), cut)
                for t, cut in zip(texts, truncated)]
    drawn = phases.Drawn(rollouts, np.full(len(rollouts), phases.ADAPTIVE), np.zeros(len(rollouts), np.int64),
                         {fmt: [[1, 5]] * len(rollouts) for fmt in FORMATS})
    samples = phases.grade(ArithmeticTask(), [problem], drawn, first=0)
    phases.assign_groups(samples, extended_trials=2)
    assert samples.reward.tolist() == [0, 0, 0, 0, 1]  # the right answer cut by max_new_tokens counts 0
    assert samples.group.tolist() == [0, 0, 1, 0, 1]


@pytest.fixture
def one_thread():
    # The interrupted run is a subprocess: it must use as many threads as this one, or a different
    # reduction order moves a loss by an ulp.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {"OMP_NUM_THREADS": "1"}
    torch.set_num_threads(threads)


def test_sigint_then_resume_matches_an_uninterrupted_run(tmp_path, one_thread, warm_tiny):
    # From the warm-started model, so that the IBPO steps on both sides of the cut select and update;
    # accumulate_steps=2 carries the budget's sample buffer across the resume.
    overrides = {**SMALL, "warmup_steps": 3, "warmup_lr": 1e-4, "steps": 4, "levels": [1], "max_new_tokens": 64,
                 "accumulate_steps": 2, "init_from": warm_tiny}
    # Both runs from the same preset: the tiny preset's row layout differs from the dataclass defaults,
    # and a different packing layout may move a loss by an ulp.
    preset = lambda **more: load_config(TrainConfig, preset="tiny", overrides={**overrides, **more})  # noqa: E731
    train(preset(out=str(tmp_path / "whole")))
    args = [f"--{k}={v}" for k, v in overrides.items()] + [f"--out={tmp_path / 'cut'}"]
    env = subprocess_env(**one_thread)
    process = subprocess.Popen([sys.executable, "-m", "ibpo_fast.train", "--preset", "tiny", *args], env=env,
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    warmup = tmp_path / "cut" / "warmup.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (warmup.exists() and warmup.read_text().strip()):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 130, output  # interrupted: a checkpoint, and a non-zero exit
    # Stopped early (model.pt is written only at the end), with a checkpoint to resume from.
    assert not (tmp_path / "cut" / "model.pt").exists() and (tmp_path / "cut" / "checkpoint" / "trainer.pt").exists()
    assert len(_lines(warmup)) + len(_lines(tmp_path / "cut" / "metrics.jsonl")) < 7
    # eval takes a run stopped early: its checkpoint's weights
    result = evaluate(EvalConfig(checkpoint=str(tmp_path / "cut"), problems_per_level=2, max_new_tokens=16))
    assert set(result["levels"]) == {"1"} and (tmp_path / "cut" / "eval.json").is_file()
    train(preset(out=str(tmp_path / "cut"), resume=True))
    for name in ("warmup.jsonl", "metrics.jsonl"):
        whole, cut = _lines(tmp_path / "whole" / name), _lines(tmp_path / "cut" / name)
        assert [{k: r.get(k) for k in DETERMINISTIC} for r in cut] == [{k: r.get(k) for k in DETERMINISTIC} for r in whole]
    ibpo = _lines(tmp_path / "whole" / "metrics.jsonl")
    assert len(ibpo) == 4 and all(r["num_selected"] > 0 and r["update_skipped"] is False for r in ibpo), ibpo


def test_resume_refuses_a_changed_meaning_and_allows_operational_changes(tmp_path):
    config = lambda **more: TrainConfig(**{**SMALL, "warmup_steps": 1, "steps": 1, **more}, out=str(tmp_path))  # noqa: E731
    train(config(stop_after=1))
    with pytest.raises(ValueError, match=r"saved with accumulate_steps=1, lr=0.001, the config has "
                                         r"accumulate_steps=2, lr=0.002"):
        train(config(resume=True, accumulate_steps=2, lr=2e-3))
    train(config(resume=True, steps=2, activation_checkpointing=True, update_tokens=8, progress=True))
    assert [r["step"] for r in _lines(tmp_path / "metrics.jsonl")] == [0, 1]


def test_the_model_trains_in_train_mode_after_sampling(tmp_path, warm_tiny):
    # Sampling sets eval mode on the trained model itself (one process): the update must see train mode.
    from ibpo_fast.train.components import build
    from ibpo_fast.train.loop import one_step

    run = build(TrainConfig(**{**SMALL, "warmup_steps": 0, "steps": 1, "levels": [1], "max_new_tokens": 64},
                            init_from=warm_tiny, out=str(tmp_path)))
    modes = []
    run.policy.register_forward_pre_hook(lambda module, args: modes.append(all(m.training for m in module.modules())))
    record = one_step(run, 0)
    assert record["num_selected"] > 0 and modes == [True]  # the update's forward ran in train mode
    assert all(module.training for module in run.policy.modules())
    with run.generation_weights() as model:
        assert not model.training
    assert all(module.training for module in run.policy.modules())


def test_init_from_model_checkpoint_or_run_folder_starts_from_those_weights(tmp_path):
    train(TrainConfig(**{**SMALL, "steps": 0}, out=str(tmp_path / "source")))
    source = torch.load(tmp_path / "source" / "model.pt", weights_only=False)["model"]
    for name in ("model.pt", "checkpoint", ""):
        out = tmp_path / f"from_{name or 'run'}"
        # no step at all: the saved model is the one init_from loaded
        train(TrainConfig(**{**SMALL, "warmup_steps": 0, "steps": 0}, init_from=str(tmp_path / "source" / name),
                          out=str(out)))
        loaded = torch.load(out / "model.pt", weights_only=False)["model"]
        assert loaded.keys() == source.keys()
        assert all(torch.equal(loaded[key], source[key]) for key in source)
    with pytest.raises(ValueError, match="neither a model file"):
        train(TrainConfig(**SMALL, init_from=str(tmp_path / "nothing"), out=str(tmp_path / "bad")))


def test_the_main_phase_starts_with_a_fresh_optimizer_state(tmp_path, warm_tiny):
    run = train(TrainConfig(**{**SMALL, "warmup_steps": 3, "warmup_lr": 1e-4, "lr": 1e-4, "steps": 2, "levels": [1],
                               "max_new_tokens": 64}, init_from=warm_tiny, out=str(tmp_path)))
    updated = sum(not r["update_skipped"] for r in _lines(tmp_path / "metrics.jsonl"))
    assert updated >= 1  # an IBPO step really selected and updated
    # AdamW's step counts the IBPO updates only, not the warm-up's three before them
    assert {int(state["step"]) for state in run.optimizer.state.values()} == {updated}


def test_the_warm_up_learning_rate_falls_linearly_to_its_end_value(tmp_path):
    train(TrainConfig(**{**SMALL, "warmup_steps": 3, "warmup_lr": 1e-3, "warmup_lr_end": 1e-4, "steps": 0},
                      out=str(tmp_path)))
    assert [r["lr"] for r in _lines(tmp_path / "warmup.jsonl")] == pytest.approx([1e-3, 5.5e-4, 1e-4])
    assert warmup_lr(TrainConfig(warmup_steps=3, warmup_lr=1e-3), 2) == 1e-3  # null end: constant


@pytest.mark.parametrize("field, value", [("warmup_lr_end", 0.0), ("anchor_weight", -0.5),
                                          ("anchor_weight", float("nan")), ("anchor_weight", float("inf"))])
def test_bad_schedule_and_anchor_weights_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_any_seed_runs(tmp_path):
    # seeds were once multiplied into int64 overflow from seed 19 on; one helper derives them all now
    from ibpo_fast.seeding import derive_seed
    assert len({derive_seed(seed, "data", step) for seed in (0, 19, 2**62, 10**30) for step in (0, 1)}) == 8
    with pytest.raises(ValueError, match="seed"):
        derive_seed(-1)
    train(TrainConfig(**{**SMALL, "warmup_steps": 1, "steps": 1}, seed=10**12, out=str(tmp_path)))
    assert [r["step"] for r in _lines(tmp_path / "metrics.jsonl")] == [0]


def test_exploration_samples_are_trained_under_the_adaptive_prompt_and_anchored_under_their_own():
    """A response drawn under a forced prompt is trained as an answer to the adaptive prompt: its training
    pair holds the adaptive prompt's ids, the update's log-prob of it is the trainer's under that prompt, and
    the sampler-vs-trainer metric leaves it out (it was drawn under another prompt). A correct one is also
    trained under the forced prompt that drew it (anchoring), a wrong one is not."""
    tokenizer = char_tokenizer()
    torch.manual_seed(0)
    policy = Policy(tiny_model(len(tokenizer), seed=0))
    problem = Problem("p", "1+0%10", "1", 1)
    prompts = {fmt: encode_prompts(tokenizer, [prompt_text(problem, fmt)]) for fmt in FORMATS}
    responses = ["1+0=1 \\boxed{1}", "1+0=1 \\boxed{1}", "[TRIAL]1+0=2 \\boxed{2}[/TRIAL]" * 5]
    ids = [tokenizer(r, add_special_tokens=False).input_ids + [tokenizer.eos_token_id] for r in responses]
    formats = ["regular", "asv", "sv"]
    rollouts = [Rollout(k, prompts[fmt][0], i, r, np.full(len(i), -0.5, np.float32), False)
                for k, (fmt, i, r) in enumerate(zip(formats, ids, responses))]
    drawn = phases.Drawn(rollouts, np.array([FORMATS.index(f) for f in formats]), np.zeros(3, np.int64),
                         {fmt: prompts[fmt] * 3 for fmt in FORMATS})
    samples = phases.grade(ArithmeticTask(), [problem], drawn, first=0)
    phases.assign_groups(samples, extended_trials=2)
    assert samples.reward.tolist() == [1, 1, 0] and samples.group.tolist() == [0, 0, 1]
    assert [pair[0] for pair in samples.pairs] == [prompts["asv"][0]] * 3
    assert np.isnan(samples.sampler_logp[0]) and samples.sampler_logp[1] == pytest.approx(-0.5 * len(ids[1]))
    with torch.no_grad():
        logp_adaptive = policy(pack([(prompts["asv"][0], ids[0])]), torch.zeros(1))[0]
    for anchor in (0.0, 0.25):
        gathered, _ = phases.select(WORLD, samples, budget.SampleBuffer(1), TrainConfig(anchor_weight=anchor))
        assert samples.weight.tolist() == [1, 0, 0]  # equal utilities: the lower index, the forced sample
        pairs, owners, weights = phases.training_pairs(samples)
        assert pairs[0] == (prompts["asv"][0], ids[0]) and owners.tolist() == [0] * (1 + (anchor > 0))
        if anchor:  # the correct forced-regular sample, under its own prompt; the wrong voting one is left out
            assert pairs[1] == (prompts["regular"][0], ids[0]) and weights.tolist() == [1.0, 0.25]
        figures = phases.update(policy, samples, samples.weight, samples.response_tokens(), WORLD, TrainConfig(),
                                gathered["anchor"])
        assert not figures["skipped"] and figures["tokens"] == 0.0  # no directly sampled row selected
        policy.zero_grad()
    with torch.no_grad():
        seq_logp, _ = policy(pack(phases.training_pairs(samples)[0][:1]), torch.ones(1))
    assert seq_logp[0].item() == pytest.approx(logp_adaptive[0].item(), abs=1e-5)


def test_only_correct_exploration_samples_in_their_prompts_format_anchor():
    regular, sv, asv = (FORMATS.index(f) for f in ("regular", "sv", "asv"))
    sampled = np.array([regular, regular, sv, sv, sv, asv, regular])
    group = np.array([0, 1, 1, 0, 1, 0, 0])  # a voting answer to the regular prompt; a single one to sv
    reward = np.array([1, 1, 1, 1, 0, 1, 0])
    assert phases.anchored(sampled, group, reward).tolist() == [True, False, True, False, False, False, False]


def test_samples_per_format_and_generate_draw_under_each_prompt():
    cfg = TrainConfig(samples_per_prompt=8, explore_per_group=2)
    assert phases.samples_per_format(cfg) == {"asv": 4, "regular": 2, "sv": 2}
    assert phases.samples_per_format(TrainConfig(mode="sft", explore_per_group=2))["regular"] == 0
    with pytest.raises(ValueError, match="explore_per_group"):
        TrainConfig(samples_per_prompt=3, explore_per_group=2)
    tokenizer = char_tokenizer()
    model = tiny_model(len(tokenizer), seed=0)
    sampler = HFSampler(model, tokenizer, max_new_tokens=4, kv_cache_gib=0.01, progress=False)
    task = ArithmeticTask(levels=(3,))
    problems = task.problems("train", 3, seed=0)
    drawn = phases.generate(sampler, tokenizer, task, problems, 0, TrainConfig(**{**SMALL, "samples_per_prompt": 4}), step=0)
    assert np.bincount(drawn.formats, minlength=3).tolist() == [3, 3, 6]  # regular, sv, asv
    assert np.bincount(drawn.owners).tolist() == [4, 4, 4]
    shown = {i: set() for i in range(3)}
    for k, (rollout, fmt, owner) in enumerate(zip(drawn.rollouts, drawn.formats, drawn.owners)):
        assert rollout.prompt_ids == drawn.prompts[FORMATS[fmt]][k]
        # every format's prompt of a sample shows the same view of its problem
        texts = {tokenizer.decode(drawn.prompts[f][k], skip_special_tokens=True).split(":", 1)[1] for f in FORMATS}
        assert len(texts) == 1 and sorted(readings(texts.pop().strip())[0]) == sorted(readings(problems[owner].text)[0])
        shown[owner].add(tokenizer.decode(drawn.prompts["asv"][k]))
    assert all(len(views) > 1 for views in shown.values())  # the samples of a problem see fresh orders


def test_a_model_saved_before_anchor_weight_loads_with_its_meaning(tmp_path):
    """model.pt files of earlier runs hold `anchor_forced` (bool); it reads as `anchor_weight` 1.0 / 0.0."""
    cfg = dataclasses.asdict(TrainConfig(model="tiny"))
    del cfg["anchor_weight"]
    tokenizer = char_tokenizer()
    for old, new in ((False, 0.0), (True, 1.0)):
        torch.save({"config": {**cfg, "anchor_forced": old},
                    "model": tiny_model(len(tokenizer), seed=0).state_dict()}, tmp_path / "model.pt")
        assert load_trained(str(tmp_path / "model.pt"), torch.device("cpu"))[2].anchor_weight == new
