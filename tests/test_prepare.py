"""Data preparation as its own step (issue 27): `bvvlab data prepare` builds the shard the
trainer would build, byte for byte, in worker processes; a killed build resumes from its
finished pieces; the trainer opens a prepared shard without tokenising; bad input is one line."""

from __future__ import annotations

import json
import random
from collections import namedtuple

import pytest

from bvvlab.cli import main
from bvvlab.train import config as TC
from bvvlab.train import prepare as P
from bvvlab.glyph import tokenizer as T
from bvvlab.train import shards as D

def small_tokenizer():
    """A lossless tokenizer over ASCII + a few Cyrillic letters (the rest through bytes), as tests/test_data.py's."""
    vocab = ["<pad>", "<s>", "</s>", "<unk>"] + list(T.BYTE_TOKENS) + [chr(c) for c in range(128)] + list("мир")
    return T.hf_tokenizer(vocab, [])


WORDS = "hello world zebra мир труд май </s> <s> a\tb 42 café".split(" ")


@pytest.fixture
def corpus(tmp_path):
    """About 60,000 characters of seeded random documents (train ~90 %, validation ~5 %)."""
    rng = random.Random(0)
    path = tmp_path / "corpus.jsonl"
    docs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 40))) for _ in range(1500)]
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    return str(path)


def _files(shard: D.TokenShard) -> tuple[bytes, bytes, dict]:
    return (shard.path / "tokens.bin").read_bytes(), (shard.path / "chars.bin").read_bytes(), shard.meta


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_prepared_shard_is_byte_identical_to_the_trainers(tmp_path, corpus, workers):
    tok = small_tokenizer()
    ref = D.build_shard(corpus, tok, "train", max_chars=50_000, root=tmp_path / "trainer", progress=False)
    plan = P.make_plan({corpus: 1.0}, tok, "train", 50_000, 0, tmp_path / "prepared")
    assert plan.key == ref.meta["key"]  # the same cache key: the trainer finds the prepared shard
    shard = P.build_split(plan, tok, workers=workers, progress=False, piece_chars=3_000)  # ~17 pieces
    assert _files(shard) == _files(ref)
    assert not plan.work.exists()  # the pieces are gone once the shard is assembled


def test_killed_build_resumes_from_its_pieces(tmp_path, corpus, monkeypatch):
    tok = small_tokenizer()
    ref = D.build_shard(corpus, tok, "train", root=tmp_path / "trainer", progress=False)
    plan = P.make_plan({corpus: 1.0}, tok, "train", None, 0, tmp_path / "prepared")
    real, seen = P.tokenize_piece, []

    def dies_at_piece_5(i, *a, **k):
        if i == 5:
            raise KeyboardInterrupt  # stands for the kill: nothing after piece 4 is written
        seen.append(i)
        return real(i, *a, **k)

    monkeypatch.setattr(P, "tokenize_piece", dies_at_piece_5)
    with pytest.raises(KeyboardInterrupt):
        P.build_split(plan, tok, workers=1, progress=False, piece_chars=4_000)
    assert not plan.done and sorted(p.stem for p in plan.work.glob("*.json") if p.stem != "plan") == \
        [f"{i:07d}" for i in range(5)]
    # a piece cut short (its record kept, its ids truncated) is not trusted: it is tokenised again
    broken = plan.work / "0000002.tokens"
    broken.write_bytes(broken.read_bytes()[:-2])
    seen.clear()
    monkeypatch.setattr(P, "tokenize_piece", lambda i, *a, **k: (seen.append(i), real(i, *a, **k))[1])
    shard = P.build_split(plan, tok, workers=1, progress=False, piece_chars=4_000)
    assert seen[0] == 2 and 0 not in seen and 1 not in seen and 3 not in seen and 4 not in seen
    assert _files(shard) == _files(ref)


def _cfg(corpus, tmp_path, **kw):
    return TC.make_config(corpus=corpus, train_chars=30_000, val_chars=2_000, vocab="bvv241-2-3", dim=64,
                          shard_dir=str(tmp_path / "shards"), progress=False, **kw)


def test_trainer_opens_a_prepared_shard_without_tokenising(tmp_path, corpus, monkeypatch):
    from bvvlab.train.distributed import DistInfo

    cfg = _cfg(corpus, tmp_path)
    plans = P.prepare_config(cfg, workers=1, progress=False, say=lambda s: None)
    assert all(p.done for p in plans)

    def no_tokenising(*a, **k):
        raise AssertionError("the trainer tokenised a prepared shard")

    monkeypatch.setattr(D, "encode_texts", no_tokenising)
    got = P.training_shards(cfg, P.config_tokenizer(cfg), DistInfo())
    assert {s: v.path for s, v in got.items()} == {p.split: p.final for p in plans}


def test_missing_large_shard_under_torchrun_names_the_prepare_command(tmp_path, corpus, monkeypatch):
    cfg = _cfg(corpus, tmp_path)
    tok = P.config_tokenizer(cfg)
    split, w, limit = P.config_splits(cfg)[0]
    plan = P.make_plan(w, tok, split, limit, cfg.seed, P.shard_root(cfg.shard_dir))
    P._check_buildable(plan, [1], world=2)  # small: rank 0 builds it, as before
    monkeypatch.setattr(P, "SMALL_CHARS", 1000)
    monkeypatch.setattr("sys.argv", ["bvvlab", "train", "--config", "c.json", "steps=5"])
    with pytest.raises(ValueError, match=r"not prepared for rank\(s\) 1 .*bvvlab data prepare --config c.json steps=5"):
        P._check_buildable(plan, [1], world=2)
    P._check_buildable(plan, [0], world=1)  # one process may still tokenise it itself


def test_shard_of_another_tokenizer_is_named(tmp_path, corpus, monkeypatch):
    cfg = _cfg(corpus, tmp_path)
    P.prepare_config(cfg, workers=1, progress=False, say=lambda s: None)
    other = small_tokenizer()  # the same text, another vocabulary
    split, w, limit = P.config_splits(cfg)[0]
    plan = P.make_plan(w, other, split, limit, cfg.seed, P.shard_root(cfg.shard_dir))
    assert not plan.done and P.other_tokenizer(plan) is not None
    monkeypatch.setattr(P, "SMALL_CHARS", 1000)
    with pytest.raises(ValueError, match="prepared with another tokenizer"):
        P._check_buildable(plan, [0], world=1)


def test_disk_too_small_is_one_line_before_any_work(tmp_path, corpus, monkeypatch, capsys):
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(P.shutil, "disk_usage", lambda p: Usage(10**9, 10**9 - 1000, 1000))
    rc = main(["data", "prepare", f"corpus={corpus}", "train_chars=30000", "val_chars=2000", "vocab=bvv241-2-3",
               "dim=64", f"shard_dir={tmp_path / 'shards'}", "progress=false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "only 1000 B are free" in err[0] and "shard_dir=" in err[0]
    assert not list((tmp_path / "shards").glob("*/meta.json"))


def test_dry_run_estimates_and_builds_nothing(tmp_path, corpus, capsys):
    rc = main(["data", "prepare", "--dry-run", f"corpus={corpus}", "train_chars=30000", "val_chars=2000",
               "vocab=bvv241-2-3", "dim=64", f"shard_dir={tmp_path / 'shards'}", "progress=false"])
    out = capsys.readouterr().out
    assert rc == 0 and "train: ~30,000 characters -> ~" in out and "tokens" in out and "on disk" in out
    assert not list((tmp_path / "shards").glob("*/meta.json"))
    # the estimated tokens are close to the truth (the sample here covers the whole budget)
    import re

    est = int(re.search(r"train: .* -> ~([\d,]+) tokens", out).group(1).replace(",", ""))
    plans = P.prepare_config(_cfg(corpus, tmp_path), workers=1, progress=False, say=lambda s: None)
    real = D.open_shard(plans[0].final)
    assert abs(est - len(real)) <= 0.02 * len(real)


@pytest.mark.parametrize("value, line", [
    ("abc", "bvvlab data prepare: error: workers='abc': expected an integer"),
    ("0", "bvvlab data prepare: error: workers=0: must be >= 1 (tokenising processes; leave it out for one per core)"),
    ("2.5", "bvvlab data prepare: error: workers='2.5': expected an integer"),
])
def test_bad_workers_is_the_shared_config_line(tmp_path, corpus, capsys, value, line):
    # argparse's own int type printed its usage and "invalid int value" (exit 2) for "abc", and
    # "--workers 0: give 1 or more" for 0: neither the `name=value: ...` line of other surfaces
    rc = main(["data", "prepare", "--workers", value, f"corpus={corpus}", "vocab=bvv241-2-3", "dim=64",
               f"shard_dir={tmp_path / 'shards'}", "progress=false"])
    assert rc == 2 and capsys.readouterr().err.strip().splitlines() == [line]
    assert not (tmp_path / "shards").exists()  # refused before any work


def test_character_estimate_follows_the_text_not_the_bytes(tmp_path):
    """Cyrillic takes 2 bytes a letter and gzip shrinks text: the estimate counts characters
    (it said 1.8 G for 1.2 G characters of Russian JSON lines when it counted bytes)."""
    import gzip

    rng = random.Random(0)
    letters = "абвгдеёжзийклмнопрстуфхцчшщъыьэюя"
    text = "\n".join(" ".join("".join(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(12))
                     for _ in range(40_000))
    (tmp_path / "ru.txt").write_text(text, encoding="utf-8")
    with gzip.open(tmp_path / "ru.txt.gz", "wt", encoding="utf-8") as fh:
        fh.write(text)
    (tmp_path / "en.txt").write_text("plain ascii text\n" * 5000, encoding="utf-8")
    for name in ("ru.txt", "ru.txt.gz", "en.txt"):
        n = len((tmp_path / name.removesuffix(".gz")).read_text(encoding="utf-8"))
        assert abs(P.file_chars(tmp_path / name) - n) <= 0.02 * n, name
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("абв " * 1000, encoding="utf-8")
    (folder / "notes.bin").write_bytes(b"\0" * 100_000)  # not read for a folder, not counted
    assert P.source_chars(str(folder), "all") == 4000
