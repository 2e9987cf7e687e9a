"""The `ibpo-fast` command: train → metrics.jsonl, plot → PNGs, eval → per-level figures; and what a user
sees when something is wrong: one line naming the key, file or folder, before any run folder exists."""
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import subprocess_env

from ibpo_fast.cli import main
from ibpo_fast.train import run_folder

FAST = ["--warmup_steps=1", "--warmup_batch=4", "--prompts_per_step=2", "--samples_per_prompt=2", "--explore_per_group=1",
        "--max_new_tokens=16", "--progress=false", "--tensorboard=false", "--summary_problems_per_level=2"]
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
    for name in ("budget_adherence.png", "allocation_by_level.png", "metrics_loss.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert main(["plot", "--metrics", str(tmp_path / "warmup.jsonl"), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "warmup_loss.png").stat().st_size > 0
    assert main(["eval", f"--checkpoint={tmp_path}", "--problems_per_level=2", "--max_new_tokens=16"]) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    assert set(result["levels"]) == {"1", "2", "3"}
    assert {"accuracy", "extended_share", "tokens_per_problem"} <= set(result["levels"]["1"])
    forced = tmp_path / "eval_regular.json"
    assert main(["eval", f"--checkpoint={tmp_path}", "--problems_per_level=2", "--max_new_tokens=16",
                 "--prompt_format=regular", f"--out={forced}"]) == 0
    assert json.loads(forced.read_text())["prompt_format"] == "regular"
    # --overwrite may delete the whole folder: everything train, plot and eval wrote is a run's own file
    assert run_folder.foreign_entries(tmp_path) == []


def test_console_script_and_module_entry_points(tmp_path):
    script = shutil.which("ibpo-fast") or str(Path(sys.executable).parent / "ibpo-fast")
    assert Path(script).exists(), f"no console script {script}: install the package (pip install .)"
    env = subprocess_env()
    shown = subprocess.run([script, "train", "--help"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=60)
    assert shown.returncode == 0 and "--warmup_steps int" in shown.stdout, shown
    refused = subprocess.run([sys.executable, "-m", "ibpo_fast.train", "--stepz=1"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2, refused
    assert refused.stderr.splitlines()[-1] == ("python -m ibpo_fast.train: error: unknown TrainConfig key 'stepz' "
                                               "(did you mean 'steps'?); --help lists every key")


def test_command_line_errors_need_no_torch(tmp_path):
    # A config or run-folder error comes back before torch and transformers are imported (the ~9 s the
    # command used to spend first): checked on sys.modules, not on a clock.
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text('{"step": 0}\n')
    code = textwrap.dedent(f"""
        import sys
        from ibpo_fast.cli import main
        codes = []
        for argv in (["train", "--stepz=3"], ["train", "--steps", "three"], ["train", "--out={tmp_path / 'run'}"],
                     ["train", "--help"], ["eval", "--help"], ["eval", "--seed=-1"]):
            try:
                codes.append(main(argv))
            except SystemExit as e:
                codes.append(e.code)
        heavy = sorted(m for m in ("torch", "transformers", "numba") if m in sys.modules)
        print(codes, heavy)
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=subprocess_env(), capture_output=True,
                            text=True, timeout=120)
    assert result.stdout.strip().splitlines()[-1] == "[2, 2, 2, 0, 0, 2] []", result


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_non_empty_run_folder_is_refused(tmp_path, capsys):
    old = {"metrics.jsonl": '{"step": 0}\n', "model.pt": "the old run", "eval.json": "{}"}
    for name, text in old.items():
        (tmp_path / name).write_text(text)
    assert main(["train", f"--out={tmp_path}", *FAST]) == 2
    line = _error_line(capsys)
    assert line.startswith(f"ibpo-fast train: error: out: '{tmp_path}' is not empty (it holds eval.json, "
                           "metrics.jsonl, model.pt)") and "--resume=true" in line and "--overwrite=true" in line
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == old


def test_overwrite_deletes_the_old_runs_files_only(tmp_path, capsys):
    (tmp_path / "model.pt").write_text("the old run")
    (tmp_path / "budget_adherence.png").write_text("old plot")
    (tmp_path / "tb").mkdir()
    (tmp_path / "notes.txt").write_text("mine")
    args = ["train", f"--out={tmp_path}", "--overwrite=true", "--steps=1", *FAST]
    assert main(args) == 2  # notes.txt is not a run's file: nothing is deleted
    assert "also holds notes.txt; choose another --out" in _error_line(capsys)
    assert (tmp_path / "notes.txt").exists() and (tmp_path / "model.pt").read_text() == "the old run"
    (tmp_path / "notes.txt").unlink()
    assert main(args) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["allocation_by_level.png", "budget_adherence.png",
                                                           "checkpoint", "metrics.jsonl", "metrics_loss.png", "model.pt",
                                                           "summary.json",
                                                           "warmup.jsonl"]
    assert (tmp_path / "budget_adherence.png").read_bytes() != b"old plot"
    assert (tmp_path / "model.pt").stat().st_size > 1000  # the new model


def test_bad_inputs_are_one_line_and_make_no_folder(tmp_path, capsys):
    tasks = tmp_path / "bad.jsonl"
    tasks.write_text('{"problem": "1+1", "answer": "2"}\n{"problem": "2+2", "answer": 4,,}\n')
    out = tmp_path / "run"
    assert main(["train", f"--task=jsonl:{tasks}", f"--out={out}", *FAST]) == 2
    assert _error_line(capsys).startswith(f"ibpo-fast train: error: {tasks}:2: not valid JSON (")
    (tmp_path / "model").mkdir()
    assert main(["train", f"--model={tmp_path / 'model'}", f"--out={out}", *FAST]) == 2
    assert _error_line(capsys) == f"ibpo-fast train: error: model: no config.json in '{tmp_path / 'model'}' " \
                                  "(expected a Hugging Face model folder)"
    assert not out.exists()
    missing = tmp_path / "nothing"
    assert main(["eval", f"--checkpoint={missing}"]) == 2
    assert _error_line(capsys) == f"ibpo-fast eval: error: '{missing}' is neither a model file, a checkpoint " \
                                  "folder nor a run folder with model.pt or checkpoint/"
    assert main(["train", f"--init_from={missing}", f"--out={out}", *FAST]) == 2
    assert _error_line(capsys).startswith(f"ibpo-fast train: error: '{missing}' is neither")
    assert not out.exists()


def test_plot_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text('{"step": 0, "loss": 1.0}\n{"step": 1,\n')
    assert _plot_status(tmp_path / "metrics.jsonl", tmp_path) == 2
    assert _error_line(capsys) == f"ibpo-fast plot: error: {tmp_path / 'metrics.jsonl'}:2: not valid JSON " \
                                  "(Expecting property name enclosed in double quotes)"
    assert _plot_status(tmp_path / "missing.jsonl", tmp_path) == 2
    assert "no file" in _error_line(capsys)


def _plot_status(metrics, out) -> int:
    return main(["plot", "--metrics", str(metrics), "--out", str(out)])
