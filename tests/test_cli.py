"""The `ibpo-fast` command: train → metrics.jsonl, plot → PNGs, eval → per-level figures."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

from ibpo_fast.cli import main

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--warmup_steps=1", "--warmup_batch=4", "--prompts_per_step=2", "--samples_per_prompt=2",
        "--max_new_tokens=16", "--progress=false", "--tensorboard=false"]
REQUIRED = ("step", "q", "loss", "reward_mean", "sampled_extended_share", "selected_extended_share", "tokens_per_s",
            "ilp_status", "ilp_seconds", "logprob_abs_diff", "extended_share_by_level", "time_generate",
            "time_forward_backward", "time_optimizer")


def test_train_plot_eval(tmp_path):
    assert main(["train", "--preset", "tiny", "--steps", "3", "--out", str(tmp_path), *FAST]) == 0
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2]
    for record in records:
        assert set(REQUIRED) <= set(record)
        assert record["q"] == 0.5 and record["selected_extended_share"] <= record["q"]
    assert main(["plot", "--metrics", str(tmp_path / "metrics.jsonl"), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "budget_adherence.png").stat().st_size > 0
    assert (tmp_path / "allocation_by_level.png").stat().st_size > 0
    assert main(["eval", f"--checkpoint={tmp_path}", "--problems_per_level=2", "--max_new_tokens=16"]) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    assert set(result["levels"]) == {"1", "2", "3"}
    assert {"accuracy", "extended_share", "tokens_per_problem"} <= set(result["levels"]["1"])
    forced = tmp_path / "eval_regular.json"
    assert main(["eval", f"--checkpoint={tmp_path}", "--problems_per_level=2", "--max_new_tokens=16",
                 "--prompt_format=regular", f"--out={forced}"]) == 0
    assert json.loads(forced.read_text())["prompt_format"] == "regular"


def test_console_script_and_module_entry_points():
    script = shutil.which("ibpo-fast") or str(Path(sys.executable).parent / "ibpo-fast")
    for command in ([script, "--help"], [sys.executable, "-m", "ibpo_fast.train", "--bad_key=1"]):
        if not Path(command[0]).exists():
            continue  # the console script exists once the package is installed
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert ("train" in result.stdout) or ("unknown TrainConfig keys" in result.stderr)
