"""Ordinary mistakes get one line naming the problem and the fix, exit code 2, no traceback
(issue 10, "One-line errors still missing")."""

from __future__ import annotations

import pytest

from bvvlab import cli

FAST = ["preset=tiny", "train_chars=20000", "val_chars=4000", "seq_len=32", "batch_size=4", "progress=false"]


def _one_line(capsys, rc: int, *words: str, code: int = 2) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == code, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, err
    return err


def test_out_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "f"
    f.write_text("mine")
    _one_line(capsys, cli.main(["train", "--out", str(f), "--steps", "1", *FAST]), "is a file", "out=")
    assert f.read_text() == "mine"


def test_train_with_a_damaged_font(broken_font, tmp_path, capsys):
    broken_font.write_bytes(b"not a font")
    text = tmp_path / "t.txt"  # BVVLAB_DATA points at the damaged copy: the corpus is a plain file
    text.write_text("".join(f"line {i} of some text to train on.\n" for i in range(600)), encoding="utf-8")
    _one_line(capsys, cli.main(["train", "--out", str(tmp_path / "r"), "--steps", "1", *FAST, f"corpus={text}"]),
              str(broken_font))
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, words", [
    (["grad_clip=-1"], ["grad_clip=-1.0", ">= 0"]),
    (["dtype=fp16"], ["fp16 is not supported", "dtype=bf16"]),
    (["dtype=float7"], ["use auto, fp32 or bf16"]),
    (["corpus={\"libreoffice-en-ru\": 1"], ["corpus=", "not valid JSON"]),
    (["steps=abc"], ["steps='abc'", "integer"]),
    (["lr=fast"], ["lr='fast'", "number"]),
])
def test_bad_train_values(tmp_path, capsys, args, words):
    _one_line(capsys, cli.main(["train", "--out", str(tmp_path / "r"), *FAST, *args]), *words)
    assert not (tmp_path / "r").exists()


def test_compare_refuses_frozen_false(tmp_path, capsys):
    _one_line(capsys, cli.main(["compare", "--out", str(tmp_path / "c"), *FAST, "frozen=false"]),
              "compare trains both twins", "frozen=false")


def test_corpus_negative_n(capsys):
    _one_line(capsys, cli.main(["corpus", "concepts", "-n", "-1"]), "-n -1", ">= 0")


def test_ctrl_c_during_start_up_is_one_line(monkeypatch, capsys):
    from bvvlab.cli import train as train_cli

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_cli, "config_from_args", interrupted)
    _one_line(capsys, cli.main(["train", "--steps", "1"]), "interrupted", code=130)
