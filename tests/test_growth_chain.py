"""A growth chain never mixes two runs' weights (issue 26 item 8), and a refused grow leaves no
empty --out behind (item 26)."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from bvvlab.cli import main
from bvvlab.models import checkpoints as C
from bvvlab.train import growth as G
from bvvlab.train.loop import make_config

FAST = dict(preset="tiny", train_chars=20_000, val_chars=4_000, seq_len=32, batch_size=4, log_every=1,
            eval_every=0, save_every=2, warmup=1, progress=False)


def _weights(run) -> dict[str, torch.Tensor]:
    return load_file(str(C.resolve(run) / "model.safetensors"))


def test_a_parent_trained_further_retrains_its_children_on_it(tmp_path, capsys):
    """Re-running grow with more steps per stage extends stage 1; stage 2 used to resume on the old
    stage-1 weights while growth.json described a chain on the new ones. Now stage 2 is moved aside
    and trained again from stage 1 as it is: its frozen block 0 equals stage 1's final block 0."""
    out = tmp_path / "g"
    G.grow(make_config(**FAST), "1,1", 2, out)
    old_stage2 = _weights(out / "stage_2")
    s = G.grow(make_config(**FAST), "1,1", 4, out)
    w1, w2 = _weights(out / "stage_1"), _weights(out / "stage_2")
    block0 = [k for k in w1 if k.startswith("model.blocks.0.")]
    assert block0 and all(torch.equal(w1[k], w2[k]) for k in block0)  # built on the stage 1 there is now
    assert not all(torch.equal(old_stage2[k], w2[k]) for k in block0)
    parent = C.resolve(out / "stage_1")
    assert parent.name == "step_0000004"
    meta2 = json.loads((out / "stage_2" / "meta.json").read_text())
    assert meta2["init"]["from"] == str(parent) and meta2["final"]["step"] == 4 and "resumes" not in meta2
    (moved,) = (out / "superseded").iterdir()  # the old stage 2, kept, not deleted
    assert moved.name.startswith("stage_2-") and C.resolve(moved).name == "step_0000002"
    on_disk = json.loads((out / "growth.json").read_text())
    assert on_disk == json.loads(json.dumps(s))
    assert [st["init"]["from"] if st["init"] else None for st in on_disk["stages"]] == [None, str(parent)]
    assert [x["run"] for x in on_disk["superseded"]] == ["stage_2"] and on_disk["superseded"][0]["moved_to"] == str(moved)
    assert f"{out / 'stage_2'} started from" in capsys.readouterr().err
    again = G.grow(make_config(**FAST), "1,1", 4, out)  # nothing changed: nothing moved, nothing trained
    assert again["superseded"] == [] and len(list((out / "superseded").iterdir())) == 1
    assert all(torch.equal(_weights(out / "stage_2")[k], w2[k]) for k in w2)
    fewer = G.grow(make_config(**FAST), "1,1", 2, out)  # fewer steps than the stages hold: kept, and said so
    assert fewer["steps"] == [4, 4] and [st["steps"] for st in fewer["stages"]] == [4, 4]
    assert f"{out / 'stage_1'} has 4 steps (asked 2); it is kept as it is" in capsys.readouterr().err


def test_a_refused_grow_leaves_no_empty_out_folder(tmp_path, capsys):
    args = [f"{k}={v}" for k, v in FAST.items()]
    for extra, words in ((["--from", str(tmp_path / "missing")], "does not exist"),
                         (["--from", str(tmp_path)], "holds no checkpoint")):
        out = tmp_path / "refused" / "g"
        assert main(["grow", "--stages", "1", "--steps-per-stage", "2", "--out", str(out), *extra, *args]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
        assert not out.exists() and not (tmp_path / "refused").exists()
