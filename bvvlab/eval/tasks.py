"""Evaluation tasks: the item types, the prompts of the author's protocol (docs/recipe.md section 7),
user JSON-lines task files and the Hub formats (MMLU, ARC, CommonsenseQA, SQuAD v2, OPUS-100)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bvvlab.core.errors import BVVError

# =============================================================================================
# Issue 12: held-out bits/char per language, multiple choice by log-likelihood, the author's
# generative protocol (docs/recipe.md section 7), BLEU/chrF, intervals, task files.
# =============================================================================================

LETTERS = "ABCDEFGHIJ"
_ANSWER_TAIL = "\nAnswer:"


class EvalError(BVVError):
    """Bad evaluation input (task file, task name, model/tokenizer pair): one line with the fix."""


# --------------------------------------------------------------------------------- multiple choice


@dataclass
class MCItem:
    """One multiple-choice question scored by log-likelihood: `context` is followed by each of
    `choices` (continuations, with their leading space); `answer` is the index of the right one."""

    context: str
    choices: list[str]
    answer: int
    meta: dict = field(default_factory=dict)


@dataclass
class GenItem:
    """One generative question: `prompt` (ends in "Answer:"), and its `answer` (a letter for
    `match="letter"`, accepted strings for "substring", the reference for "bleu")."""

    prompt: str
    answer: Any
    match: str = "letter"  # "letter" | "substring" | "bleu"
    meta: dict = field(default_factory=dict)


def translation_prompt(src: str, src_lang: str, tgt_lang: str) -> str:
    """docs/recipe.md section 7: `Translate from English to Russian:\\n{src}\\nAnswer:`."""
    names = {"en": "English", "ru": "Russian", "zh": "Chinese"}
    return f"Translate from {names[src_lang]} to {names[tgt_lang]}:\n{src}{_ANSWER_TAIL}"


# --------------------------------------------------------------------------------- prompts


def mmlu_prompt(question: str, options: list[str]) -> str:
    """Section 7, MMLU: options on one line."""
    opts = " ".join(f"{LETTERS[i]}) {o}" for i, o in enumerate(options))
    return f"Question: {question}\nOptions: {opts}{_ANSWER_TAIL}"


def arc_prompt(question: str, options: list[str], labels: list[str] | None = None) -> str:
    """Section 7, ARC and CommonsenseQA: one option per line."""
    labels = labels or list(LETTERS[:len(options)])
    opts = "\n".join(f"{lab}) {o}" for lab, o in zip(labels, options))
    return f"Question: {question}\nOptions:\n{opts}{_ANSWER_TAIL}"


def squad_prompt(context: str, question: str) -> str:
    return f"Context: {context}\nQuestion: {question}{_ANSWER_TAIL}"


# --------------------------------------------------------------------------------- task files


@dataclass
class Task:
    """A named set of questions. kind "mc": `items` are MCItems (scored by log-likelihood, and by
    the protocol when `gen` is set); "gen": GenItems; "translation": `pairs` (src, ref)."""

    name: str
    kind: str
    items: list = field(default_factory=list)
    chance: float | None = None
    gen: list = field(default_factory=list)  # GenItems of the same questions (the author's protocol)
    max_new_tokens: int = 2
    src_lang: str = "en"
    tgt_lang: str = "ru"
    meta: dict = field(default_factory=dict)


def _answer_index(ans: Any, choices: list[str], where: str) -> int:
    if isinstance(ans, bool):  # JSON true/false: not an index, whatever Python thinks of True == 1
        raise EvalError(f"{where}: answer {json.dumps(ans)} is a yes/no value; give the index of the right choice "
                        f"(0-based), its letter ({LETTERS[0]}-{LETTERS[len(choices) - 1]}) or its text")
    if isinstance(ans, int):
        if 0 <= ans < len(choices):
            return ans
    elif isinstance(ans, str):
        s = ans.strip()
        if s in choices:
            return choices.index(s)
        if len(s) == 1 and s.upper() in LETTERS[:len(choices)]:
            return LETTERS.index(s.upper())
        if s.isdigit() and 0 <= int(s) < len(choices):
            return int(s)
    raise EvalError(f"{where}: answer {ans!r} is not among the {len(choices)} choices; give the index (0-based), "
                    f"the letter ({LETTERS[0]}-{LETTERS[len(choices) - 1]}) or the text of one choice")


def mc_task(name: str, rows: list[dict], where: str, chance: float | None = None, layout: str = "arc",
            gen_tokens: int = 2) -> Task:
    """A multiple-choice Task from rows {question, choices, answer[, context]}: log-likelihood
    items `Question: {q}\\nAnswer:` + ` {choice}`, and the protocol's prompts (section 7 layout
    "mmlu" or "arc") answered by letter."""
    items, gen = [], []
    for k, r in enumerate(rows):
        at = f"{where}: question {k + 1}"
        q = r.get("question")
        if not isinstance(q, str) or not q.strip():
            raise EvalError(f"{at} has no question text; every line needs \"question\", \"choices\", \"answer\"")
        choices = r.get("choices")
        if isinstance(choices, list) and len(choices) == 1:
            raise EvalError(f"{at} has a single choice ({choices[0]!r}); give \"choices\": a list of at least 2 "
                            "strings, the right one among them")
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
            raise EvalError(f"{at} has no choices (got {choices!r}); give \"choices\": a list of at least 2 strings")
        if len(choices) > len(LETTERS):
            raise EvalError(f"{at} has {len(choices)} choices; at most {len(LETTERS)} are supported")
        a = _answer_index(r.get("answer"), choices, at)
        ctx = f"Question: {q}{_ANSWER_TAIL}"
        if r.get("context"):
            ctx = f"Context: {r['context']}\n{ctx}"
        extra = {k: v for k, v in r.items() if k not in ("question", "choices", "answer", "context", "meta")}
        items.append(MCItem(ctx, [" " + c for c in choices], a, {**extra, **dict(r.get("meta") or {})}))
        prompt = mmlu_prompt(q, choices) if layout == "mmlu" else arc_prompt(q, choices)
        gen.append(GenItem(prompt, LETTERS[a], "letter"))
    if not items:
        raise EvalError(f"{where} holds no questions; write one JSON object per line: "
                        '{"question": ..., "choices": [...], "answer": ...}')
    if chance is None:
        chance = float(np.mean([1.0 / len(it.choices) for it in items]))
    return Task(name, "mc", items, chance, gen, gen_tokens)


def read_jsonl(path: str | Path) -> list[dict]:
    """JSON lines (blank lines skipped); one line names a line that is not a JSON object."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"task file {path} does not exist; give a JSON-lines file (question, choices, answer)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise EvalError(f"{path}:{line} is not UTF-8 text (byte {exc.object[exc.start]:#04x}); save the task file as "
                        "UTF-8") from None
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalError(f"{path}:{n} is not JSON ({exc.msg}); write one JSON object per line") from None
        if not isinstance(obj, dict):
            raise EvalError(f"{path}:{n} is not a JSON object; write one object per line")
        rows.append(obj)
    return rows


def load_task_file(path: str | Path, name: str | None = None) -> Task:
    """A user task: JSON lines of {"question", "choices", "answer"} (answer: index, letter or
    choice text; optional "context"), or a suite file written by scripts/build_eval_suites.py
    (its first line a {"task": ...} header)."""
    path = Path(path)
    rows = read_jsonl(path)
    if not rows:
        raise EvalError(f"task file {path} is empty; write one JSON object per line: "
                        '{"question": ..., "choices": [...], "answer": ...}')
    head = rows[0].get("task") if len(rows[0]) and "task" in rows[0] else None
    if isinstance(head, dict):
        return _suite_task(head, rows[1:], str(path))
    return mc_task(name or path.stem, rows, str(path))


def _suite_task(head: dict, rows: list[dict], where: str) -> Task:
    """A task from a suite file: its first line's header {"task": {"name", "kind", ...}}, then rows."""
    example = '{"task": {"name": "my-task", "kind": "mc"}}'
    if not isinstance(head.get("name"), str) or not head["name"].strip():
        raise EvalError(f"{where}: the header line has no task name; write it as {example}")
    kind = head.get("kind", "mc")
    if kind not in ("mc", "translation"):
        raise EvalError(f"{where}: task kind {kind!r} in the header; use \"mc\" or \"translation\"")
    if kind == "translation":
        if not rows:
            raise EvalError(f"{where} holds no sentence pairs; rebuild it with scripts/build_eval_suites.py")
        langs = [head.get(k) for k in ("src", "tgt")]
        if not all(isinstance(x, str) and x for x in langs):
            raise EvalError(f"{where}: a translation header needs \"src\" and \"tgt\" languages, e.g. "
                            '{"task": {"name": "t", "kind": "translation", "src": "en", "tgt": "ru"}}')
        bad = next((n for n, r in enumerate(rows, 2) if not all(isinstance(r.get(k), str) for k in ("src", "ref"))),
                   None)
        if bad is not None:
            raise EvalError(f"{where}:{bad} needs \"src\" and \"ref\" texts (a sentence and its translation)")
        try:
            max_new = int(head.get("max_new_tokens", 64))
        except (TypeError, ValueError):
            raise EvalError(f"{where}: max_new_tokens={head['max_new_tokens']!r} in the header; give an integer") from None
        return Task(head["name"], "translation", [(r["src"], r["ref"]) for r in rows], None,
                    src_lang=langs[0], tgt_lang=langs[1], max_new_tokens=max_new,
                    meta={k: head[k] for k in head if k not in ("name", "kind")})
    t = mc_task(head["name"], rows, where, chance=head.get("chance"))
    t.meta = {k: head[k] for k in head if k not in ("name", "kind", "chance")}
    return t


# --------------------------------------------------------------------------------- Hub tasks

# name -> (Hub id, config, split, converter); the splits and counts of docs/recipe.md section 7
HUB_TASKS = {
    "mmlu": ("cais/mmlu", "all", "test"),
    "arc_easy": ("allenai/ai2_arc", "ARC-Easy", "validation"),
    "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge", "validation"),
    "commonsense_qa": ("tau/commonsense_qa", None, "validation"),
    "squad_v2": ("rajpurkar/squad_v2", None, "validation"),
    "opus100_en_ru": ("Helsinki-NLP/opus-100", "en-ru", "validation"),
    "opus100_ru_en": ("Helsinki-NLP/opus-100", "en-ru", "validation"),
}


def _offline() -> bool:
    import os

    return any(os.environ.get(v, "").lower() in ("1", "true", "yes")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_rows(name: str, local: str | Path | None) -> list[dict]:
    """Rows of a Hub task: from `local` (a JSON-lines, JSON, parquet or CSV file, or a
    save_to_disk folder, in the Hub format) or, online, from the Hub through `datasets`."""
    import datasets

    repo, config, split = HUB_TASKS[name]
    alt = (f"pass a local file in the same format instead: --suite {name}=PATH.jsonl "
           f"(rows of {repo}{'/' + config if config else ''}, split {split})")
    if local is not None:
        p = Path(local)
        if p.is_dir():
            ds = datasets.load_from_disk(str(p))
            ds = ds[split] if isinstance(ds, datasets.DatasetDict) else ds
        elif p.is_file():
            fmt = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}.get(p.suffix)
            if fmt is None:
                raise EvalError(f"{p}: unknown file type {p.suffix!r}; use .jsonl, .json, .parquet or .csv")
            from bvvlab.corpus.sources import quiet_datasets

            if p.stat().st_size == 0:
                raise EvalError(f"{p} is empty; {alt}")
            try:
                with quiet_datasets():
                    ds = datasets.load_dataset(fmt, data_files=str(p), split="train")
            except Exception as exc:  # a damaged parquet, a non-UTF-8 or malformed JSON/CSV: pyarrow's words
                raise EvalError(f"{p} cannot be read as {fmt} ({_cause(exc)}); {alt}") from None
        else:
            raise EvalError(f"{p} does not exist; {alt}")
        return [dict(r) for r in ds]
    if _offline():
        raise EvalError(f"{name} is the Hub dataset {repo} and this machine is offline (HF_*_OFFLINE is set); {alt}")
    try:
        ds = datasets.load_dataset(repo, config, split=split)
    except Exception as exc:  # no network, unknown name, ...: one line with the alternative
        raise EvalError(f"{name}: {repo} could not be loaded from the Hub ({type(exc).__name__}); {alt}") from None
    return [dict(r) for r in ds]


def _cause(exc: BaseException) -> str:
    """The innermost reason of a library error, in one line (datasets wraps pyarrow's)."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


# the Hub format's columns per task (docs/recipe.md section 7), for the one line a wrong file gets
HUB_COLUMNS = {
    "mmlu": ("question", "choices", "answer"),
    "arc_easy": ("question", "choices", "answerKey"),
    "arc_challenge": ("question", "choices", "answerKey"),
    "commonsense_qa": ("question", "choices", "answerKey"),
    "squad_v2": ("context", "question", "answers"),
    "opus100_en_ru": ("translation",),
    "opus100_ru_en": ("translation",),
}
_NESTED = {"choices": "{label: [...], text: [...]}", "answers": "{text: [...]}", "translation": "{en: ..., ru: ...}"}


def _hub_format(name: str) -> str:
    cols = [c + (f" {_NESTED[c]}" if c in _NESTED and name != "mmlu" else "") for c in HUB_COLUMNS[name]]
    return f"{name} rows (as on the Hub) have the columns {', '.join(cols)}"


def hub_task(name: str, local: str | Path | None = None, limit: int | None = None) -> Task:
    """`_hub_task` with a file in the wrong format named in one line: the row, the columns it
    lacks or the value that does not fit, and the columns the task reads."""
    if name not in HUB_TASKS:
        raise EvalError(f"unknown Hub task {name!r}: use one of {', '.join(HUB_TASKS)}")
    rows = _hub_rows(name, local)
    where = str(local or HUB_TASKS[name][0])
    for i, r in enumerate(rows, 1):
        missing = [c for c in HUB_COLUMNS[name] if c not in r]
        if missing:
            raise EvalError(f"{where}: row {i} has no column {', '.join(missing)} (it has {', '.join(r) or 'none'}); "
                            f"{_hub_format(name)}")
    try:
        return _hub_task(name, rows, where, limit)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        if isinstance(exc, EvalError):
            raise
        raise EvalError(f"{where}: a row does not fit the {name} format ({type(exc).__name__}: {exc}); "
                        f"{_hub_format(name)}") from None


def _hub_task(name: str, rows: list[dict], where: str, limit: int | None) -> Task:
    """MMLU, ARC-Easy/Challenge, CommonsenseQA, SQuAD v2 or OPUS-100 en-ru as a Task, from its Hub
    format (field names as on the Hub), with the section 7 prompts and answer rules (SQuAD v2:
    256 answerable questions whose answer has at most 8 characters; OPUS-100: 128 pairs)."""
    if not rows:
        raise EvalError(f"{where} holds no rows for {name}")
    if name == "mmlu":
        t = mc_task(name, [{"question": r["question"], "choices": list(r["choices"]), "answer": int(r["answer"])}
                           for r in rows[:limit]], where, chance=0.25, layout="mmlu", gen_tokens=1)
    elif name in ("arc_easy", "arc_challenge", "commonsense_qa"):
        conv = []
        for r in rows[:limit]:
            ch = r["choices"]
            labels, texts = list(ch["label"]), list(ch["text"])
            if r["answerKey"] not in labels:
                raise EvalError(f"{where}: answerKey {r['answerKey']!r} is not among the labels {labels}")
            conv.append({"question": r["question"], "choices": texts, "answer": labels.index(r["answerKey"]),
                         "labels": labels})
        t = mc_task(name, conv, where, chance=0.2 if name == "commonsense_qa" else 0.25, gen_tokens=2)
        for g, r in zip(t.gen, conv):  # the dataset's own labels (ARC has some 1-4 labels)
            g.prompt = arc_prompt(r["question"], r["choices"], r["labels"])
            g.answer = r["labels"][r["answer"]]
    elif name == "squad_v2":
        keep = [r for r in rows if r["answers"]["text"] and len(r["answers"]["text"][0]) <= 8][:limit or 256]
        gen = [GenItem(squad_prompt(r["context"], r["question"]), list(r["answers"]["text"]), "substring")
               for r in keep]
        t = Task(name, "gen", [], None, gen, max_new_tokens=8)
    else:
        src, tgt = ("en", "ru") if name == "opus100_en_ru" else ("ru", "en")
        pairs = [(r["translation"][src], r["translation"][tgt]) for r in rows[:limit or 128]]
        t = Task(name, "translation", pairs, None, src_lang=src, tgt_lang=tgt, max_new_tokens=64)
    if t.kind != "translation" and not (t.items or t.gen):
        raise EvalError(f"{where} holds no usable questions for {name}")
    return t
