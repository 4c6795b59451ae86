"""Careless and hostile input that used to escape as a traceback or a misleading line (issue 26,
items 10, 11, 16, 17, 23, 25): each is now one line naming the file or value and the fix."""

from __future__ import annotations

import json

import pytest

from bvvlab.cli import main
from bvvlab.eval import tasks as T


def _jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _one_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_a_suite_header_without_a_name_or_with_a_bad_kind_is_one_line(tmp_path):
    """Item 10: a header line without "name" raised KeyError: 'name'."""
    q = {"question": "Cat?", "choices": ["кошка", "дом"], "answer": 0}
    cases = [({"task": {"kind": "mc"}}, [q], "has no task name"),
             ({"task": {"name": "  ", "kind": "mc"}}, [q], "has no task name"),
             ({"task": {"name": "t", "kind": "essay"}}, [q], "task kind 'essay'"),
             ({"task": {"name": "t", "kind": "translation", "src": "en"}}, [{"src": "a", "ref": "b"}],
              'needs "src" and "tgt"'),
             ({"task": {"name": "t", "kind": "translation", "src": "en", "tgt": "ru"}}, [{"src": "a"}],
              ':2 needs "src" and "ref"'),
             ({"task": {"name": "t", "kind": "translation", "src": "en", "tgt": "ru", "max_new_tokens": "x"}},
              [{"src": "a", "ref": "b"}], "max_new_tokens='x'")]
    for k, (head, rows, words) in enumerate(cases):
        path = _jsonl(tmp_path / f"s{k}.jsonl", [head, *rows])
        with pytest.raises(T.EvalError, match=words) as exc:
            T.load_task_file(path)
        assert path in str(exc.value)


@pytest.mark.parametrize("task, row, missing", [
    ("mmlu", {"q": "x", "choices": ["a", "b"], "answer": 0}, "question"),
    ("arc_easy", {"question": "x", "choices": ["a", "b"], "answer": 0}, "answerKey"),
    ("squad_v2", {"question": "x", "answers": {"text": ["a"]}}, "context"),
    ("opus100_en_ru", {"en": "a", "ru": "b"}, "translation"),
])
def test_a_hub_task_file_with_the_wrong_columns_names_the_file_and_the_columns(tmp_path, task, row, missing):
    """Item 11: `--suite mmlu=file.jsonl` whose columns are wrong: KeyError 'question'."""
    path = _jsonl(tmp_path / "t.jsonl", [row])
    with pytest.raises(T.EvalError) as exc:
        T.hub_task(task, path)
    msg = str(exc.value)
    assert path in msg and f"row 1 has no column {missing}" in msg and "have the columns" in msg
    assert all(c in msg for c in T.HUB_COLUMNS[task])


def test_a_hub_row_whose_values_do_not_fit_is_one_line(tmp_path):
    path = _jsonl(tmp_path / "arc.jsonl", [{"question": "x", "choices": ["a", "b"], "answerKey": "A"}])
    with pytest.raises(T.EvalError, match="does not fit the arc_easy format.*choices {label"):
        T.hub_task("arc_easy", path)


def test_a_task_file_that_is_not_utf8_names_the_file_and_line(tmp_path, capsys):
    """Item 16: the codec error alone, without the file's name."""
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"question": "Cat?", "choices": ["a", "b"], "answer": 0}\n'
                     + json.dumps({"question": "Caf\u00e9?", "choices": ["a", "b"], "answer": 0},
                                  ensure_ascii=False).encode("latin-1") + b"\n")
    with pytest.raises(T.EvalError, match=r"latin1.jsonl:2 is not UTF-8 text \(byte 0xe9\); save the task file as UTF-8"):
        T.load_task_file(path)
    assert main(["eval", str(tmp_path), "--suite", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "latin1.jsonl:2 is not UTF-8" in _one_line(capsys)


def test_an_answer_of_true_and_a_single_choice_say_what_they_are(tmp_path):
    """Item 17: `answer: true` said "answer None ..."; one choice said "has no choices"."""
    path = _jsonl(tmp_path / "t.jsonl", [{"question": "Cat?", "choices": ["a", "b"], "answer": True}])
    with pytest.raises(T.EvalError, match="answer true is a yes/no value; give the index"):
        T.load_task_file(path)
    path = _jsonl(tmp_path / "u.jsonl", [{"question": "Cat?", "choices": ["a"], "answer": 0}])
    with pytest.raises(T.EvalError, match=r"question 1 has a single choice \('a'\); give \"choices\": a list of at least 2"):
        T.load_task_file(path)


def test_a_damaged_parquet_names_its_file(tmp_path, capsys):
    """Item 25: pyarrow's message without the file's name (eval's NAME=PATH, and hf: corpora)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"question": ["x"] * 50, "choices": [["a", "b"]] * 50, "answer": [0] * 50,
                             "text": ["some text"] * 50}), good)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(T.EvalError, match=f"{bad} cannot be read as parquet"):
        T.hub_task("mmlu", bad)
    assert main(["eval", str(tmp_path), "--suite", f"mmlu={bad}", "--out", str(tmp_path / "o")]) == 2
    assert f"{bad} cannot be read as parquet" in _one_line(capsys)
    assert main(["corpus", f"hf:{bad}", "-n", "1"]) == 2
    line = _one_line(capsys)
    assert str(bad) in line and "cannot be read as a dataset" in line


def test_fuse_refuses_names_that_repeat_or_are_empty(tmp_path, capsys):
    """Item 23: duplicate --names were accepted; probing the result then failed with an unrelated
    hidden-state message. Checked before the experts are read, so any folders serve here."""
    from bvvlab.train.fusion import FusionError, fuse

    a, b = tmp_path / "a", tmp_path / "b"
    for names, words in ((["x", "x"], "gives x to more than one expert"), (["x", " "], "give every expert a non-empty"),
                         (["x", "y::z"], "without '::'")):
        with pytest.raises(FusionError, match=words):
            fuse([a, b], "bayes", tmp_path / "out", names=names)
        assert main(["fuse", str(a), str(b), "--names", *names, "--out", str(tmp_path / "out")]) == 2
        assert words in _one_line(capsys)
    assert not (tmp_path / "out").exists()
