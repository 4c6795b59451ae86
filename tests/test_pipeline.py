"""`bvvlab demo` (the README's main job) runs end to end and never clobbers foreign data."""

import json

import pytest

from bvvlab import pipeline
from bvvlab.cli import main


def test_demo_refuses_a_folder_that_is_not_a_demo(tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("keep me")
    assert main(["demo", "--out", str(tmp_path), "--steps", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds something other than an earlier demo" in err
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt"]


@pytest.mark.slow
def test_demo_end_to_end_and_rerun(tmp_path):
    out = tmp_path / "demo"
    s = pipeline.demo(out, steps=2, seed=1)
    assert set(s["results"]) == {"frozen", "unfrozen"}
    for name in ("frozen", "unfrozen"):
        final = s["results"][name]
        assert final["step"] == 2 and final["val_bpc"] > 0
    # the frozen twin's buffer is the demo embedding's matrix, bit for bit
    meta = json.loads((out / "compare" / "frozen" / "meta.json").read_text())
    assert meta["matrix_hash"] == s["matrix_hash"]
    assert (out / "summary.json").exists() and (out / "embedding" / "glyph_matrix.safetensors").exists()
    pipeline.demo(out, steps=2, seed=1)  # a second demo replaces the first without complaint
