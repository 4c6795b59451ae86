"""`bvvlab eval`: several checkpoints on a suite of tasks, one tidy comparison table.

The tasks, metrics, scoring and suites live beside it (`bvvlab.eval.tasks`, `metrics`,
`scoring`, `suites`); this module resolves a `--suite` into tasks, runs them on every
checkpoint, and writes `results.json` (rows: model, task, metric, mean,
low, high, interval, n, chance), `results.md` and `results.html` (a plotly bar chart with
error bars, plotly.js beside it: `include_plotlyjs="directory"`) into `--out`, atomically.

Suites: "offline" (data/eval/ and bits/char per language on held-out text), "paper" (the
Hub benchmarks of docs/recipe.md section 7 under the author's generative protocol: 10 sampled
runs), or a comma list of: an offline task name ("concepts-category/trained") or file stem,
"bpc", a Hub task name (mmlu, arc_easy, arc_challenge, commonsense_qa, squad_v2,
opus100_en_ru, opus100_ru_en), "NAME=PATH" (a Hub task from a local file in its Hub format),
or a path to a user task file (.jsonl of question, choices, answer).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bvvlab.core.atomic import ensure_dir, write_atomic, write_json_atomic
from bvvlab.core.outputs import check_output, mark_output, write_figure
from bvvlab.core.config import at_least, one_of
from bvvlab.eval import scoring, suites
from bvvlab.eval import tasks as eval_tasks

COLUMNS = ("model", "task", "metric", "mean", "low", "high", "interval", "n", "chance")


@dataclass
class EvalConfig:
    """What `bvvlab eval` and notebook 05 set (built through `bvvlab.core.config.build`, so a wrong
    value is the same line on every surface)."""

    checkpoints: list[str] = field(default_factory=list)  # run, step, fused (FUSED::EXPERT) or HF folders (several: one comparison)
    suite: str = "offline"  # offline | paper | a comma list of tasks, bpc, NAME=PATH, files
    out: str = "runs/eval"  # output folder (results.json, results.md, results.html)
    limit: int | None = None  # at most this many questions per task (None: all)
    runs: int | None = None  # protocol runs (None: 10 for the paper suite, else 1)
    sample: bool | None = None  # sample with the card's settings (None: when runs > 1), else greedy
    protocol: bool = False  # also run the generative letter protocol on multiple-choice tasks
    batch: int = 32  # questions per forward pass
    bpc_chars: int | None = 20_000  # held-out characters per language for bits/char (None: all)
    seed: int = 0  # seeds the sampled runs
    device: str = "cpu"  # auto, cpu, cuda or cuda:N
    trust_remote_code: bool = False  # let a foreign Hugging Face folder run the code it ships (never needed for bvvlab's)
    suite_dir: str = str(suites.SUITE_DIR)  # where the offline suite's files are
    tokenisation: str = "split"  # multiple choice: split (context and choice apart) or joint (as lm-evaluation-harness)
    overwrite: bool = False  # replace an earlier evaluation at out (never anything else)

    def validate(self) -> None:
        at_least("limit", self.limit, 1, "questions per task; none: all")
        at_least("runs", self.runs, 1, "protocol runs of every question")
        at_least("batch", self.batch, 1, "questions per forward pass")
        at_least("bpc_chars", self.bpc_chars, 1, "held-out characters per language; none: all")
        one_of("tokenisation", self.tokenisation, ("split", "joint"))

    @property
    def protocol_runs(self) -> int:
        """The runs given, else 10 for the paper suite (the author's protocol), else 1."""
        return self.runs if self.runs is not None else (10 if self.suite == "paper" else 1)


def resolve_suite(spec: str, suite_dir: str | Path = suites.SUITE_DIR, limit: int | None = None) -> tuple[list, bool]:
    """(tasks, wants_bpc) of a --suite value; "bpc" stands for bits/char per language."""
    spec = spec.strip()
    if not spec:
        raise eval_tasks.EvalError("--suite is empty: use offline, paper, or a comma list of task names or files")
    if spec == "offline":
        return suites.offline_suite(suite_dir), True
    if spec == "paper":
        return [eval_tasks.hub_task(n, limit=limit) for n in eval_tasks.HUB_TASKS], False
    tasks, bpc = [], False
    offline: dict[str, Path] | None = None
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part == "bpc":
            bpc = True
            continue
        name, _, local = part.partition("=")
        if name in eval_tasks.HUB_TASKS:
            tasks.append(eval_tasks.hub_task(name, local or None, limit=limit))
            continue
        if local:
            raise eval_tasks.EvalError(f"{part!r}: NAME=PATH needs a Hub task name ({', '.join(eval_tasks.HUB_TASKS)})")
        if offline is None:
            man = Path(suite_dir) / "manifest.json"
            files = json.loads(man.read_text(encoding="utf-8"))["files"] if man.is_file() else {}
            offline = {}
            for f, info in files.items():
                offline[info["task"]] = offline[f.removesuffix(".jsonl")] = Path(suite_dir) / f
        if part in offline:
            tasks.append(eval_tasks.load_task_file(offline[part]))
        elif part.endswith((".jsonl", ".json")) or Path(part).exists():
            tasks.append(eval_tasks.load_task_file(part))
        else:
            raise eval_tasks.EvalError(f"unknown task {part!r}: use offline, paper, bpc, a Hub task ({', '.join(eval_tasks.HUB_TASKS)}), "
                              f"an offline task ({', '.join(sorted(k for k in offline if '/' in k)) or 'none built'}) "
                              "or a .jsonl task file")
    if not tasks and not bpc:
        raise eval_tasks.EvalError(f"--suite {spec!r} names no task")
    return tasks, bpc


def model_names(paths: list[str]) -> list[str]:
    """Distinct labels of the checkpoints, by the one naming rule of every table
    (`bvvlab.models.loader.labels`: the same checkpoint named twice is LABEL#2)."""
    from bvvlab.models.loader import labels

    return labels(paths)


def evaluate_models(models: list[tuple[str, Any, Any]], tasks: list, bpc: bool = False, runs: int = 1,
                    sample: bool = False, protocol: bool = False, limit: int | None = None, batch: int = 32,
                    bpc_chars: int | None = 20_000, seed: int = 0, tokenisation: str = "split") -> list[dict[str, Any]]:
    """Tidy rows for every (name, model, tokenizer) on every task (and bits/char per language)."""
    rows: list[dict[str, Any]] = []
    for name, model, tok in models:
        scoring.check_pair(model, tok)
        if bpc:
            for lang, r in scoring.bpc_by_language(model, tok, max_chars=bpc_chars).items():
                rows.append({"model": name, "task": f"heldout-{lang}", "metric": "bpc", "mean": r["bpc"],
                             "low": r.get("bpc_low"), "high": r.get("bpc_high"), "interval": "bootstrap over texts",
                             "n": r["chars"], "chance": None})
        for t in tasks:
            for r in scoring.evaluate_task(model, tok, t, runs=runs, sample=sample, seed=seed, batch=batch, limit=limit,
                                           protocol=protocol, tokenisation=tokenisation):
                rows.append({"model": name, **r})
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


PANELS = (("bits/char", "bits per character (lower is better)"), ("fraction", "accuracy (fraction correct)"),
          ("points", "BLEU / chrF (points, 0-100)"))


def metric_unit(metric: str) -> str:
    """Which panel a metric belongs to: "bits/char", "points" (BLEU, chrF) or "fraction"."""
    if metric == "bpc":
        return "bits/char"
    return "points" if "bleu" in metric or "chrf" in metric else "fraction"


def figure(rows: list[dict[str, Any]], title: str = "evaluation"):
    """One panel per unit (bits/char; accuracies; BLEU/chrF points), each with its own y axis
    starting at 0: one shared axis flattened accuracies (0-1) under bits/char (up to ~30) and
    hid their chance lines (issue 24). Grouped bars, one colour per model, the interval as error
    bars; chance as a black tick over each bar group that has one."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    panels = [(unit, label) for unit, label in PANELS if any(metric_unit(r["metric"]) == unit for r in rows)]
    if not panels:
        return go.Figure(layout={"title": title})
    fig = make_subplots(rows=len(panels), cols=1, subplot_titles=[label for _, label in panels],
                        vertical_spacing=0.32 / len(panels) if len(panels) > 1 else 0.0)
    models = list(dict.fromkeys(r["model"] for r in rows))
    colours = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
    chance_shown, in_legend = False, set()
    for k, (unit, _) in enumerate(panels, start=1):
        sub = [r for r in rows if metric_unit(r["metric"]) == unit]
        for i, m in enumerate(models):
            rs = [r for r in sub if r["model"] == m]
            plus = [(r["high"] - r["mean"]) if r["high"] is not None else 0 for r in rs]
            minus = [(r["mean"] - r["low"]) if r["low"] is not None else 0 for r in rs]
            if not rs:
                continue
            fig.add_trace(go.Bar(name=m, x=[_label(r) for r in rs], y=[r["mean"] for r in rs], legendgroup=m,
                                 showlegend=m not in in_legend, marker={"color": colours[i % len(colours)]},
                                 error_y={"type": "data", "array": plus, "arrayminus": minus,
                                          "visible": any(r["low"] is not None for r in rs)}), row=k, col=1)
            in_legend.add(m)
        chance = {_label(r): r["chance"] for r in sub if r["chance"] is not None}
        if chance:
            fig.add_trace(go.Scatter(name="chance", x=list(chance), y=list(chance.values()), mode="markers",
                                     legendgroup="chance", showlegend=not chance_shown,
                                     marker={"symbol": "line-ew-open", "size": 60, "color": "black",
                                             "line": {"width": 2}}), row=k, col=1)
            chance_shown = True
        fig.update_yaxes(rangemode="tozero", row=k, col=1)
    fig.update_layout(barmode="group", title=title, template="plotly_white", height=140 + 300 * len(panels),
                      legend={"orientation": "h", "y": -0.12 if len(panels) == 1 else -0.06})
    return fig


def _label(r: dict[str, Any]) -> str:
    boot = " (boot)" if "bootstrap over q" in r["interval"] and "protocol" in r["metric"] else ""
    return f"{r['task']} {r['metric']}{boot}"


def write_report(rows: list[dict[str, Any]], out: str | Path, meta: dict[str, Any] | None = None,
                 overwrite: bool = False) -> Path:
    """results.json, results.md and results.html (plotly.min.js beside it) into `out`, each file
    written whole or not at all (through a temporary sibling). `out` must be new or empty, or
    (with `overwrite`) an earlier evaluation (`check_out`); other files there are left alone."""
    out = ensure_dir(check_out(out, overwrite))
    write_json_atomic(out / "results.json", {"rows": rows, **(meta or {})})
    write_atomic(out / "results.md", markdown_table(rows))
    write_figure(figure(rows), out / "results.html")
    mark_output(out, "eval")
    return out


def _holds_eval(folder: Path) -> bool:
    """An evaluation written before markers existed: results.json with its rows."""
    try:
        r = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(r, dict) and isinstance(r.get("rows"), list) and (folder / "results.md").is_file()


def check_out(out: str | Path, overwrite: bool, inputs: list[str] | tuple = ()) -> Path:
    """The evaluation's output folder, checked before any work (`bvvlab.core.outputs` rule): new or
    empty, or with `overwrite` an earlier evaluation; a checkpoint or anyone's folder never."""
    return check_output(out, "eval", "evaluation", overwrite, holds=_holds_eval, inputs=inputs,
                        error=eval_tasks.EvalError)


def load_models(paths: list[str], device: str = "cpu", trust_remote_code: bool = False) -> list[tuple[str, Any, Any]]:
    """(label, model, tokenizer) of every checkpoint, through the one loader
    (`bvvlab.models.loader.load_many`): run folders, step folders, fused checkpoints, one expert of
    one (`FUSED::EXPERT`, scored on its own) and Hugging Face causal LMs alike."""
    from bvvlab.models.loader import load_many

    return [(lm.label, lm.causal_lm(), lm.tokenizer)
            for lm in load_many(paths, device, trust_remote_code=trust_remote_code)]


def heldout_warnings(paths: list[str], tasks: list) -> list[str]:
    """One line per checkpoint whose recorded training mentioned the suite's held-out concepts,
    when `tasks` has `/heldout` rows: those rows would measure trained concepts. Checkpoints that
    record no training (a Hub model, a fused one) are not judged."""
    from bvvlab.models.checkpoints import trained_holdout

    if not any(t.name.endswith("/heldout") for t in tasks):
        return []
    want, out = set(suites.suite_holdout_concepts()), []
    for path in paths:
        held = trained_holdout(path)
        if held is not None and not want <= set(held):
            out.append(f"{path}: its training did not hold out the suite's {len(want)} held-out concepts, so its "
                       "/heldout rows measure trained concepts; train with corpus concepts?holdout=suite")
    return out
