"""One rule for every command's output folder (issue 26, items 3-6): probe, eval, embed and fuse
write into a new or empty folder, or with --overwrite into an earlier result of their own; a
training run, a checkpoint they read, a user's folder or a file is refused in one line and left
byte for byte as it was. plotly.min.js beside a figure is checked before it is reused."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bvvlab.analysis import items as probe_items
from bvvlab.cli import main
from bvvlab.glyph import embeddings as E
from bvvlab.glyph.tokenizer import bvv241_vocab, compact_vocab, hf_tokenizer
from bvvlab.models.checkpoints import save_checkpoint
from bvvlab.models.model import BVVForCausalLM, config_from_preset


def snapshot(path: Path) -> dict[str, str]:
    """Every file under `path` (or the file itself) by relative name -> sha256 of its bytes."""
    if path.is_file():
        return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def one_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny untrained checkpoint whose vocabulary covers the concept items (probe's default)."""
    texts = [it.text for it in probe_items.concept_items()] + ["Question: Cat?\nAnswer: кошка дом"]
    tok = hf_tokenizer(compact_vocab(bvv241_vocab(65536, []), texts)[0], [])
    torch.manual_seed(0)
    cfg = config_from_preset("tiny", vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                             bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    glyphs = F.normalize(torch.randn(len(tok), cfg.hidden_size, generator=torch.Generator().manual_seed(0)), dim=-1)
    root = tmp_path_factory.mktemp("outputs")
    return save_checkpoint(BVVForCausalLM.from_glyphs(cfg, glyphs).eval(), tok, root / "run" / "bvv")


def _mine(tmp_path: Path) -> Path:
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "results.md").write_text("my own notes")
    return keep


PROBE = ["--items", "concepts", "--limit", "12", "--folds", "2", "--no-umap", "--no-latent", "--jobs", "0"]


def test_probe_overwrite_replaces_a_probe_result_and_nothing_else(ckpt, tmp_path, capsys):
    """Item 3: `--overwrite` used to delete whatever --out was: the checkpoint being probed, the
    run folder holding it, a user's folder, a file."""
    keep, afile = _mine(tmp_path), tmp_path / "notes.txt"
    afile.write_text("mine")
    for out, words in ((ckpt, "is one of the inputs"), (ckpt.parent, "holds one of the inputs"),
                       (keep, "holds something other than a probe result"), (afile, "is a file")):
        before = snapshot(out)
        assert main(["probe", str(ckpt), "--out", str(out), "--overwrite", *PROBE]) == 2
        assert words in one_line(capsys)
        assert snapshot(out) == before
    out = tmp_path / "probe"
    assert main(["probe", str(ckpt), "--out", str(out), *PROBE]) == 0
    first = json.loads((out / "metrics.json").read_text())
    capsys.readouterr()
    assert main(["probe", str(ckpt), "--out", str(out), *PROBE]) == 2  # its own result, but not asked to replace
    assert "already holds a probe result: pass --overwrite" in one_line(capsys)
    assert main(["probe", str(ckpt), "--out", str(out), "--overwrite", "--seed", "1", *PROBE]) == 0
    assert json.loads((out / "metrics.json").read_text())["meta"]["n_items"] == first["meta"]["n_items"]
    assert (out / ".bvvlab-output.json").is_file()


def test_eval_writes_only_into_a_new_folder_or_its_own_earlier_result(ckpt, tmp_path, capsys):
    """Item 4: `bvvlab eval --out D` silently replaced results.json/.md/.html in any folder."""
    task = tmp_path / "mine.jsonl"
    task.write_text(json.dumps({"question": "Cat?", "choices": ["кошка", "дом"], "answer": 0}) + "\n")
    args = ["eval", str(ckpt), "--suite", str(task)]
    keep = _mine(tmp_path)
    before = snapshot(keep)
    assert main([*args, "--out", str(keep)]) == 2
    assert "holds something other than an evaluation" in one_line(capsys)
    assert snapshot(keep) == before
    assert main([*args, "--out", str(ckpt), "--overwrite"]) == 2 and "is one of the inputs" in one_line(capsys)
    out = tmp_path / "eval"
    assert main([*args, "--out", str(out)]) == 0
    capsys.readouterr()
    (out / "notes.txt").write_text("kept")  # a file of the user's beside the results stays
    earlier = snapshot(out)
    assert main([*args, "--out", str(out)]) == 2
    assert "already holds an evaluation: pass --overwrite" in one_line(capsys)
    assert snapshot(out) == earlier
    assert main([*args, "--out", str(out), "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "kept" and json.loads((out / "results.json").read_text())["rows"]


def test_embed_never_replaces_a_training_run(ckpt, tmp_path, capsys):
    """Item 5: `bvvlab embed --overwrite --out RUN` replaced a run's meta.json and tokenizer files,
    after which the run paired another tokenizer with its model."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(ckpt))
    emb = E.Embedded(tok, F.normalize(torch.randn(len(tok), 8), dim=-1), {"vocab_kind": "test"})
    before = snapshot(ckpt)
    with pytest.raises(FileExistsError, match="holds something other than an? embedding folder"):
        emb.save(ckpt, overwrite=True)
    assert main(["embed", "--vocab", "bvv241-2-3", "--out", str(ckpt), "--overwrite"]) == 2
    assert "holds something other than" in one_line(capsys)
    assert snapshot(ckpt) == before
    out = emb.save(tmp_path / "emb")
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already holds an? embedding folder: pass --overwrite"):
        emb.save(out)
    other = E.Embedded(tok, F.normalize(torch.randn(len(tok), 4), dim=-1), {"vocab_kind": "test"})
    other.save(out, overwrite=True)  # its own kind: replaced, the user's file kept
    assert E.load_embedded(out).matrix.shape[1] == 4 and (out / "keep.txt").read_text() == "mine"


def test_a_damaged_plotly_bundle_is_rewritten_not_trusted(tmp_path):
    """Item 6: a plotly.min.js cut short (a full disk) was reused by every later run, so the pages
    beside it never drew; now it is checked by size and sha256 and written again whole."""
    import plotly.graph_objects as go
    from plotly.offline import get_plotlyjs

    from bvvlab.eval import runner
    from bvvlab.glyph.views import save_figure

    full = get_plotlyjs().encode()
    views = tmp_path / "views"
    views.mkdir()
    (views / "plotly.min.js").write_bytes(full[:110_000])
    save_figure(go.Figure(go.Scatter(x=[1, 2], y=[3, 4])), views, "pca")
    assert (views / "plotly.min.js").read_bytes() == full
    rows = [{"model": "m", "task": "t", "metric": "acc", "mean": 0.5, "low": 0.4, "high": 0.6, "interval": "wilson",
             "n": 10, "chance": 0.25}]
    out = runner.write_report(rows, tmp_path / "eval")
    (out / "plotly.min.js").write_bytes(full[:110_000])
    runner.write_report(rows, out, overwrite=True)
    assert (out / "plotly.min.js").read_bytes() == full
    for d in (views, out):
        assert not [p.name for p in d.iterdir() if p.name.endswith(".tmp")]
