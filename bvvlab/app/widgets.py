"""ipywidgets views over `bvvlab.models.generation` (widgets are views: the logic lives in generation).

Everything a panel shows is computed by pure functions below (`checkpoint_options`,
`top_figure`, `token_strip_html`) or by the generation core, so tests and papermill run them
headless; the panels only wire them to widgets.

* `GenerationPanel`: prompt, model picker (every checkpoint directory under a runs folder,
  fused ones included, newest first, labelled with preset, step and validation bits/char),
  sliders, seed, Generate / Stop, the text as it streams, a bar chart of the model's top
  next tokens redrawn as it streams, a token strip (each token's 32x32 glyph bitmap as the model
  sees it, its id and text on hover) and tokens/s.
* `SideBySidePanel`: the same prompt, settings and seed through two models (each with its own
  generator seeded the same, `generation.SideBySide`).
* `LayerExplorer`: a word or a prompt; per layer its nearest concept items (English and
  Russian) and the logit lens's top next tokens as a layer x position heatmap, computed by
  `explore_layers` over `bvvlab.analysis.probe` (`hidden_states`, `lens_logits`).

Generation runs in a background thread that only assigns widget values (never prints: output
from a thread lands in whatever cell is current). The chart follows `plots.LiveCurves`: an
`ipywidgets.Output` whose outputs are replaced by a plotly bundle (JupyterLab's plotly renderer
ignores `update_display`), at most every `redraw_s` seconds plus once at the end. Bad settings,
a vanished or half-written checkpoint: one line in the status, the panel keeps working.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import plotly.graph_objects as go
import plotly.io as pio

from bvvlab.app.plots import PLOTLY_MIME
from bvvlab.core.errors import BVVError
from bvvlab.glyph.views import plotly_label, visible
from bvvlab.models import generation as G
from bvvlab.models.checkpoints import (
    checkpoint_step,
    is_model_dir,
    read_meta,
)

# --------------------------------------------------------------------------------------------
# the model picker


def checkpoint_dirs(runs: str | os.PathLike) -> list[Path]:
    """Every checkpoint directory under `runs` (run folders' final models, their `step_N`
    folders, fused models), newest first (by the time its weights were written)."""
    root = Path(runs)
    if not root.is_dir():
        return []
    found = {p.parent for p in root.rglob("config.json") if is_model_dir(p.parent)}

    def written(p: Path) -> float:
        w = p / "model.safetensors"
        return (w if w.exists() else p / "config.json").stat().st_mtime

    return sorted(found, key=lambda p: (-written(p), str(p)))


def _run_metrics(run: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line]
    except (OSError, json.JSONDecodeError):
        return []


def checkpoint_info(path: str | os.PathLike) -> dict[str, Any]:
    """{"preset", "step", "val_bpc", "kind"} of a checkpoint directory, from its meta.json and its
    run's metrics.jsonl (None where unknown; never raises for a damaged meta)."""
    path = Path(path)
    try:
        meta = read_meta(path)
    except BVVError:
        meta = {}
    try:
        cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        cfg = {}
    tc = meta.get("train_config") or meta.get("config") or {}
    final = meta.get("final") or {}
    step = meta.get("step", final.get("step", checkpoint_step(path)))
    bpc = final.get("val_bpc")
    if bpc is None:
        run = path.parent.parent if checkpoint_step(path) is not None else path
        evals = [r for r in _run_metrics(run) if r.get("kind") == "eval" and "val_bpc" in r
                 and (step is None or r.get("step") == step)]
        if evals:
            bpc = sorted(evals, key=lambda r: bool(r.get("val_full")))[-1]["val_bpc"]
    kind = "fused" if cfg.get("model_type") == "bvv_fused" or "fusion" in meta else cfg.get("model_type", "?")
    return {"preset": tc.get("preset") if isinstance(tc, dict) else None, "step": step, "val_bpc": bpc, "kind": kind}


def checkpoint_label(path: str | os.PathLike, runs: str | os.PathLike) -> str:
    """"02_train/checkpoints/step_0000030 · tiny · step 30 · 5.027 bits/char"."""
    path = Path(path)
    try:
        name = str(path.relative_to(runs))
    except ValueError:
        name = str(path)
    info = checkpoint_info(path)
    bits = [name]
    if info["kind"] == "fused":
        bits.append("fused")
    if info["preset"]:
        bits.append(str(info["preset"]))
    if info["step"] is not None:
        bits.append(f"step {info['step']}")
    bits.append(f"{info['val_bpc']:.3f} bits/char" if isinstance(info["val_bpc"], (int, float)) else "bits/char ?")
    return " · ".join(bits)


def checkpoint_options(runs: str | os.PathLike) -> list[tuple[str, str]]:
    """(label, path) per checkpoint under `runs`, newest first: a Dropdown's options."""
    return [(checkpoint_label(p, runs), str(p)) for p in checkpoint_dirs(runs)]


def load_model(path: str | os.PathLike, device: str = "cpu", trust_remote_code: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) of any checkpoint directory, through the one loader
    (`bvvlab.models.loader.load`: bvvlab's own classes, digests checked; any HF causal LM)."""
    from bvvlab.models.loader import load

    path = Path(path)
    if not path.is_dir():
        raise BVVError(f"checkpoint {path} does not exist (any more): pick another, or refresh the list")
    lm = load(path, device, trust_remote_code=trust_remote_code)
    return lm.model, lm.tokenizer


# --------------------------------------------------------------------------------------------
# pure views


@lru_cache(maxsize=4)
def _template(name: str = "plotly_white") -> dict[str, Any]:
    """A plotly template as plain JSON, built once: `update_layout(template=...)` deep-copies and
    validates the whole template (~0.2 s a call), which a chart redrawn while text streams cannot pay."""
    return pio.templates[name].to_plotly_json()


def top_spec(top: Sequence[tuple[int, str, float]], title: str = "next token") -> dict[str, Any]:
    """The next-token chart as plotly JSON (data + layout), built without plotly's validation:
    horizontal bars of the model's most likely next tokens, most likely on top."""
    labels = [f"{plotly_label(visible(t))} ({i})" for i, t, _ in top]
    bar = {"type": "bar", "x": [p for *_, p in top], "y": labels, "orientation": "h", "marker": {"color": "#1f77b4"},
           "hovertemplate": "%{y}: %{x:.3f}<extra></extra>"}
    layout = {"template": _template(), "title": {"text": title}, "height": 80 + 22 * max(len(top), 1), "width": 420,
              "margin": {"l": 10, "r": 10, "t": 40, "b": 30}, "xaxis": {"range": [0, 1], "title": {"text": "p"}},
              "yaxis": {"autorange": "reversed", "automargin": True}}
    return {"data": [bar], "layout": layout}


def top_figure(top: Sequence[tuple[int, str, float]], title: str = "next token") -> go.Figure:
    """`top_spec` as a plotly Figure (for saving or showing outside the panel)."""
    return go.Figure(top_spec(top, title))


def figure_bundle(fig: go.Figure | dict[str, Any]) -> dict[str, Any]:
    spec = fig if isinstance(fig, dict) else json.loads(pio.to_json(fig, validate=False))
    return {PLOTLY_MIME: spec, "text/plain": "<plotly figure>"}


@lru_cache(maxsize=8192)
def glyph_png(token: str) -> str:
    """A data URI of the token's 32x32 glyph bitmap as the model sees it (embedding_views)."""
    import numpy as np
    from PIL import Image

    from bvvlab.glyph.views import model_view_images

    img = model_view_images([token])[0]
    arr = (255 - (np.asarray(img, dtype=np.float32) > 0) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, mode="L").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


@lru_cache(maxsize=16384)
def _token_cell(token_id: int, token: str, prompt: bool) -> str:
    """One token's cell of the strip (cached: the strip is redrawn while text streams)."""
    color = "#888" if prompt else "#1f77b4"
    title = html.escape(f"id {token_id} · {visible(token)}", quote=True)
    return (f'<span class="bvv-tok" data-id="{token_id}" title="{title}" style="display:inline-block;'
            f'margin:1px;text-align:center;border-bottom:2px solid {color};font-size:9px">'
            f'<img src="{glyph_png(token)}" width="32" height="32" style="image-rendering:pixelated"><br>'
            f'{html.escape(visible(token)[:6])}</span>')


def token_strip_html(ids: Sequence[int], tokens: Sequence[str], n_prompt: int) -> str:
    """One cell per token: its glyph bitmap, its visible text below; id and code points on hover.
    Prompt tokens grey, generated ones blue."""
    cells = "".join(_token_cell(int(i), t, k < n_prompt) for k, (i, t) in enumerate(zip(ids, tokens)))
    return f'<div class="bvv-strip" style="line-height:1">{cells}</div>'


def text_html(prompt: str, generated: str) -> str:
    return (f'<pre class="bvv-gen-text" style="white-space:pre-wrap">{html.escape(prompt)}'
            f'<b style="color:#1f77b4">{html.escape(generated)}</b></pre>')


# --------------------------------------------------------------------------------------------
# panels


class _Controls:
    """Prompt, sliders, seed and buttons shared by both panels."""

    def __init__(self, prompt: str, settings: G.GenerationSettings):
        import ipywidgets as W

        s = settings
        self.prompt = W.Textarea(value=prompt, description="prompt", layout={"width": "98%", "height": "60px"})
        self.prompt.add_class("bvv-prompt")
        style = {"description_width": "150px"}
        self.temperature = W.FloatSlider(value=s.temperature, min=0, max=2, step=0.05, description="temperature",
                                         style=style)
        self.top_k = W.IntSlider(value=s.top_k, min=0, max=200, description="top-k (0 = off)", style=style)
        self.top_p = W.FloatSlider(value=s.top_p, min=0.05, max=1, step=0.05, description="top-p", style=style)
        self.max_new_tokens = W.IntSlider(value=s.max_new_tokens, min=1, max=1024, description="max new tokens",
                                          style=style)
        self.max_new_tokens.add_class("bvv-max-new")
        self.repetition_penalty = W.FloatSlider(value=s.repetition_penalty, min=0.5, max=2, step=0.05,
                                                description="repetition penalty", style=style)
        self.seed = W.IntText(value=s.seed, description="seed", style=style)
        self.generate = W.Button(description="Generate", button_style="primary")
        self.generate.add_class("bvv-generate")
        self.stop = W.Button(description="Stop", button_style="warning", disabled=True)
        self.stop.add_class("bvv-stop")
        self.status = W.HTML(value="")
        self.status.add_class("bvv-status")
        self._stop_strings = tuple(s.stop)

    def settings(self) -> G.GenerationSettings:
        return G.GenerationSettings(temperature=self.temperature.value, top_k=self.top_k.value, top_p=self.top_p.value,
                                    max_new_tokens=self.max_new_tokens.value,
                                    repetition_penalty=self.repetition_penalty.value, seed=self.seed.value,
                                    stop=self._stop_strings)

    def sliders(self):
        import ipywidgets as W

        return W.VBox([self.temperature, self.top_k, self.top_p, self.max_new_tokens, self.repetition_penalty,
                       self.seed, W.HBox([self.generate, self.stop])])

    def say(self, message: str, error: bool = False) -> None:
        color = "#c00" if error else "#444"
        self.status.value = f'<span style="color:{color}">{html.escape(message)}</span>'


class _Models:
    """Checkpoints under a runs folder (or given (model, tokenizer) pairs), loaded once each."""

    def __init__(self, runs: str | os.PathLike | None, models: Mapping[str, tuple[Any, Any]] | None):
        self.runs = runs
        self.given = dict(models or {})
        self.loaded: dict[str, tuple[Any, Any]] = dict(self.given)

    def options(self) -> list[tuple[str, str]]:
        opts = [(name, name) for name in self.given]
        return opts + (checkpoint_options(self.runs) if self.runs is not None else [])

    def get(self, key: str | None) -> tuple[Any, Any]:
        if not key:
            raise BVVError(f"no checkpoint to generate with under {self.runs}: train one (notebooks/02_train.ipynb)")
        if key not in self.loaded:
            self.loaded[key] = load_model(key)
        return self.loaded[key]


class _Worker:
    """One background generation at a time; `busy` while it runs."""

    def __init__(self):
        self.thread: threading.Thread | None = None
        self.stream: Any = None

    @property
    def busy(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def start(self, target: Callable[[], None], wait: bool) -> None:
        self.thread = threading.Thread(target=target, daemon=True, name="bvvlab-generate")
        self.thread.start()
        if wait:
            self.thread.join()



def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _prepare(c: _Controls, worker: _Worker, make: Callable[[], Any]) -> Any:
    """`make()` (settings, model, stream) unless a generation is running; a bad setting or
    checkpoint is one line in the status and None."""
    if worker.busy:
        c.say("still generating: press Stop first", error=True)
        return None
    try:
        return make()
    except (BVVError, ValueError, OSError) as e:
        c.say(_first_line(e), error=True)
        return None


def _stream_in_worker(c: _Controls, worker: _Worker, steps: Any, show: Callable[[Any], None],
                      finished: Callable[[], str], redraw_s: float, wait: bool) -> None:
    """Iterate `steps` in the worker thread: `show(step)` at most every `redraw_s` seconds and
    once at the end, then `finished()` in the status; Generate is disabled and Stop enabled
    while it runs. The thread only assigns widget values, and never dies with a traceback."""
    c.generate.disabled, c.stop.disabled = True, False

    def run() -> None:
        last, step = 0.0, None
        try:
            for step in steps:
                now = time.perf_counter()
                if now - last >= redraw_s:
                    last = now
                    show(step)
            if step is not None:
                show(step)
            c.say(finished())
        except Exception as e:  # a view never dies with a traceback in a thread: say it, keep working
            c.say(f"generation failed: {type(e).__name__}: {_first_line(e) if str(e) else ''}", error=True)
        finally:
            c.generate.disabled, c.stop.disabled = False, True

    worker.start(run, wait)


def _picker(options: list[tuple[str, str]], index: int = 0, description: str = "model"):
    """A Dropdown of checkpoints, on the `index`-th (the last one when there are fewer)."""
    import ipywidgets as W

    value = options[min(index, len(options) - 1)][1] if options else None
    return W.Dropdown(options=options, value=value, description=description, layout={"width": "98%"})


class _Panel:
    """What both generation panels share: models, controls, one worker, Generate / Stop wired."""

    widget: Any

    def __init__(self, runs: str | os.PathLike | None, models: Mapping[str, tuple[Any, Any]] | None, prompt: str,
                 settings: G.GenerationSettings | None, redraw_s: float):
        self.models = _Models(runs, models)
        self.controls = _Controls(prompt, settings or G.GenerationSettings())
        self.redraw_s = redraw_s
        self.worker = _Worker()
        self.controls.generate.on_click(lambda _b: self.generate())
        self.controls.stop.on_click(lambda _b: self.stop())

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    def generate(self, wait: bool = False) -> Any:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class GenerationPanel(_Panel):
    """The generation panel; `display(panel.widget)` (or just `panel` as a cell's last line).

    `runs`: a folder whose checkpoint directories fill the picker; `models`: {name: (model,
    tokenizer)} already loaded (tests, a model from the Hub). `generate(wait=True)` runs
    headless and returns the finished `generation.Stream`.
    """

    def __init__(self, runs: str | os.PathLike | None = "runs", models: Mapping[str, tuple[Any, Any]] | None = None,
                 prompt: str = "The ", settings: G.GenerationSettings | None = None, redraw_s: float = 0.1):
        import ipywidgets as W

        super().__init__(runs, models, prompt, settings, redraw_s)
        c = self.controls
        self.picker = _picker(self.models.options())
        self.text = W.HTML(value=text_html(prompt, ""))
        self.chart = W.Output(layout={"width": "440px"})
        self.strip = W.HTML(value="")
        self.rate = W.HTML(value="")
        self.rate.add_class("bvv-rate")
        self.figure: dict[str, Any] | None = None  # the chart's plotly JSON
        self.redraws = 0
        self.widget = W.VBox([self.picker, c.prompt, W.HBox([c.sliders(), self.chart]), c.status, self.rate,
                              self.text, self.strip])
        self.widget.add_class("bvv-panel")

    def stop(self) -> None:
        if self.worker.stream is not None:
            self.worker.stream.stop()

    def _draw(self, step: G.Step) -> None:
        self.figure = top_spec(step.top, f"next token after step {step.index + 1}")
        self.chart.outputs = ({"output_type": "display_data", "data": figure_bundle(self.figure), "metadata": {}},)
        self.redraws += 1

    def generate(self, wait: bool = False) -> Any:
        """Start a generation with the current values (a click on Generate); returns the Stream
        when `wait`, else None at once. A bad setting or checkpoint is one line in the status."""
        c = self.controls

        def make() -> G.Stream:
            settings = c.settings()
            model, tok = self.models.get(self.picker.value)
            return G.Stream(model, tok, c.prompt.value, settings)

        stream = _prepare(c, self.worker, make)
        if stream is None:
            return None
        self.worker.stream = stream
        c.say("; ".join(stream.prompt.notes) or "generating ...")
        tok = stream.tokenizer
        prompt_ids = stream.prompt.ids
        prompt_text = tok.decode(prompt_ids, skip_special_tokens=True)
        prompt_tokens = tok.convert_ids_to_tokens(prompt_ids)

        def finished() -> str:
            return (f"finished: {stream.finish_reason}, {len(stream.ids)} tokens"
                    + (f" ({'; '.join(stream.prompt.notes)})" if stream.prompt.notes else ""))

        _stream_in_worker(c, self.worker, stream,
                          lambda step: self._show(stream, step, prompt_text, prompt_ids, prompt_tokens),
                          finished, self.redraw_s, wait)
        return stream if wait else None

    def _show(self, stream, step, prompt_text, prompt_ids, prompt_tokens) -> None:
        ids = stream.ids[:step.index + 1]  # the stream may already be a step further
        tokens = stream.tokenizer.convert_ids_to_tokens(ids)
        self.text.value = text_html(prompt_text, step.text)
        self._draw(step)
        self.strip.value = token_strip_html(list(prompt_ids) + ids, prompt_tokens + tokens, len(prompt_ids))
        rate = stream.tokens_per_s
        first = stream.first_token_s
        self.rate.value = (f"{len(tokens)} tokens · " + (f"{rate:.1f} tokens/s" if rate else "tokens/s: -")
                           + (f" · first token {first * 1000:.0f} ms" if first is not None else ""))


class SideBySidePanel(_Panel):
    """The same prompt, settings and seed through two models, streamed side by side."""

    def __init__(self, runs: str | os.PathLike | None = "runs", models: Mapping[str, tuple[Any, Any]] | None = None,
                 prompt: str = "The ", settings: G.GenerationSettings | None = None, redraw_s: float = 0.1):
        import ipywidgets as W

        super().__init__(runs, models, prompt, settings, redraw_s)
        c = self.controls
        opts = self.models.options()
        self.pickers = [_picker(opts, i, f"model {'AB'[i]}") for i in range(2)]
        self.texts = [W.HTML(value="") for _ in range(2)]
        self.rates = [W.HTML(value="") for _ in range(2)]
        self.pair: G.SideBySide | None = None
        cols = [W.VBox([self.pickers[i], self.rates[i], self.texts[i]], layout={"width": "50%"}) for i in range(2)]
        self.widget = W.VBox([c.prompt, c.sliders(), c.status, W.HBox(cols)])

    def stop(self) -> None:
        if self.pair is not None:
            self.pair.stop()

    def generate(self, wait: bool = False) -> G.SideBySide | None:
        c = self.controls
        settings: list[G.GenerationSettings] = []

        def make() -> G.SideBySide:
            settings.append(c.settings())
            pairs = [self.models.get(p.value) for p in self.pickers]
            return G.SideBySide(pairs, c.prompt.value, settings[0])

        pair = _prepare(c, self.worker, make)
        if pair is None:
            return None
        self.pair = pair
        c.say(f"generating with seed {settings[0].seed} in both ...")
        _stream_in_worker(c, self.worker, pair, lambda _row: self._show(pair),
                          lambda: "finished: " + ", ".join(f"{'AB'[i]} {s.finish_reason}"
                                                           for i, s in enumerate(pair.streams)),
                          self.redraw_s, wait)
        return pair if wait else None

    def _show(self, pair: G.SideBySide) -> None:
        for i, s in enumerate(pair.streams):
            prompt_text = s.tokenizer.decode(s.prompt.ids, skip_special_tokens=True)
            self.texts[i].value = text_html(prompt_text, s.text)
            self.rates[i].value = f"{len(s.ids)} tokens · " + (f"{s.tokens_per_s:.1f} tokens/s" if s.tokens_per_s
                                                              else "tokens/s: -")


# --------------------------------------------------------------------------------------------
# the layer explorer: a pure computation over bvvlab.analysis.probe, a figure, and a view


@dataclass
class ConceptIndex:
    """The concept items' last-token hidden states of one model, per layer, centred (the mean
    of all items removed per layer: otherwise one shared direction makes every item every other
    item's neighbour) and L2-normalised; built once per model (`concept_index`)."""

    lm: Any  # probe.Loaded
    items: list  # probe.Item, English and Russian lemma of each concept
    layers: list[int]
    mean: Any  # (n_layers_kept, d) float32: the centre subtracted per layer
    unit: Any  # (n_layers_kept, n_items, d) float32, unit rows


@dataclass
class LayerView:
    """What the explorer shows for one text: per layer its nearest concept items, and the logit
    lens's most likely next tokens at every position (layer x position)."""

    text: str
    tokens: list[str]  # the text's tokens (the heatmap's columns)
    layers: list[int]  # hidden-state indices: 0 = the embedding output, n_layers = after the final norm
    neighbours: list[list[tuple[str, str, float]]]  # per layer: (item text, lang, cosine), best first
    lens: list[list[list[tuple[str, float]]]] | None  # [layer][position] -> (token, probability), best first
    lens_reason: str = ""  # why there is no lens (no head or final norm found), else ""
    notes: list[str] = field(default_factory=list)


def as_loaded(model: Any, tokenizer: Any, name: str = "model") -> Any:
    """A (model, tokenizer) pair already in memory as `probe.Loaded` (what probe's functions take)."""
    from bvvlab.analysis import activations

    n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if not isinstance(n_layers, int):
        raise BVVError(f"{name}: the model's config has no num_hidden_layers: it cannot be explored layer by layer")
    norm, head, reason = activations.lens_modules(model)  # probe's own rule for the lens modules
    return activations.Loaded(model.eval(), tokenizer, name, "", n_layers, norm, head, reason)


def concept_index(model: Any, tokenizer: Any, items: Sequence[Any] | None = None, name: str = "model") -> ConceptIndex:
    """Hidden states of the concept items (default: every concept's English and Russian lemma,
    `analysis.items.concept_items`) at their last token, through
    `analysis.activations.hidden_states`."""
    import numpy as np

    from bvvlab.analysis import activations
    from bvvlab.analysis import items as probe_items

    lm = as_loaded(model, tokenizer, name)
    items = list(items) if items is not None else probe_items.concept_items()
    states = activations.hidden_states(lm, items, pooling="last")
    X = np.asarray(states.pooled, dtype=np.float32)
    mean = X.mean(axis=1)
    unit = X - mean[:, None]
    unit /= np.maximum(np.linalg.norm(unit, axis=-1, keepdims=True), 1e-12)
    return ConceptIndex(lm, items, states.layers, mean, unit)


MAX_EXPLORE_TOKENS = 48  # heatmap columns at most (the first tokens of a longer prompt)


def explore_layers(index: ConceptIndex, text: str, k: int = 5, top: int = 5) -> LayerView:
    """Per layer: the `k` concept items nearest to `text` (cosine of the last-token states, both
    centred by the items' mean), and the logit lens (`analysis.activations.lens_logits`: each layer's state
    through the final norm and the head; exact at the last layer) top-`top` next tokens at every
    position. An empty text is a one-line BVVError."""
    import numpy as np
    import torch

    from bvvlab.analysis import activations

    if not isinstance(text, str) or not text.strip():
        raise BVVError("type a word or a prompt to explore (the text is empty)")
    lm = index.lm
    notes = []
    n_tok = len(lm.tokenizer(text, add_special_tokens=False)["input_ids"])
    if n_tok > MAX_EXPLORE_TOKENS:
        notes.append(f"the text has {n_tok} tokens; showing its first {MAX_EXPLORE_TOKENS}")
    states = activations.hidden_states(lm, [text], pooling="tokens", layers=index.layers, max_tokens=MAX_EXPLORE_TOKENS)
    H = np.asarray(states.pooled, dtype=np.float32)  # (layers, T, d)
    ids = states.token_ids[0]
    q = H[:, -1] - index.mean  # (layers, d): the last token, centred as the items are
    q /= np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
    sims = np.einsum("lnd,ld->ln", index.unit, q)
    k = max(1, min(int(k), len(index.items)))
    neighbours = []
    for row in sims:
        best = np.argsort(-row, kind="stable")[:k]
        neighbours.append([(index.items[i].text, index.items[i].lang, float(row[i])) for i in best])
    lens = None
    if lm.head is not None and lm.norm is not None:
        lens = []
        ref = next(lm.head.parameters())
        with torch.no_grad():
            for l, h in zip(index.layers, H):
                logits = activations.lens_logits(lm.norm, lm.head, torch.from_numpy(h).to(ref.device, ref.dtype), l, lm.n_layers)
                p, order = torch.softmax(logits.float(), -1).topk(min(int(top), logits.shape[-1]), dim=-1)
                lens.append([list(zip(lm.tokenizer.convert_ids_to_tokens(o), pr))
                             for o, pr in zip(order.tolist(), p.tolist())])
    return LayerView(text, lm.tokenizer.convert_ids_to_tokens(ids), list(index.layers), neighbours, lens,
                     "" if lens is not None else lm.lens_reason, notes)


def lens_figure(view: LayerView) -> go.Figure:
    """The logit lens as a heatmap: a row per layer (0 = embedding output, at the bottom), a
    column per position (labelled with the token there); each cell shows the most likely next
    token and is coloured by its probability; hover lists the top tokens."""
    cols = [f"{j}: {plotly_label(visible(t))}" for j, t in enumerate(view.tokens)]
    rows = [f"layer {l}" for l in view.layers]
    lens = view.lens or []
    z = [[cell[0][1] for cell in row] for row in lens]
    shown = [[plotly_label(visible(cell[0][0])[:7]) for cell in row] for row in lens]  # cut before escaping
    hover = [["<br>".join(f"{plotly_label(visible(t))}: {p:.3f}" for t, p in cell) for cell in row]
             for row in lens]
    fig = go.Figure(go.Heatmap(z=z, x=cols, y=rows, text=shown, texttemplate="%{text}", customdata=hover,
                               hovertemplate="%{y} · position %{x}<br>%{customdata}<extra></extra>",
                               colorscale="Blues", zmin=0, zmax=1, colorbar={"title": {"text": "p"}}))
    fig.update_layout(title=f"logit lens · {plotly_label(view.text[:30])}",
                      template="plotly_white", height=140 + 36 * len(rows), width=max(480, 120 + 64 * len(cols)),
                      margin={"l": 10, "r": 10, "t": 50, "b": 40},
                      xaxis={"title": {"text": "position (the token there); cell: most likely next token"}},
                      yaxis={"automargin": True})
    return fig


def neighbours_html(view: LayerView) -> str:
    """A table: a row per layer, its nearest concept items (language and cosine on hover)."""
    rows = []
    for l, nb in zip(view.layers, view.neighbours):
        cells = "".join(f'<span class="bvv-nb" title="{lang} · cos {c:.3f}" style="margin-right:8px;color:'
                        f'{"#1f77b4" if lang == "en" else "#d62728"}">{html.escape(t)}</span>' for t, lang, c in nb)
        rows.append(f"<tr><td style='padding-right:8px'>layer {l}</td><td>{cells}</td></tr>")
    return ('<table class="bvv-neighbours" style="font-size:12px">'
            f'<tr><th>layer</th><th>nearest concept items (<span style="color:#1f77b4">en</span> / '
            f'<span style="color:#d62728">ru</span>)</th></tr>{"".join(rows)}</table>')


class LayerExplorer:
    """Type a word or a prompt (Enter or Explore): per layer its nearest concept items and the
    logit-lens heatmap. The computation is `explore_layers` (synchronous: tiny and small models
    take well under a second; the concept states are computed once per model, on first use)."""

    def __init__(self, runs: str | os.PathLike | None = "runs", models: Mapping[str, tuple[Any, Any]] | None = None,
                 word: str = "", k: int = 5, top: int = 5, items: Sequence[Any] | None = None):
        import ipywidgets as W

        self.models = _Models(runs, models)
        self.k, self.top, self.items = k, top, items
        self.indexes: dict[str, ConceptIndex] = {}
        self.picker = _picker(self.models.options())
        self.text = W.Text(value=word, description="word / prompt", continuous_update=False,
                           style={"description_width": "100px"}, layout={"width": "60%"})
        self.text.add_class("bvv-explore-text")
        self.button = W.Button(description="Explore", button_style="primary")
        self.button.add_class("bvv-explore")
        self.status = W.HTML(value="")
        self.status.add_class("bvv-explore-status")
        self.neighbours = W.HTML(value="")
        self.chart = W.Output()
        self.view: LayerView | None = None
        self.figure: go.Figure | None = None
        self.button.on_click(lambda _b: self.explore())
        self.text.observe(lambda _ch: self.explore(), names="value")  # Enter (or leaving the box)
        self.widget = W.VBox([self.picker, W.HBox([self.text, self.button]), self.status, self.chart,
                              self.neighbours])
        self.widget.add_class("bvv-explorer")
        if word:
            self.explore()

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    def say(self, message: str, error: bool = False) -> None:
        self.status.value = f'<span style="color:{"#c00" if error else "#444"}">{html.escape(message)}</span>'

    def explore(self, text: str | None = None) -> LayerView | None:
        """Explore `text` (default: the box's value); None and one line in the status on bad input."""
        text = self.text.value if text is None else text
        try:
            key = self.picker.value
            if key not in self.indexes:
                model, tok = self.models.get(key)
                self.say("computing the concept items' hidden states (once per model) ...")
                self.indexes[key] = concept_index(model, tok, self.items, name=str(key))
            view = explore_layers(self.indexes[key], text, self.k, self.top)
        except (BVVError, ValueError, OSError) as e:
            self.say(_first_line(e), error=True)
            return None
        self.view = view
        self.neighbours.value = neighbours_html(view)
        if view.lens is not None:
            self.figure = lens_figure(view)
            self.chart.outputs = ({"output_type": "display_data", "data": figure_bundle(self.figure), "metadata": {}},)
        else:
            self.chart.outputs = ()
        self.say("; ".join([f"{len(view.tokens)} tokens, {len(view.layers)} hidden states"] + view.notes
                           + ([f"no logit lens: {view.lens_reason}"] if view.lens is None else [])))
        return view
