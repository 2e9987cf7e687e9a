"""A run folder is never overwritten silently: refused unless resume or overwrite, and overwrite deletes
only what a run writes."""
import pytest

from ibpo_fast.errors import InputError
from ibpo_fast.train import run_folder


def _fill(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).mkdir() if name == "tb" or name.startswith("checkpoint") else (folder / name).write_text(name)


def test_a_new_or_empty_folder_is_used(tmp_path):
    run_folder.check(tmp_path / "new", resume=False, overwrite=False)
    run_folder.check(tmp_path, resume=False, overwrite=False)
    assert run_folder.prepare(tmp_path / "a" / "b", resume=False, overwrite=False).is_dir()


def test_a_folder_with_a_run_needs_resume_or_overwrite(tmp_path):
    _fill(tmp_path, ["metrics.jsonl", "warmup.jsonl", "checkpoint", "model.pt", "eval.json", "budget_adherence.png"])
    with pytest.raises(InputError, match=r"not empty \(it holds budget_adherence.png, checkpoint, eval.json, "
                                         r"metrics.jsonl and 2 more\); pass --resume=true .* --overwrite=true"):
        run_folder.check(tmp_path, resume=False, overwrite=False)
    run_folder.check(tmp_path, resume=True, overwrite=False)
    assert len(list(tmp_path.iterdir())) == 6  # resume keeps everything


def test_overwrite_deletes_the_runs_files(tmp_path):
    _fill(tmp_path, ["metrics.jsonl", "model.pt", "model.tmp", "eval_sv.json", "tb", "warmup_loss.png", "checkpoint",
                     "checkpoint.old", "checkpoint.tmp"])
    (tmp_path / "tb" / "events").write_text("x")
    assert run_folder.foreign_entries(tmp_path) == []
    run_folder.prepare(tmp_path, resume=False, overwrite=True)
    assert list(tmp_path.iterdir()) == []


def test_overwrite_refuses_a_folder_with_other_files(tmp_path):
    _fill(tmp_path, ["metrics.jsonl", "train.py", "data.jsonl"])
    with pytest.raises(InputError, match=r"also holds data.jsonl, train.py; choose another --out"):
        run_folder.prepare(tmp_path, resume=False, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl", "metrics.jsonl", "train.py"]


def test_only_the_main_process_touches_the_folder(tmp_path):
    _fill(tmp_path, ["metrics.jsonl"])
    run_folder.prepare(tmp_path, resume=False, overwrite=False, is_main=False)  # no check, no write
    assert not run_folder.prepare(tmp_path / "new", resume=False, overwrite=False, is_main=False).exists()


def test_a_file_is_not_a_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="is a file, not a folder"):
        run_folder.check(tmp_path / "f", resume=True, overwrite=False)
