"""The offline evaluation suites embedded under data/eval/: concept questions (trained and held-out
concepts) and LibreOffice translation pairs, built by scripts/build_eval_suites.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bvvlab.core.atomic import write_json_atomic
from bvvlab.core.runinfo import embedded_data_dir
from bvvlab.eval.tasks import EvalError, Task, load_task_file

# --------------------------------------------------------------------------------- offline suites

SUITE_DIR = embedded_data_dir() / "eval"  # the embedded suites (data/eval in a checkout)
SUITE_VERSION = 1
# concepts the suites call "held out": every concept whose id hashes into bucket < 10 (about 10%,
# `concepts.suite_holdout`); train with corpus `concepts?holdout=suite` and these never appear in training
TRANSLATION_PAIRS = 128  # per direction, as the paper's OPUS-100 run (section 7)
TRANSLATION_MAX_CHARS = 160  # short LibreOffice paragraphs: prompt + answer fit a small model's context


def suite_holdout_concepts() -> list[str]:
    from bvvlab.corpus import concepts as C

    return C.suite_holdout()


def _concept_rows(seed: int = 0) -> dict[str, list[dict]]:
    """Concept questions from the lexicon alone (no corpus sentence): word translation en->ru and
    ru->en (distractors of the same category and part of speech), category membership (three
    distractors from categories that cannot also be right), odd-one-out (three of one category,
    one from an unconfusable other). One question per concept per task; each row says whether
    its concept is in `suite_holdout_concepts()`."""
    import random

    from bvvlab.corpus import concepts as C
    from bvvlab.corpus.instructions import CATEGORY_QUESTIONS, CONFUSABLE_CATEGORIES

    held = set(suite_holdout_concepts())
    words = sorted(C.LEXICON.values(), key=lambda c: c.id)
    group = {c.id: next((g for g in CONFUSABLE_CATEGORIES if c.category in g), {c.category}) for c in words}
    out: dict[str, list[dict]] = {"concepts-word-en-ru": [], "concepts-word-ru-en": [], "concepts-category": [],
                                  "concepts-odd-one-out": []}

    def place(rng, answer, others):
        opts = [answer] + others
        rng.shuffle(opts)
        return opts, opts.index(answer)

    for c in words:
        rng = random.Random(f"suite:{seed}:{c.id}")
        en, ru = C.word_line(c)
        split = "heldout" if c.id in held else "trained"
        same = [w for w in words if w.pos == c.pos and w.category == c.category and w.id != c.id]
        if len(same) < 3:
            same = [w for w in words if w.pos == c.pos and w.id != c.id]
        for side, task in ((1, "concepts-word-en-ru"), (0, "concepts-word-ru-en")):
            others: list[str] = []
            for w in rng.sample(same, len(same)):
                e, r = C.word_line(w)
                if e != en and r != ru and (e, r)[side] not in others:
                    others.append((e, r)[side])
                if len(others) == 3:
                    break
            q = (f'What is the Russian word for "{en}"?' if side == 1
                 else f'What does the Russian word "{ru}" mean in English?')
            opts, a = place(rng, (en, ru)[side], others)
            out[task].append({"question": q, "choices": opts, "answer": a, "concept": c.id, "split": split})
        far = [w for w in words if w.category not in group[c.id]]
        pick: list[str] = []
        for w in rng.sample(far, len(far)):
            e = C.word_line(w)[0]
            if e != en and e not in pick:
                pick.append(e)
            if len(pick) == 3:
                break
        opts, a = place(rng, en, pick)
        out["concepts-category"].append({"question": f"Which of these is {CATEGORY_QUESTIONS[c.category]}?",
                                         "choices": opts, "answer": a, "concept": c.id, "split": split})
        # odd-one-out: c is the odd word among three of another, unconfusable category
        cats = sorted({w.category for w in far if sum(x.category == w.category for x in far) >= 3})
        cat = rng.choice(cats)
        three = [C.word_line(w)[0] for w in rng.sample([w for w in far if w.category == cat], 3)]
        if en in three:
            continue
        opts, a = place(rng, en, three)
        out["concepts-odd-one-out"].append({"question": f"Which word does not belong with the others: "
                                                        f"{', '.join(opts)}?", "choices": opts, "answer": a,
                                            "concept": c.id, "split": split})
    return out


def _translation_rows() -> dict[str, tuple[dict, list[dict]]]:
    from bvvlab.corpus.parallel_text import parallel_pairs

    rows = [r for r in parallel_pairs("libreoffice-en-ru", "test")
            if len(r["en"]) <= TRANSLATION_MAX_CHARS and len(r["ru"]) <= TRANSLATION_MAX_CHARS]
    rows = sorted(rows, key=lambda r: r["id"])[:TRANSLATION_PAIRS]
    out = {}
    for src, tgt in (("en", "ru"), ("ru", "en")):
        head = {"name": f"libreoffice-{src}-{tgt}", "kind": "translation", "src": src, "tgt": tgt,
                "source": "libreoffice-en-ru test split", "max_new_tokens": 64}
        out[head["name"]] = (head, [{"src": r[src], "ref": r[tgt], "id": r["id"]} for r in rows])
    return out


def build_offline_suites(out_dir: str | Path = SUITE_DIR) -> dict[str, Any]:
    """Write the offline suites (JSON lines, a {"task": header} first line) and `manifest.json`
    into `out_dir`, atomically (the folder is replaced whole). Sources: the LibreOffice en-ru
    *test* split and the concept lexicon; never training text. Deterministic."""
    from bvvlab.core.atomic import atomic_dir, write_atomic

    files: dict[str, dict] = {}
    suites: dict[str, tuple[dict, list[dict]]] = dict(_translation_rows())
    for name, rows in _concept_rows().items():
        for split in ("trained", "heldout"):
            part = [r for r in rows if r["split"] == split]
            head = {"name": f"{name}/{split}", "kind": "mc", "chance": 0.25, "split": split,
                    "source": "bvvlab.corpus.concepts.LEXICON"}
            suites[f"{name}.{split}"] = (head, part)
    with atomic_dir(out_dir, replace=True) as tmp:
        for fname, (head, rows) in suites.items():
            text = "\n".join(json.dumps(x, ensure_ascii=False) for x in [{"task": head}] + rows) + "\n"
            write_atomic(tmp / f"{fname}.jsonl", text)
            files[f"{fname}.jsonl"] = {"task": head["name"], "kind": head["kind"], "n": len(rows),
                                       "chance": head.get("chance")}
        manifest = {"version": SUITE_VERSION, "files": files, "holdout_concepts": suite_holdout_concepts(),
                    "built_by": "scripts/build_eval_suites.py"}
        write_json_atomic(tmp / "manifest.json", manifest)
    return manifest


def offline_suite(suite_dir: str | Path = SUITE_DIR) -> list[Task]:
    """The shipped offline tasks, in manifest order."""
    d = Path(suite_dir)
    man = d / "manifest.json"
    if not man.is_file():
        raise EvalError(f"{man} is missing: build the suites with python scripts/build_eval_suites.py")
    files = json.loads(man.read_text(encoding="utf-8"))["files"]
    return [load_task_file(d / f) for f in files]
