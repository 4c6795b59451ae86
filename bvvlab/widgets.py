"""ipywidgets views over `bvvlab.generation` (floor 7; widgets are views: the logic lives in generation).

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
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import plotly.graph_objects as go
import plotly.io as pio

from bvvlab import generation as G
from bvvlab.checkpoints import checkpoint_step, is_model_dir, load_checkpoint, read_meta
from bvvlab.embedding_views import plotly_label, visible
from bvvlab.errors import BVVError
from bvvlab.plots import PLOTLY_MIME

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


def load_model(path: str | os.PathLike) -> tuple[Any, Any]:
    """(model, tokenizer) of any checkpoint directory: a bvv one through `load_checkpoint`
    (digests checked), a fused or other HF one through the Auto classes."""
    path = Path(path)
    if not path.is_dir():
        raise BVVError(f"checkpoint {path} does not exist (any more): pick another, or refresh the list")
    try:
        model_type = json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, json.JSONDecodeError):
        raise BVVError(f"{path}/config.json is missing or damaged (half-written?): pick another checkpoint") from None
    if model_type == "bvv":
        model, tok = load_checkpoint(path)
    else:
        import bvvlab.fused_model  # noqa: F401  (registers bvv_fused with the Auto classes)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            model = AutoModelForCausalLM.from_pretrained(path)
            tok = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as e:
            raise BVVError(f"{path} does not load ({str(e).splitlines()[0][:200]}): pick another checkpoint") from None
    return model.eval(), tok


# --------------------------------------------------------------------------------------------
# pure views


def top_figure(top: Sequence[tuple[int, str, float]], title: str = "next token") -> go.Figure:
    """Horizontal bars of the model's most likely next tokens, most likely on top."""
    labels = [f"{plotly_label(visible(t))} ({i})" for i, t, _ in top]
    fig = go.Figure(go.Bar(x=[p for *_, p in top], y=labels, orientation="h", marker={"color": "#1f77b4"},
                           hovertemplate="%{y}: %{x:.3f}<extra></extra>"))
    fig.update_layout(title=title, template="plotly_white", height=80 + 22 * max(len(top), 1), width=420,
                      margin={"l": 10, "r": 10, "t": 40, "b": 30}, xaxis={"range": [0, 1], "title": {"text": "p"}},
                      yaxis={"autorange": "reversed", "automargin": True})
    return fig


def figure_bundle(fig: go.Figure) -> dict[str, Any]:
    return {PLOTLY_MIME: json.loads(pio.to_json(fig, validate=False)), "text/plain": "<next-token chart>"}


@lru_cache(maxsize=8192)
def glyph_png(token: str) -> str:
    """A data URI of the token's 32x32 glyph bitmap as the model sees it (embedding_views)."""
    import numpy as np
    from PIL import Image

    from bvvlab.embedding_views import model_view_images

    img = model_view_images([token])[0]
    arr = (255 - (np.asarray(img, dtype=np.float32) > 0) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, mode="L").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def token_strip_html(ids: Sequence[int], tokens: Sequence[str], n_prompt: int) -> str:
    """One cell per token: its glyph bitmap, its visible text below; id and code points on hover.
    Prompt tokens grey, generated ones blue."""
    cells = []
    for k, (i, t) in enumerate(zip(ids, tokens)):
        color = "#888" if k < n_prompt else "#1f77b4"
        title = html.escape(f"id {i} · {visible(t)}", quote=True)
        cells.append(f'<span class="bvv-tok" data-id="{i}" title="{title}" style="display:inline-block;'
                     f'margin:1px;text-align:center;border-bottom:2px solid {color};font-size:9px">'
                     f'<img src="{glyph_png(t)}" width="32" height="32" style="image-rendering:pixelated"><br>'
                     f'{html.escape(visible(t)[:6])}</span>')
    return f'<div class="bvv-strip" style="line-height:1">{"".join(cells)}</div>'


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
        self.max_new_tokens = W.IntSlider(value=s.max_new_tokens, min=1, max=512, description="max new tokens",
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


class GenerationPanel:
    """The generation panel; `display(panel.widget)` (or just `panel` as a cell's last line).

    `runs`: a folder whose checkpoint directories fill the picker; `models`: {name: (model,
    tokenizer)} already loaded (tests, a model from the Hub). `generate(wait=True)` runs
    headless and returns the finished `generation.Stream`.
    """

    def __init__(self, runs: str | os.PathLike | None = "runs", models: Mapping[str, tuple[Any, Any]] | None = None,
                 prompt: str = "The ", settings: G.GenerationSettings | None = None, redraw_s: float = 0.1):
        import ipywidgets as W

        self.models = _Models(runs, models)
        self.controls = c = _Controls(prompt, settings or G.GenerationSettings())
        self.redraw_s = redraw_s
        opts = self.models.options()
        self.picker = W.Dropdown(options=opts, value=opts[0][1] if opts else None, description="model",
                                 layout={"width": "98%"})
        self.text = W.HTML(value=text_html(prompt, ""))
        self.chart = W.Output(layout={"width": "440px"})
        self.strip = W.HTML(value="")
        self.rate = W.HTML(value="")
        self.rate.add_class("bvv-rate")
        self.worker = _Worker()
        self.figure: go.Figure | None = None
        self.redraws = 0
        c.generate.on_click(lambda _b: self.generate())
        c.stop.on_click(lambda _b: self.stop())
        self.widget = W.VBox([self.picker, c.prompt, W.HBox([c.sliders(), self.chart]), c.status, self.rate,
                              self.text, self.strip])
        self.widget.add_class("bvv-panel")

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    def stop(self) -> None:
        if self.worker.stream is not None:
            self.worker.stream.stop()

    def _draw(self, step: G.Step) -> None:
        self.figure = top_figure(step.top, f"next token after step {step.index + 1}")
        self.chart.outputs = ({"output_type": "display_data", "data": figure_bundle(self.figure), "metadata": {}},)
        self.redraws += 1

    def generate(self, wait: bool = False) -> Any:
        """Start a generation with the current values (a click on Generate); returns the Stream
        when `wait`, else None at once. A bad setting or checkpoint is one line in the status."""
        c = self.controls
        if self.worker.busy:
            c.say("still generating: press Stop first", error=True)
            return None
        try:
            settings = c.settings()
            model, tok = self.models.get(self.picker.value)
            stream = G.Stream(model, tok, c.prompt.value, settings)
        except (BVVError, ValueError, OSError) as e:
            c.say(str(e).splitlines()[0] if str(e) else type(e).__name__, error=True)
            return None
        self.worker.stream = stream
        c.say("; ".join(stream.prompt.notes) or "generating ...")
        c.generate.disabled, c.stop.disabled = True, False
        prompt_ids = stream.prompt.ids
        prompt_text = tok.decode(prompt_ids, skip_special_tokens=True)
        prompt_tokens = tok.convert_ids_to_tokens(prompt_ids)

        def run() -> None:
            last = 0.0
            tokens: list[str] = []
            step = None
            try:
                for step in stream:
                    tokens.append(step.token)
                    now = time.perf_counter()
                    if now - last >= self.redraw_s:
                        last = now
                        self._show(stream, step, prompt_text, prompt_ids, prompt_tokens, tokens)
                if step is not None:
                    self._show(stream, step, prompt_text, prompt_ids, prompt_tokens, tokens)
                c.say(f"finished: {stream.finish_reason}, {len(stream.ids)} tokens"
                      + (f" ({'; '.join(stream.prompt.notes)})" if stream.prompt.notes else ""))
            except Exception as e:  # a view never dies with a traceback in a thread: say it, keep working
                c.say(f"generation failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", error=True)
            finally:
                c.generate.disabled, c.stop.disabled = False, True

        self.worker.start(run, wait)
        return stream if wait else None

    def _show(self, stream, step, prompt_text, prompt_ids, prompt_tokens, tokens) -> None:
        self.text.value = text_html(prompt_text, step.text)
        self._draw(step)
        self.strip.value = token_strip_html(list(prompt_ids) + stream.ids[:len(tokens)], prompt_tokens + tokens,
                                            len(prompt_ids))
        rate = stream.tokens_per_s
        first = stream.first_token_s
        self.rate.value = (f"{len(tokens)} tokens · " + (f"{rate:.1f} tokens/s" if rate else "tokens/s: -")
                           + (f" · first token {first * 1000:.0f} ms" if first is not None else ""))


class SideBySidePanel:
    """The same prompt, settings and seed through two models, streamed side by side."""

    def __init__(self, runs: str | os.PathLike | None = "runs", models: Mapping[str, tuple[Any, Any]] | None = None,
                 prompt: str = "The ", settings: G.GenerationSettings | None = None, redraw_s: float = 0.1):
        import ipywidgets as W

        self.models = _Models(runs, models)
        self.controls = c = _Controls(prompt, settings or G.GenerationSettings())
        self.redraw_s = redraw_s
        opts = self.models.options()
        pick = [opts[0][1] if opts else None, opts[1][1] if len(opts) > 1 else (opts[0][1] if opts else None)]
        self.pickers = [W.Dropdown(options=opts, value=pick[i], description=f"model {'AB'[i]}",
                                   layout={"width": "98%"}) for i in range(2)]
        self.texts = [W.HTML(value="") for _ in range(2)]
        self.rates = [W.HTML(value="") for _ in range(2)]
        self.worker = _Worker()
        self.pair: G.SideBySide | None = None
        c.generate.on_click(lambda _b: self.generate())
        c.stop.on_click(lambda _b: self.stop())
        cols = [W.VBox([self.pickers[i], self.rates[i], self.texts[i]], layout={"width": "50%"}) for i in range(2)]
        self.widget = W.VBox([c.prompt, c.sliders(), c.status, W.HBox(cols)])

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    def stop(self) -> None:
        if self.pair is not None:
            self.pair.stop()

    def generate(self, wait: bool = False) -> G.SideBySide | None:
        c = self.controls
        if self.worker.busy:
            c.say("still generating: press Stop first", error=True)
            return None
        try:
            settings = c.settings()
            pairs = [self.models.get(p.value) for p in self.pickers]
            self.pair = pair = G.SideBySide(pairs, c.prompt.value, settings)
        except (BVVError, ValueError, OSError) as e:
            c.say(str(e).splitlines()[0] if str(e) else type(e).__name__, error=True)
            return None
        c.say(f"generating with seed {settings.seed} in both ...")
        c.generate.disabled, c.stop.disabled = True, False

        def run() -> None:
            last = 0.0
            try:
                for _row in pair:
                    now = time.perf_counter()
                    if now - last >= self.redraw_s:
                        last = now
                        self._show(pair)
                self._show(pair)
                c.say("finished: " + ", ".join(f"{'AB'[i]} {s.finish_reason}" for i, s in enumerate(pair.streams)))
            except Exception as e:
                c.say(f"generation failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", error=True)
            finally:
                c.generate.disabled, c.stop.disabled = False, True

        self.worker.start(run, wait)
        return pair if wait else None

    def _show(self, pair: G.SideBySide) -> None:
        for i, s in enumerate(pair.streams):
            prompt_text = s.tokenizer.decode(s.prompt.ids, skip_special_tokens=True)
            self.texts[i].value = text_html(prompt_text, s.text)
            self.rates[i].value = f"{len(s.ids)} tokens · " + (f"{s.tokens_per_s:.1f} tokens/s" if s.tokens_per_s
                                                              else "tokens/s: -")
