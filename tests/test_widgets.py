"""bvvlab.app.widgets headless (issue 15): the picker lists every checkpoint under a runs folder
newest first with preset / step / bits-per-char, a click's generation shows the core's text,
chart and token strip, Stop ends it, side by side equals two solo runs, and a vanished
checkpoint is one line in the status while the panel keeps working."""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import pytest
import torch
from _gen_fixtures import PROMPT, fused_checkpoint, model, tiny, tok  # noqa: F401  (fixtures)

from bvvlab.app import explorer as Ex
from bvvlab.app import widgets as Wd
from bvvlab.app.plots import PLOTLY_MIME
from bvvlab.models import generation as G
from bvvlab.models.checkpoints import save_checkpoint


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


def test_picker_lists_each_run_once_newest_first_with_its_numbers(runs, tok, tmp_path):
    """A finished run once (its final model; its step folder is a resume point: listed twice
    before issue 24), a run with only step folders once, as its newest step."""
    labels = [label for label, _ in Wd.checkpoint_options(runs)]
    assert labels == ["fused · fused · bits/char ?", "b · small · step 7 · bits/char ?",
                      "a · tiny · step 10 · 4.500 bits/char"]  # the full-split one
    assert Wd.checkpoint_options(runs / "nothing-here") == []
    root = tmp_path / "runs"
    for step in (5, 9):
        save_checkpoint(tiny(tok), tok, root / "c" / "checkpoints" / f"step_{step:07d}", {"step": step})
        os.utime(root / "c" / "checkpoints" / f"step_{step:07d}" / "model.safetensors", (step, step))
    assert [label for label, _ in Wd.checkpoint_options(root)] == ["c/checkpoints/step_0000009 · step 9 · bits/char ?"]


def test_generate_click_shows_the_cores_text_chart_and_strip(model, tok):
    s = G.GenerationSettings(temperature=0.9, top_k=20, max_new_tokens=10, seed=4)
    panel = Wd.GenerationPanel(runs=None, models={"tiny": (model, tok)}, prompt=PROMPT, settings=s, redraw_s=0)
    stream = panel.generate(wait=True)
    ref = G.generate_text(model, tok, PROMPT, s)
    assert stream.ids == ref.ids and stream.finish_reason == ref.finish_reason
    assert Wd.text_html(PROMPT, ref.text) == panel.text.value
    assert panel.redraws == len(ref.ids) + 1  # every step (redraw_s=0) and once at the end
    bars = panel.figure["data"][0]
    last = list(G.Stream(model, tok, PROMPT, s))[-1]
    assert bars["x"] == [p for *_, p in last.top] and bars["y"][0].endswith(f"({last.top[0][0]})")
    assert panel.chart.value == Wd.top_html(last.top, f"next token after step {len(ref.ids)}")
    assert ref.last_top == last.top  # what notebook 04's headless sample draws
    assert panel.chart.value.count('class="bvv-bar"') == len(last.top)
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

    from bvvlab.glyph.views import model_view_images

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


def test_panel_streams_from_a_fused_checkpoint_in_the_picker(tok, tmp_path):
    """A fused checkpoint under the runs folder: listed as fused, loaded by the picker, streamed
    with its own `generate`'s tokens."""
    fused_dir = fused_checkpoint(tok, tmp_path / "runs")
    s = G.GenerationSettings(temperature=0.9, max_new_tokens=6, seed=3)
    panel = Wd.GenerationPanel(runs=tmp_path / "runs", settings=s, prompt=PROMPT)
    labels = dict((v, k) for k, v in panel.picker.options)
    assert labels[str(fused_dir)].startswith("fused · fused")
    panel.picker.value = str(fused_dir)
    stream = panel.generate(wait=True)
    fused, ftok = panel.models.get(str(fused_dir))
    assert type(fused).__name__ == "FusedForCausalLM"
    ids = torch.tensor([ftok(PROMPT, add_special_tokens=False)["input_ids"]])
    torch.manual_seed(s.seed)
    ref = fused.generate(ids, attention_mask=torch.ones_like(ids), pad_token_id=ftok.pad_token_id,
                         **s.generate_kwargs())[0, ids.shape[1]:].tolist()
    assert stream.ids == ref and "finished" in panel.controls.status.value


def _items():
    """A few concepts, their English and Russian lemma."""
    from bvvlab.analysis import items as probe_items

    return [it for it in probe_items.concept_items() if it.pair in ("cat", "dog", "water", "bread", "red", "mother", "house")]


def _reference_states(model, tok, texts):
    """Each text alone, unpadded: hidden states of every layer at every position (L + 1, T, d)."""
    out = []
    for t in texts:
        ids = torch.tensor([tok(t, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            out.append(torch.stack(model(ids, output_hidden_states=True).hidden_states)[:, 0].numpy())
    return out


def test_layer_explorer_neighbours_and_lens_equal_a_direct_computation(model, tok):
    """Neighbours: cosine of centred last-token states of each item run alone; the lens at the
    last layer: the model's own next-token distribution at each position."""
    items = _items()
    assert {it.lang for it in items} == {"en", "ru"} and len(items) == 14
    index = Ex.concept_index(model, tok, items)
    view = Ex.explore_layers(index, "the cat", k=3, top=4)
    n_layers = model.config.num_hidden_layers
    assert view.layers == list(range(n_layers + 1)) and view.tokens == tok.convert_ids_to_tokens(
        tok("the cat", add_special_tokens=False)["input_ids"])
    item_states = np.stack([h[:, -1] for h in _reference_states(model, tok, [it.text for it in items])], 1)  # (L+1, N, d)
    (query,) = _reference_states(model, tok, ["the cat"])
    for l in view.layers:
        centre = item_states[l].mean(0)
        X = item_states[l] - centre
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        q = query[l, -1] - centre
        sims = X @ (q / np.linalg.norm(q))
        got = view.neighbours[l]
        assert [c for *_, c in got] == sorted([c for *_, c in got], reverse=True)
        np.testing.assert_allclose([c for *_, c in got], np.sort(sims)[::-1][:3], atol=1e-4)
        assert {(t, lang) for t, lang, _ in got} <= {(it.text, it.lang) for it in items}
    ids = torch.tensor([tok("the cat", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        probs = torch.softmax(model(ids).logits[0].float(), -1)  # (T, V)
    p, order = probs.topk(4, dim=-1)
    last = view.lens[-1]
    assert len(view.lens) == n_layers + 1 and len(last) == ids.shape[1]
    for j in range(ids.shape[1]):
        assert [t for t, _ in last[j]] == tok.convert_ids_to_tokens(order[j].tolist())
        np.testing.assert_allclose([q for _, q in last[j]], p[j].numpy(), atol=1e-5)
    fig = Ex.lens_figure(view)
    heat = fig.data[0]
    assert heat.type == "heatmap" and len(heat.y) == n_layers + 1 and len(heat.x) == ids.shape[1]
    np.testing.assert_allclose(np.array(heat.z)[-1], p[:, 0].numpy(), atol=1e-5)


def test_layer_explorer_widget_says_why_on_empty_input_and_keeps_working(model, tok):
    ex = Ex.LayerExplorer(runs=None, models={"tiny": (model, tok)}, word="cat", items=_items())
    assert ex.view is not None and ex.view.text == "cat"
    bundle = ex.chart.outputs[0]["data"][PLOTLY_MIME]
    assert bundle["data"][0]["type"] == "heatmap" and len(bundle["data"][0]["y"]) == model.config.num_hidden_layers + 1
    assert ex.neighbours.value.count('class="bvv-nb"') == 5 * (model.config.num_hidden_layers + 1)
    for empty in ("", "   "):
        ex.text.value = empty  # as a person clearing the box and pressing Enter
        assert "text is empty" in ex.status.value and "color:#c00" in ex.status.value
        assert ex.view.text == "cat"  # the last good view stays
    ex.text.value = "мир"
    assert ex.view.text == "мир" and "3 tokens" in ex.status.value and "color:#444" in ex.status.value
    assert ex.explore(None) is not None  # Explore again with the same text
    nothing = Ex.LayerExplorer(runs=None, models={})
    assert nothing.explore("cat") is None and "no checkpoint" in nothing.status.value


def test_next_token_chart_is_scaled_to_its_bars():
    """A weak model's bars (p ~ 0.01) were invisible on a fixed 0-1 axis."""
    weak = [(5, " ", 0.012), (7, "<s>", 0.008), (9, "a", 0.002)]
    assert Wd.p_axis_max(weak) == 0.02 and Wd.p_axis_max([(1, "a", 0.9)]) == 1.0
    assert Wd.p_axis_max([(1, "a", 0.3)]) == 0.5 and Wd.p_axis_max([]) == 1.0
    spec = Wd.top_spec(weak, "t")
    assert spec["layout"]["xaxis"]["range"] == [0, 0.02] and spec["config"] == {"displayModeBar": False}
    assert spec["layout"]["title"]["yref"] == "container" and spec["layout"]["margin"]["t"] >= 50
    assert spec["data"][0]["y"] == ["␣ (5)", "&lt;s&gt; (7)", "a (9)"]
    widths = [float(w) for w in __import__("re").findall(r"width:([0-9.]+)%", Wd.top_html(weak))]
    assert widths == [60.0, 40.0, 10.0]


def test_space_and_special_tokens_are_labelled_whole():
    from bvvlab.glyph.views import short_label

    assert short_label(" ") == "␣" and short_label("\n") == "↵" and short_label("<s>") == "<s>"
    assert short_label("<0xE2>") == "<0xE2>" and short_label("e\u0301") == "e[U+0301]"
    assert short_label(" hello world") == "␣hello…"
    strip = Wd.token_strip_html([4], [" "], 1)
    assert ">␣</span>" in strip and "[U+002<" not in strip  # was cut to "[U+002"


def test_max_new_tokens_follow_the_models_context(model, tok):
    """A 128-token model: the slider ends at 127, and a prompt of n tokens lowers a larger ask
    to 128 - n with a note (1024 used to end in an error with the old text left under it)."""
    context = model.config.max_position_embeddings
    panel = Wd.GenerationPanel(runs=None, models={"tiny": (model, tok)}, prompt=PROMPT,
                               settings=G.GenerationSettings(max_new_tokens=8, temperature=0))
    assert panel.controls.max_new_tokens.max == context - 1
    panel.controls.max_new_tokens.value = context - 1
    n = len(tok(PROMPT, add_special_tokens=False)["input_ids"])
    stream = panel.generate(wait=True)
    assert stream.settings.max_new_tokens == context - n == panel.controls.max_new_tokens.value
    assert f"lowered from {context - 1} to {context - n}" in panel.controls.status.value
    fitted, note = Wd.fit_max_new(G.GenerationSettings(max_new_tokens=4), model, tok, PROMPT)
    assert fitted.max_new_tokens == 4 and note == ""


def test_an_error_clears_the_generation_panels_old_output(runs, tmp_path):
    root = tmp_path / "runs"
    for name in ("b", "c"):
        shutil.copytree(runs / "b", root / name)
    panel = Wd.GenerationPanel(runs=root, prompt=PROMPT, settings=G.GenerationSettings(max_new_tokens=3, temperature=0),
                               redraw_s=0)
    panel.generate(wait=True)
    assert panel.chart.value and panel.strip.value and panel.rate.value
    other = next(v for _, v in panel.picker.options if v != panel.picker.value)
    shutil.rmtree(other)
    panel.picker.value = other  # a checkpoint that vanished: one line, nothing of the last run left under it
    assert panel.generate(wait=True) is None and "color:#c00" in panel.controls.status.value
    assert panel.chart.value == "" and panel.strip.value == "" and panel.rate.value == "" and panel.figure is None
    assert panel.text.value == Wd.text_html(PROMPT, "")


def test_layer_explorer_leaves_the_word_out_shows_cosines_and_marks_a_stale_view(model, tok):
    items = _items()
    ex = Ex.LayerExplorer(runs=None, models={"tiny": (model, tok)}, word="cat", items=items, k=3)
    assert all("cat" not in [t for t, *_ in nb] for nb in ex.view.neighbours)  # was always its own neighbour
    assert all(len(nb) == 3 for nb in ex.view.neighbours)
    cosines = [f"{c:.2f}</small>" for nb in ex.view.neighbours for *_, c in nb]
    assert all(c in ex.neighbours.value for c in cosines) and ex.neighbours.value.count("bvv-cos") == len(cosines)
    assert "bvv-stale" not in ex.chart._dom_classes and ex.style.value == ""
    ex.text.value = ""
    assert "bvv-stale" in ex.chart._dom_classes and "bvv-stale" in ex.neighbours._dom_classes
    assert "opacity" in ex.style.value and "dimmed below: the view of “cat”" in ex.status.value
    ex.text.value = "dog"
    assert "bvv-stale" not in ex.chart._dom_classes and ex.style.value == ""


def test_side_by_side_clears_both_texts_on_an_error(runs, tmp_path):
    root = tmp_path / "runs"
    for name in ("b", "c"):
        shutil.copytree(runs / "b", root / name)
    panel = Wd.SideBySidePanel(runs=root, prompt=PROMPT, settings=G.GenerationSettings(max_new_tokens=2, temperature=0))
    panel.generate(wait=True)
    assert all(t.value for t in panel.texts)
    shutil.rmtree(root / "c")
    panel.pickers[1].value = str(root / "c")
    panel.models.loaded.pop(str(root / "c"), None)
    assert panel.generate(wait=True) is None and "does not exist" in panel.controls.status.value
    assert [t.value for t in panel.texts + panel.rates] == ["", "", "", ""]
