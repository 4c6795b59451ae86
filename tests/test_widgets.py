"""bvvlab.widgets headless (issue 15): the picker lists every checkpoint under a runs folder
newest first with preset / step / bits-per-char, a click's generation shows the core's text,
chart and token strip, Stop ends it, side by side equals two solo runs, and a vanished
checkpoint is one line in the status while the panel keeps working."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest
import torch
import torch.nn.functional as F

from bvvlab import generation as G
from bvvlab import widgets as Wd
from bvvlab.checkpoints import save_checkpoint
from bvvlab.model import BVVForCausalLM, config_from_preset
from bvvlab.plots import PLOTLY_MIME
from bvvlab.tokenizer import bvv241_vocab, compact_vocab, hf_tokenizer

PROMPT = "Hello, мир"


@pytest.fixture(scope="module")
def tok():
    tokens, _ = compact_vocab(bvv241_vocab(65536, []), ["Hello, world! The quick brown fox.", "Привет, мир!"])
    return hf_tokenizer(tokens, [])


def tiny(tok, seed: int = 0, **overrides) -> BVVForCausalLM:
    torch.manual_seed(seed)
    cfg = config_from_preset("tiny", vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                             bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **overrides)
    glyphs = F.normalize(torch.randn(len(tok), cfg.hidden_size, generator=torch.Generator().manual_seed(seed)), dim=-1)
    return BVVForCausalLM.from_glyphs(cfg, glyphs).eval()


@pytest.fixture(scope="module")
def runs(tok, tmp_path_factory):
    """runs/a (a finished run with a step folder and metrics), runs/b (newer), runs/fused (a fused config)."""
    root = tmp_path_factory.mktemp("runs")
    model = tiny(tok)
    a = root / "a"
    save_checkpoint(model, tok, a / "checkpoints" / "step_0000010", {"train_config": {"preset": "tiny"}, "step": 10})
    save_checkpoint(model, tok, a / "tmpfinal", {})
    for f in (a / "tmpfinal").iterdir():
        f.rename(a / f.name)
    (a / "tmpfinal").rmdir()
    (a / "meta.json").write_text(json.dumps({"train_config": {"preset": "tiny"}, "final": {"step": 10, "val_bpc": 4.5}}))
    (a / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"kind": "eval", "step": 10, "val_bpc": 4.75, "val_full": False},
        {"kind": "eval", "step": 10, "val_bpc": 4.5, "val_full": True}]) + "\n")
    b = save_checkpoint(tiny(tok, seed=3), tok, root / "b", {"train_config": {"preset": "small"}, "step": 7})
    fused = root / "fused"
    fused.mkdir()
    (fused / "config.json").write_text(json.dumps({"model_type": "bvv_fused"}))
    (fused / "model.safetensors").write_bytes(b"")
    t = time.time()
    for age, p in ((300, a / "checkpoints" / "step_0000010"), (200, a), (100, b), (0, fused)):
        os.utime(p / "model.safetensors", (t - age, t - age))
    return root


def test_picker_lists_every_checkpoint_newest_first_with_its_numbers(runs):
    labels = [label for label, _ in Wd.checkpoint_options(runs)]
    assert labels == ["fused · fused · bits/char ?", "b · small · step 7 · bits/char ?",
                      "a · tiny · step 10 · 4.500 bits/char",
                      "a/checkpoints/step_0000010 · tiny · step 10 · 4.500 bits/char"]  # the full-split one
    assert Wd.checkpoint_options(runs / "nothing-here") == []


@pytest.fixture(scope="module")
def model(tok):
    return tiny(tok)


def test_generate_click_shows_the_cores_text_chart_and_strip(model, tok):
    s = G.GenerationSettings(temperature=0.9, top_k=20, max_new_tokens=10, seed=4)
    panel = Wd.GenerationPanel(runs=None, models={"tiny": (model, tok)}, prompt=PROMPT, settings=s, redraw_s=0)
    stream = panel.generate(wait=True)
    ref = G.generate_text(model, tok, PROMPT, s)
    assert stream.ids == ref.ids and stream.finish_reason == ref.finish_reason
    assert Wd.text_html(PROMPT, ref.text) == panel.text.value
    assert panel.redraws == len(ref.ids) + 1  # every step (redraw_s=0) and once at the end
    bars = panel.chart.outputs[0]["data"][PLOTLY_MIME]["data"][0]
    last = list(G.Stream(model, tok, PROMPT, s))[-1]
    assert bars["x"] == [p for *_, p in last.top] and bars["y"][0].endswith(f"({last.top[0][0]})")
    n = len(tok(PROMPT, add_special_tokens=False)["input_ids"]) + len(ref.ids)
    assert panel.strip.value.count('class="bvv-tok"') == n
    assert f'data-id="{ref.ids[-1]}" title="id {ref.ids[-1]} · ' in panel.strip.value
    assert panel.strip.value.count("data:image/png;base64,") == n
    assert "tokens/s" in panel.rate.value and "finished" in panel.controls.status.value
    assert not panel.controls.generate.disabled and panel.controls.stop.disabled


def test_glyph_bitmap_is_the_models_view():
    import base64
    import io

    import numpy as np
    from PIL import Image

    from bvvlab.embedding_views import model_view_images

    uri = Wd.glyph_png("<0xE2>")
    img = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))
    assert img.shape == (32, 32)
    assert np.array_equal(img == 0, model_view_images(["<0xE2>"])[0] > 0)


def test_stop_ends_a_running_generation(model, tok):
    s = G.GenerationSettings(temperature=1.0, max_new_tokens=120, seed=0)
    panel = Wd.GenerationPanel(runs=None, models={"tiny": (model, tok)}, prompt=PROMPT, settings=s)
    assert panel.generate() is None  # returns at once, the thread streams
    deadline = time.monotonic() + 30
    while not panel.worker.stream.ids and time.monotonic() < deadline:
        time.sleep(0.01)
    panel.controls.generate.click()  # a second click while busy: a message, not a second stream
    assert "still generating" in panel.controls.status.value
    panel.controls.stop.click()
    panel.worker.thread.join(30)
    assert panel.worker.stream.finish_reason == "stopped" and len(panel.worker.stream.ids) < 120
    assert "finished: stopped" in panel.controls.status.value


def test_vanished_checkpoint_is_one_line_and_the_panel_keeps_working(runs, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(runs / "b", root / "b")
    panel = Wd.GenerationPanel(runs=root, settings=G.GenerationSettings(max_new_tokens=3, temperature=0))
    shutil.rmtree(root / "b")
    assert panel.generate(wait=True) is None
    assert "does not exist (any more)" in panel.controls.status.value
    shutil.copytree(runs / "b", root / "b")
    assert len(panel.generate(wait=True).ids) == 3
    empty = Wd.GenerationPanel(runs=tmp_path / "none")
    empty.generate(wait=True)
    assert "no checkpoint to generate with" in empty.controls.status.value


def test_long_prompt_note_in_the_status(model, tok):
    panel = Wd.GenerationPanel(runs=None, models={"tiny": (model, tok)}, prompt="Hello, world! " * 20,
                               settings=G.GenerationSettings(max_new_tokens=2, temperature=0))
    panel.generate(wait=True)
    assert "kept its last 126" in panel.controls.status.value


def test_side_by_side_equals_two_solo_runs(model, tok):
    other = tiny(tok, seed=5, frozen_embedding=False)
    s = G.GenerationSettings(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=8, seed=2)
    panel = Wd.SideBySidePanel(runs=None, models={"frozen": (model, tok), "unfrozen": (other, tok)},
                               prompt=PROMPT, settings=s)
    assert [p.value for p in panel.pickers] == ["frozen", "unfrozen"]
    pair = panel.generate(wait=True)
    for i, m in enumerate((model, other)):
        solo = G.generate_text(m, tok, PROMPT, s)
        assert pair.streams[i].ids == solo.ids and panel.texts[i].value == Wd.text_html(PROMPT, solo.text)
