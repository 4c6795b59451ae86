"""ipywidgets views over `bvvlab.models.generation` (widgets are views: the logic lives in generation).

Everything a panel shows is computed by pure functions below (`checkpoint_options`,
`top_figure`, `token_strip_html`) or by the generation core, so tests and papermill run them
headless; the panels only wire them to widgets.

* `GenerationPanel`: prompt, model picker (one model per run under a runs folder,
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
from a thread lands in whatever cell is current). The next-token chart is HTML bars in an
`ipywidgets.HTML` whose value changes in place (`top_html`; JupyterLab's plotly renderer never
updates a drawn graph, and replacing it flickered), at most every `redraw_s` seconds plus once
at the end; `top_figure` is the same chart in plotly for a saved or headless view. Bad settings,
a vanished or half-written checkpoint: one line in the status, the stale output cleared (the
explorer's dimmed and named), the panel keeps working.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import plotly.graph_objects as go
import plotly.io as pio

from bvvlab.app.plots import PLOTLY_MIME
from bvvlab.core.errors import BVVError, check_text
from bvvlab.glyph.views import plotly_label, short_label, visible
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


def run_models(runs: str | os.PathLike) -> list[Path]:
    """One model per run under `runs`, newest first: a run folder's final model, or (a run still
    training, or stopped) its newest `checkpoints/step_N`; fused and other model folders as they
    are. The `step_N` folders of a finished run are resume points, not other models: listing them
    beside the run showed each run twice with the same step (issue 24)."""
    found = checkpoint_dirs(runs)
    kept, runs_seen = [], set()
    for p in found:  # newest first, so a run's first step folder met is its newest one
        run = p.parent.parent if checkpoint_step(p) is not None and p.parent.name == "checkpoints" else None
        if run is None:
            kept.append(p)
        elif run not in found and run not in runs_seen:
            runs_seen.add(run)
            kept.append(p)
    return kept


def checkpoint_options(runs: str | os.PathLike) -> list[tuple[str, str]]:
    """(label, path) per run under `runs` (`run_models`), newest first: a Dropdown's options."""
    return [(checkpoint_label(p, runs), str(p)) for p in run_models(runs)]


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


def p_axis_max(top: Sequence[tuple[int, str, float]]) -> float:
    """The probability axis's end: the largest bar plus a tenth, rounded up to a 1-2-5 step, at
    most 1. A fixed 0-1 axis left a weak model's bars (p ~ 0.01) invisible (issue 24)."""
    import math

    peak = max((float(p) for *_, p in top), default=0.0) * 1.1
    if peak <= 0:
        return 1.0
    step = 10.0 ** math.floor(math.log10(peak))
    nice = next(m * step for m in (1, 2, 5, 10) if m * step >= peak - 1e-12)
    return min(1.0, nice)


def top_spec(top: Sequence[tuple[int, str, float]], title: str = "next token") -> dict[str, Any]:
    """The next-token chart as plotly JSON (data + layout + config), built without plotly's
    validation: horizontal bars of the model's most likely next tokens, most likely on top, the
    axis scaled to the bars (`p_axis_max`), the title above the plot area and no mode bar over it."""
    labels = [f"{plotly_label(short_label(t, 12))} ({i})" for i, t, _ in top]
    bar = {"type": "bar", "x": [p for *_, p in top], "y": labels, "orientation": "h", "marker": {"color": "#1f77b4"},
           "hovertemplate": "%{y}: %{x:.3f}<extra></extra>"}
    layout = {"template": _template(), "height": 100 + 22 * max(len(top), 1), "width": 420,
              "title": {"text": title, "x": 0, "xanchor": "left", "y": 0.98, "yanchor": "top", "yref": "container"},
              "margin": {"l": 10, "r": 20, "t": 60, "b": 40},
              "xaxis": {"range": [0, p_axis_max(top)], "title": {"text": "probability"}},
              "yaxis": {"autorange": "reversed", "automargin": True}}
    return {"data": [bar], "layout": layout, "config": {"displayModeBar": False}}


def top_html(top: Sequence[tuple[int, str, float]], title: str = "next token") -> str:
    """The panel's next-token chart as HTML bars (`top_spec`'s content and axis): an HTML widget's
    value changes in place, where JupyterLab's plotly renderer never updates a drawn graph and a
    replaced one is torn down and redrawn (the chart flickered while text streamed, issue 24)."""
    end = p_axis_max(top)
    rows = "".join(
        f'<tr class="bvv-bar-row" title="{html.escape(visible(t), quote=True)} (id {i}): p = {p:.4f}">'
        f'<td style="text-align:right;padding-right:6px;white-space:nowrap">{html.escape(short_label(t, 12))} '
        f'<span style="color:#888">({i})</span></td>'
        f'<td style="width:220px"><div class="bvv-bar" data-p="{p:.6g}" style="background:#1f77b4;height:14px;'
        f'width:{100 * min(float(p) / end, 1.0):.2f}%"></div></td>'
        f'<td style="padding-left:6px;font-variant-numeric:tabular-nums">{p:.3f}</td></tr>' for i, t, p in top)
    return (f'<div class="bvv-next" data-axis-max="{end:g}" style="font-size:12px">'
            f'<div class="bvv-next-title" style="font-weight:bold;margin-bottom:4px">{html.escape(title)}</div>'
            f'<table style="border-collapse:collapse">{rows}</table>'
            f'<div style="color:#666;margin-left:4px">probability; the bars\' scale ends at {end:g}</div></div>')


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
            f'{html.escape(short_label(token))}</span>')


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


MAX_NEW_TOKENS = 1024  # the slider's end when the model's context is unknown


def fit_max_new(settings: G.GenerationSettings, model: Any, tokenizer: Any,
                prompt: str) -> tuple[G.GenerationSettings, str]:
    """(settings, note): max new tokens lowered to the model's context minus the prompt's tokens
    where it asks for more (a 128-token model was asked for 1024 and answered with an error);
    a prompt that alone fills the context is `generation.encode_prompt`'s to cut (it keeps its
    last tokens and says so). The note says what was lowered, else ""."""
    import dataclasses

    check_text(prompt, "prompt")  # a lone surrogate is one line here, before the tokenizer sees it
    context = G.context_length(model)
    if context is None:
        return settings, ""
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    room = context - n_prompt
    if room < 1 or settings.max_new_tokens <= room:
        return settings, ""
    return (dataclasses.replace(settings, max_new_tokens=room),
            f"max new tokens lowered from {settings.max_new_tokens} to {room}: the context of {context} tokens "
            f"minus the prompt's {n_prompt}")


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
        self.max_new_tokens = W.IntSlider(value=s.max_new_tokens, min=1, max=MAX_NEW_TOKENS,
                                          description="max new tokens", style=style)
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


class Models:
    """Checkpoints under a runs folder (or given (model, tokenizer) pairs), loaded once each."""

    def __init__(self, runs: str | os.PathLike | None, models: Mapping[str, tuple[Any, Any]] | None):
        self.runs = runs
        self.given = dict(models or {})
        self.loaded: dict[str, tuple[Any, Any]] = dict(self.given)

    def options(self) -> list[tuple[str, str]]:
        opts = [(name, name) for name in self.given]
        return opts + (checkpoint_options(self.runs) if self.runs is not None else [])

    def context(self, key: str | None) -> int | None:
        """The context length of `key`'s model (loaded, or read from its config.json), else None."""
        if key in self.loaded:
            return G.context_length(self.loaded[key][0])
        try:
            cfg = json.loads((Path(key) / "config.json").read_text(encoding="utf-8")) if key else {}
        except (OSError, json.JSONDecodeError):
            return None
        n = cfg.get("max_position_embeddings")
        return n if isinstance(n, int) and n > 0 else None

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



def first_line(e: BaseException) -> str:
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
        c.say(first_line(e), error=True)
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
            c.say(f"generation failed: {type(e).__name__}: {first_line(e) if str(e) else ''}", error=True)
        finally:
            c.generate.disabled, c.stop.disabled = False, True

    worker.start(run, wait)


def picker(options: list[tuple[str, str]], index: int = 0, description: str = "model"):
    """A Dropdown of checkpoints, on the `index`-th (the last one when there are fewer)."""
    import ipywidgets as W

    value = options[min(index, len(options) - 1)][1] if options else None
    return W.Dropdown(options=options, value=value, description=description, layout={"width": "98%"})


class _Panel:
    """What both generation panels share: models, controls, one worker, Generate / Stop wired."""

    widget: Any

    def __init__(self, runs: str | os.PathLike | None, models: Mapping[str, tuple[Any, Any]] | None, prompt: str,
                 settings: G.GenerationSettings | None, redraw_s: float):
        self.models = Models(runs, models)
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
        self.picker = picker(self.models.options())
        self.text = W.HTML(value=text_html(prompt, ""))
        self.chart = W.HTML(value="", layout={"width": "440px", "min_height": "200px"})
        self.chart.add_class("bvv-next-chart")
        self.strip = W.HTML(value="")
        self.rate = W.HTML(value="")
        self.rate.add_class("bvv-rate")
        self.figure: dict[str, Any] | None = None  # the chart's plotly JSON
        self.redraws = 0
        self.widget = W.VBox([self.picker, c.prompt, W.HBox([c.sliders(), self.chart]), c.status, self.rate,
                              self.text, self.strip])
        self.widget.add_class("bvv-panel")
        self.picker.observe(lambda _ch: self.follow_model(), names="value")
        self.follow_model()

    def follow_model(self) -> None:
        """The max-new-tokens slider ends at the picked model's context minus one (the prompt's
        token at least); `generate` lowers it further to the context minus the prompt."""
        c = self.controls
        context = self.models.context(self.picker.value)
        c.max_new_tokens.max = max(1, context - 1) if context else MAX_NEW_TOKENS

    def clear(self) -> None:
        """Clear what the last generation showed (after an error: no stale text under the message)."""
        self.text.value = text_html(self.controls.prompt.value, "")
        self.chart.value = self.strip.value = self.rate.value = ""
        self.figure = None

    def stop(self) -> None:
        if self.worker.stream is not None:
            self.worker.stream.stop()

    def _draw(self, step: G.Step) -> None:
        title = f"next token after step {step.index + 1}"
        self.figure = top_spec(step.top, title)
        self.chart.value = top_html(step.top, title)
        self.redraws += 1

    def generate(self, wait: bool = False) -> Any:
        """Start a generation with the current values (a click on Generate); returns the Stream
        when `wait`, else None at once. A bad setting or checkpoint is one line in the status."""
        c = self.controls

        def make() -> G.Stream:
            model, tok = self.models.get(self.picker.value)
            settings, note = fit_max_new(c.settings(), model, tok, c.prompt.value)
            if note:
                c.max_new_tokens.value = settings.max_new_tokens
                notes.append(note)
            return G.Stream(model, tok, c.prompt.value, settings)

        notes: list[str] = []
        stream = _prepare(c, self.worker, make)
        if stream is None:
            if not self.worker.busy:
                self.clear()
            return None
        self.worker.stream = stream
        c.say("; ".join(notes + stream.prompt.notes) or "generating ...")
        tok = stream.tokenizer
        prompt_ids = stream.prompt.ids
        prompt_text = tok.decode(prompt_ids, skip_special_tokens=True)
        prompt_tokens = tok.convert_ids_to_tokens(prompt_ids)

        def finished() -> str:
            said = notes + stream.prompt.notes
            return f"finished: {stream.finish_reason}, {len(stream.ids)} tokens" + (f" ({'; '.join(said)})" if said else "")

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
        self.pickers = [picker(opts, i, f"model {'AB'[i]}") for i in range(2)]
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
            if not self.worker.busy:  # no stale texts under the message
                for w in (*self.texts, *self.rates):
                    w.value = ""
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
