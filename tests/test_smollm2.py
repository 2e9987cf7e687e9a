"""SmolLM2 end to end on the CPU, the `smollm2` preset shortened (opt-in: IBPO_SLOW_TESTS=1; minutes).

The GGUF is de-quantized once (25-75 s) and saved as a local model directory, which the runs load
(`model: <dir>`, the same weights and tokenizer). Shown: bf16 compute over f32 master weights (the preset's
`dtype: bfloat16`) moves the master weights at the preset's learning rates; a run stopped after its first
IBPO step and resumed ends with the metrics and the weights of the uninterrupted run; the planner's built-in
architecture is the model's own.
"""
import json
import os
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from ibpo_fast.models import load_model
from ibpo_fast.train import TrainConfig, train
from ibpo_fast.train.config import load_config
from ibpo_fast.train.plan import KNOWN_ARCHITECTURES, architecture

pytestmark = pytest.mark.skipif(os.environ.get("IBPO_SLOW_TESTS") != "1",
                                reason="slow (de-quantizes SmolLM2's GGUF, then 3 short CPU runs): set IBPO_SLOW_TESTS=1")
SHORT = dict(warmup_steps=1, warmup_batch=2, steps=2, prompts_per_step=2, samples_per_prompt=2, max_new_tokens=96,
             checkpoint_every=0, progress=False, tensorboard=False)
SAME = ("step", "loss", "train_tokens", "num_selected", "update_skipped", "reward_mean", "sampled_extended_share",
        "response_tokens_mean")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # On a shared two-core machine two threads oversubscribe: measured 10x slower generation.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory) -> Path:
    start = time.perf_counter()
    model, tokenizer = load_model("smollm2")
    print(f"SmolLM2 GGUF de-quantized in {time.perf_counter() - start:.1f} s")
    folder = tmp_path_factory.mktemp("smollm2")
    # the de-quantized weights in a plain (unquantized) model of the same config: GGUF models do not save
    values = {key: value for key, value in model.config.to_dict().items() if key != "quantization_config"}
    plain = AutoModelForCausalLM.from_config(type(model.config).from_dict(values))
    plain.load_state_dict(model.state_dict())
    plain.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _config(folder, **more) -> TrainConfig:
    return load_config(TrainConfig, preset="smollm2", overrides={**SHORT, "model": str(folder), **more})


def _lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_planner_table_is_the_models_architecture(smollm2_dir):
    arch, source = architecture(str(smollm2_dir))
    model = load_model(str(smollm2_dir))[0]
    assert source.endswith("config.json") and arch == KNOWN_ARCHITECTURES["smollm2"]
    assert arch.num_parameters == sum(p.numel() for p in model.parameters())


def test_bf16_compute_moves_master_weights_and_resume_is_exact(smollm2_dir, tmp_path):
    assert _config(smollm2_dir).dtype == "bfloat16"
    start = time.perf_counter()
    train(_config(smollm2_dir, out=str(tmp_path / "whole")))
    whole_seconds = time.perf_counter() - start
    initial = load_model(str(smollm2_dir))[0].state_dict()
    final = torch.load(tmp_path / "whole" / "model.pt", weights_only=False)["model"]
    assert {value.dtype for value in final.values()} == {torch.float32}
    blocks = [key for key in initial if ".layers." in key and key.endswith("proj.weight")]
    changed = sum(int((final[key] != initial[key]).sum()) for key in blocks) / sum(initial[key].numel() for key in blocks)
    assert changed > 0.9, changed  # bf16 weights would keep most of them: a step of ~lr is below half an ulp

    train(_config(smollm2_dir, out=str(tmp_path / "cut"), stop_after=SHORT["warmup_steps"] + 1))
    assert not (tmp_path / "cut" / "model.pt").exists()
    train(_config(smollm2_dir, out=str(tmp_path / "cut"), resume=True))
    for name in ("warmup.jsonl", "metrics.jsonl"):
        whole, cut = _lines(tmp_path / "whole" / name), _lines(tmp_path / "cut" / name)
        assert [{k: r.get(k) for k in SAME} for r in cut] == [{k: r.get(k) for k in SAME} for r in whole]
    resumed = torch.load(tmp_path / "cut" / "model.pt", weights_only=False)["model"]
    assert all(torch.equal(resumed[key], final[key]) for key in final)
    records = _lines(tmp_path / "whole" / "metrics.jsonl")
    print(f"whole run {whole_seconds:.1f} s; IBPO steps: "
          + "; ".join(f"reward {r['reward_mean']:.2f} selected {r['num_selected']}" for r in records)
          + f"; block weights changed {changed:.3f}")
