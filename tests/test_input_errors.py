"""Bad input files and folders: one InputError naming the file and line, or the folder and what it lacks."""
import pytest

from ibpo_fast.errors import InputError
from ibpo_fast.models import load_model, load_tokenizer
from ibpo_fast.rollout.tasks import ArithmeticTask, JsonlMathTask, make_task


@pytest.mark.parametrize("second_line, message", [
    ('{"problem": "2+2", "answer": 4,,}', r":2: not valid JSON \(Expecting property name enclosed in double quotes "
                                          r"at column 32\)$"),
    ('["2+2", "4"]', r":2: expected an object with 'problem' and 'answer', got '\[\"2\+2\", \"4\"\]'$"),
    ('{"problem": "2+2"}', r":2: expected an object with 'problem' and 'answer'"),
    ('{"problem": "2+2", "answer": "4", "level": "hard"}', r":2: 'level' must be an integer, got 'hard'$"),
])
def test_a_bad_jsonl_line_names_the_file_and_line(tmp_path, second_line, message):
    path = tmp_path / "tasks.jsonl"
    path.write_text('{"problem": "1+1", "answer": "2"}\n' + second_line + "\n")
    with pytest.raises(InputError, match="^" + str(path).replace(".", r"\.") + message):
        JsonlMathTask(path)


def test_an_empty_jsonl_file_is_refused(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(InputError, match="no problems in the file"):
        JsonlMathTask(tmp_path / "empty.jsonl")


def test_make_task_reports_the_spec():
    assert isinstance(make_task("arithmetic", [1, 2]), ArithmeticTask)
    with pytest.raises(InputError, match="task must be 'arithmetic', 'jsonl:PATH' or 'reasoning_gym:NAME', got 'jsnl:x'"):
        make_task("jsnl:x")
    with pytest.raises(InputError, match=r"task 'arithmetic': levels must be a non-empty subset"):
        make_task("arithmetic", [9])


def test_a_model_folder_without_its_files_says_which(tmp_path):
    with pytest.raises(InputError, match=f"^model: no config.json in '{tmp_path}'"):
        load_model(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(InputError, match=f"^model: no tokenizer in '{tmp_path}' \\(none of tokenizer.json"):
        load_tokenizer(str(tmp_path))
