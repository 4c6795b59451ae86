"""Streaming generation speed (issue 15, "Performance"): `generation.Stream` against
`model.generate` with the same settings, the widget path, and the time to the first token.

The model is the `small` preset's blocks (4 layers, d 256, 8 heads, context 256), untrained
(speed does not depend on the weights), over the compact vocabulary of the embedded LibreOffice
en-ru text (what `bvvlab train --preset small` builds: vocab_size follows the tokenizer); no
end-of-text token, so every run makes all `--new` tokens. Settings: temperature 0.8, top-k 50,
top-p 0.95, repetition penalty 1.1, seed 0 (the streamed ids are checked equal to generate's).

  (a) core:   new tokens/s of `Stream(...).run()` vs `model.generate(...)` (its KV cache, its
              sampling), wall clock of the whole call (prefill included) for both. Target: the
              stream at most 10% slower (ratio >= 0.90).
  (b) widget: `GenerationPanel.generate(wait=True)`: the core in the panel's worker thread plus
              its widget updates (text, next-token chart, token strip with glyph bitmaps, rate)
              every `redraw_s` = 0.1 s and at the end, no browser (no front end attached: the
              cost measured is building the values). Target: at most 25% slower (>= 0.75).
  (c) first:  seconds from `Stream(...)` (the prompt's encoding included) to the first streamed
              token, for a 100-character prompt; and from the panel's Generate to its first text
              update. Target 0.2 s.

Timed calls are interleaved (generate, stream, panel, first-token probes, in rounds) and the
median is taken; the ratios are medians over rounds of the per-round ratio, so a busy machine
slows every contender alike. `--threads` torch threads (default 1: the shared 2-core machine).

    .venv/bin/python bench/bench_generation.py           # writes bench/results/generation.json
    .venv/bin/python bench/bench_generation.py --rounds 9 --new 256
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from results_file import write_results  # bench/, beside this script

RESULTS = Path(__file__).resolve().parent / "results" / "generation.json"
PROMPT_100 = ("Open the Format menu and choose Paragraph. Откройте меню «Формат» и выберите «Абзац». "
              "Then click OK.")[:100]
TARGETS = {"core_vs_generate": 0.90, "widget_vs_generate": 0.75, "first_token_s": 0.2}


def setup(threads: int):
    import torch

    from bvvlab.corpus.sources import parallel_pairs
    from bvvlab.glyph.tokenizer import bvv241_vocab, compact_vocab, hf_tokenizer
    from bvvlab.models.model import BVVForCausalLM, config_from_preset

    torch.set_num_threads(threads)
    rows = parallel_pairs("libreoffice-en-ru", "train")[:3000]
    tokens, _ = compact_vocab(bvv241_vocab(65536, []), [r[k] for r in rows for k in ("en", "ru")] + [PROMPT_100])
    tok = hf_tokenizer(tokens, [])
    tok.eos_token = None  # no end of text: every run makes all the new tokens
    cfg = config_from_preset("small", vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                             bos_token_id=tok.bos_token_id, eos_token_id=None)
    torch.manual_seed(0)
    glyphs = torch.nn.functional.normalize(torch.randn(len(tok), cfg.hidden_size,
                                                       generator=torch.Generator().manual_seed(0)), dim=-1)
    model = BVVForCausalLM.from_glyphs(cfg, glyphs).eval()
    model.generation_config.eos_token_id = None
    return model, tok, cfg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds (medians over them)")
    ap.add_argument("--new", type=int, default=128, help="new tokens per generation")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    from bvvlab.app import widgets as Wd
    from bvvlab.models import generation as G
    from bvvlab.models.model import count_parameters

    model, tok, cfg = setup(args.threads)
    settings = G.GenerationSettings(temperature=0.8, top_k=50, top_p=0.95, repetition_penalty=1.1,
                                    max_new_tokens=args.new, seed=0)
    prompt = "The "
    ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
    got: dict[str, list[int]] = {}

    def generate() -> None:
        torch.manual_seed(settings.seed)
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), pad_token_id=tok.pad_token_id,
                                 eos_token_id=None, **settings.generate_kwargs())
        got["generate"] = out[0, ids.shape[1]:].tolist()

    def stream() -> None:
        got["stream"] = G.Stream(model, tok, prompt, settings).run().ids

    panel = Wd.GenerationPanel(runs=None, models={"small": (model, tok)}, prompt=prompt, settings=settings,
                               redraw_s=0.1)

    def widget() -> None:
        s = panel.generate(wait=True)
        got["widget"] = s.ids

    first_settings = G.GenerationSettings(**{**settings.__dict__, "max_new_tokens": 1})

    def first_token() -> float:
        t = time.perf_counter()
        next(iter(G.Stream(model, tok, PROMPT_100, first_settings)))
        return time.perf_counter() - t

    first_panel = Wd.GenerationPanel(runs=None, models={"small": (model, tok)}, prompt=PROMPT_100,
                                     settings=G.GenerationSettings(**{**settings.__dict__, "max_new_tokens": 8}),
                                     redraw_s=0.1)
    shown: list[float] = []
    first_panel.text.observe(lambda _ch: shown.append(time.perf_counter()), names="value")

    def first_widget() -> float:
        shown.clear()
        t = time.perf_counter()
        first_panel.generate(wait=True)
        return shown[0] - t

    fns = {"generate": generate, "stream": stream, "widget": widget}
    times: dict[str, list[float]] = {k: [] for k in fns}
    firsts: dict[str, list[float]] = {"stream": [], "widget": []}
    load_before = list(os.getloadavg())
    for fn in fns.values():  # warm-up: allocator, glyph bitmaps, plotly's JSON encoder
        fn()
    first_token(), first_widget()
    for r in range(args.rounds):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
        firsts["stream"].append(first_token())
        firsts["widget"].append(first_widget())
    same = got["stream"] == got["generate"] == got["widget"]
    tps = {k: args.new / statistics.median(v) for k, v in times.items()}
    ratio = {k: statistics.median(g / s for g, s in zip(times["generate"], times[k])) for k in ("stream", "widget")}
    first = {k: statistics.median(v) for k, v in firsts.items()}
    n_prompt = len(tok(PROMPT_100, add_special_tokens=False)["input_ids"])
    result = {
        "shape": {"preset": "small", "vocab_size": len(tok), "hidden_size": cfg.hidden_size,
                  "num_hidden_layers": cfg.num_hidden_layers, "params": count_parameters(model)},
        "threads": args.threads, "rounds": args.rounds, "new_tokens": args.new,
        "settings": {**settings.__dict__, "stop": list(settings.stop)},
        "sec_median": {k: statistics.median(v) for k, v in times.items()}, "sec_all": times,
        "new_tokens_per_s": tps, "ratio_stream_vs_generate": ratio["stream"], "ratio_widget_vs_generate": ratio["widget"],
        "first_token_prompt_chars": len(PROMPT_100), "first_token_prompt_tokens": n_prompt,
        "first_token_s_median": first["stream"], "first_widget_update_s_median": first["widget"],
        "first_token_s_all": firsts, "identical_tokens": same, "targets": TARGETS,
        "meets": {"core": ratio["stream"] >= TARGETS["core_vs_generate"],
                  "widget": ratio["widget"] >= TARGETS["widget_vs_generate"],
                  "first_token": first["stream"] <= TARGETS["first_token_s"]},
        "load_average_before": load_before, "load_average_after": list(os.getloadavg()),
    }
    print(f"[gen] small preset (vocab {len(tok)}), {args.new} new tokens, {args.rounds} rounds, {args.threads} thread(s): "
          f"tok/s  generate {tps['generate']:.0f}  stream {tps['stream']:.0f}  widget {tps['widget']:.0f}  "
          f"ratio stream/generate {ratio['stream']:.3f} (target >= {TARGETS['core_vs_generate']})  "
          f"widget/generate {ratio['widget']:.3f} (target >= {TARGETS['widget_vs_generate']})  identical tokens {same}")
    print(f"[first] {len(PROMPT_100)}-character prompt ({n_prompt} tokens): first streamed token "
          f"{first['stream'] * 1000:.1f} ms, first panel text update {first['widget'] * 1000:.1f} ms "
          f"(target {TARGETS['first_token_s'] * 1000:.0f} ms)")
    write_results(args.out, {"generation": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
