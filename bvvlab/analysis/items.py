"""What is probed: item sets (`Item`): the concept lexicon (English and Russian lemma of
each concept, with its category; concepts named held out are flagged and reported apart),
held-out parallel sentences (LibreOffice help test split + the concept corpus's test pairs), and
user CSV / JSONL files (text, optional label, lang, pair); which concepts a checkpoint held out."""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from bvvlab.core.errors import BVVError, check_text
from bvvlab.corpus import concepts as _concepts
from bvvlab.models.checkpoints import trained_holdout

ITEM_SETS = ("concepts", "lemmas", "sentences")
ANCHORS = ("drop", "apart", "keep")  # sentence pairs sharing a Latin or digit string (`anchor_strings`)


class ProbeError(BVVError):
    """Bad probing input: one line naming the problem and the fix."""


# ============================================================================ items


@dataclass(frozen=True)
class Item:
    """One text to probe. Items of one `pair` in different languages are translations of each
    other (retrieval); `group` is what cross-validation keeps together (the concept); `label` is
    the class the probes and the silhouette use (the concept's category)."""

    text: str
    lang: str
    pair: str = ""  # translation group ("" = none)
    label: str = ""  # category ("" = none)
    group: str = ""  # CV group ("" = the pair, else the text)
    heldout: bool = False  # a concept that training never showed
    source: str = ""
    gallery: str = ""  # retrieval ranks an item only among items of the same gallery ("" = one gallery for all)
    anchored: bool = False  # the pair shares a Latin or digit string (`anchor_strings`): reported apart

    @property
    def cv_group(self) -> str:
        return self.group or self.pair or self.text


def concept_items(heldout: Iterable[str] = (), langs: Sequence[str] = ("en", "ru")) -> list[Item]:
    """The concept lexicon: each concept's English and Russian lemma, labelled by category,
    paired and grouped by concept id; concepts in `heldout` are flagged."""
    held = set(heldout)
    unknown = sorted(held - set(_concepts.LEXICON))
    if unknown:
        raise ProbeError(f"unknown held-out concept id(s) {unknown[:5]}: use ids from bvvlab.corpus.concepts.LEXICON")
    out = []
    for c in _concepts.LEXICON.values():
        forms = {"en": c.en_lemma, "ru": c.ru_lemma}
        for lang in langs:
            out.append(Item(forms[lang], lang, c.id, c.category, c.id, c.id in held, "concepts"))
    return out


_ANCHOR = re.compile(r"[A-Za-z]+|[0-9]+")


def anchor_strings(a: str, b: str) -> set[str]:
    """The maximal Latin-letter or digit runs two texts share ('LibreOffice', 'F1' -> 'F', '1'):
    a lexical anchor that already matches the translations at layer 0 (issue 28: 95 of the first
    250 LibreOffice test pairs have one, none of the concept pairs)."""
    return set(_ANCHOR.findall(a)) & set(_ANCHOR.findall(b))


def sentence_items(limit: int | None = 250, anchors: str = "drop", notes: list[str] | None = None) -> list[Item]:
    """Held-out parallel sentences: up to `limit` pairs of the LibreOffice help en-ru test split
    and up to `limit` of the concept corpus's test pairs (label = the source).

    Galleries: a concept sentence is retrieved only among the concept sentences of its own template
    (gallery `template:NAME`), so the template alone cannot give the answer (19 templates make
    about 1/13 top-1 otherwise); a template with one pair has no gallery and is dropped. The
    LibreOffice pairs form one gallery of their own. `anchors` (`ANCHORS`), for pairs sharing a
    Latin or digit string: "drop" (default: the headline retrieval then measures the states, not
    a string both sides spell alike), "apart" (kept, flagged `anchored`, reported apart), "keep".
    A line per dropped group goes to `notes`."""
    from bvvlab.corpus.sources import parallel_pairs

    if anchors not in ANCHORS:
        raise ProbeError(f"anchors={anchors}: use one of {', '.join(ANCHORS)}")
    notes = notes if notes is not None else []
    raw = [("libreoffice-en-ru", f"lo:{r['id']}", "libreoffice", r["en"], r["ru"], "libreoffice")
           for r in parallel_pairs("libreoffice-en-ru", "test")[:limit]]
    for i, p in enumerate(_concepts.eval_pairs("test")[:limit]):
        raw.append(("concepts", f"cs:{i}", "concepts", p.en, p.ru, f"template:{p.template}"))
    kept, dropped = [], 0
    for source, pair, label, en, ru, gallery in raw:
        anchored = bool(anchor_strings(en, ru)) and anchors != "keep"
        if anchored and anchors == "drop":
            dropped += 1
            continue
        kept.append((source, pair, label, en, ru, gallery, anchored))
    # galleries are counted after the anchor filter, and per part with "apart" (reported apart):
    # a template left with one pair would rank it first every time
    sizes: dict[tuple[str, bool], int] = {}
    for *_, gallery, anchored in kept:
        sizes[gallery, anchored] = sizes.get((gallery, anchored), 0) + 1
    lone = sorted({g for (g, a), k in sizes.items() if k < 2 and g.startswith("template:")})
    if lone:
        notes.append(f"dropped {len(lone)} concept sentence(s) whose template has no other test pair (no same-template "
                     f"gallery): {', '.join(g[9:] for g in lone)}")
    out = [Item(t, lang, pair, label, source=source, gallery=gallery, anchored=anchored)
           for source, pair, label, en, ru, gallery, anchored in kept if sizes[gallery, anchored] >= 2
           or not gallery.startswith("template:") for t, lang in ((en, "en"), (ru, "ru"))]
    if dropped:
        notes.append(f"dropped {dropped} sentence pair(s) sharing a Latin or digit string with their translation "
                     "(--anchors apart reports them apart, --anchors keep keeps them)")
    return out


_PAIR_KEYS = ("pair", "pair_id", "id")


def _file_item(row: dict, where: str) -> Item:
    from bvvlab.corpus.sources import guess_lang

    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ProbeError(f"{where}: no text (each row needs a non-empty 'text' field)")
    try:
        check_text(text, "its text")
    except BVVError as exc:
        raise ProbeError(f"{where}: {exc}") from None
    pair = next((str(row[k]) for k in _PAIR_KEYS if row.get(k) not in (None, "")), "")
    return Item(text, str(row.get("lang") or guess_lang(text)), pair, str(row.get("label") or ""),
                str(row.get("group") or ""), str(row.get("heldout", "")).lower() in ("1", "true", "yes"), "file")


def file_items(path: str | os.PathLike) -> list[Item]:
    """Items from a CSV (header row: text[, label, lang, pair]) or a JSON-lines file (objects
    with those keys). Missing lang: guessed from the script; missing pair: no translation."""
    p = Path(path)
    if not p.is_file():
        raise ProbeError(f"{p}: no such file (--items takes concepts, lemmas, sentences, a .csv or a .jsonl file)")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ProbeError(f"{p} is not UTF-8 text") from None
    items = []
    if p.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames or "text" not in reader.fieldnames:
            raise ProbeError(f"{p}: the CSV needs a header row with a 'text' column (and optional label, lang, pair)")
        items = [_file_item(r, f"{p} row {i + 2}") for i, r in enumerate(reader)]
    elif p.suffix.lower() in (".jsonl", ".json"):
        for i, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise ProbeError(f"{p} line {i + 1} is not JSON (one object per line: text, label, lang, pair)") from None
            if not isinstance(row, dict):
                raise ProbeError(f"{p} line {i + 1}: expected a JSON object with a 'text' field")
            items.append(_file_item(row, f"{p} line {i + 1}"))
    else:
        raise ProbeError(f"{p}: unknown item file type {p.suffix!r}: use .csv or .jsonl")
    if not items:
        raise ProbeError(f"{p} holds no items")
    return items


def resolve_heldout(heldout: str | Iterable[str], checkpoints: Sequence[str | os.PathLike] = ()) -> list[str]:
    """`"auto"`: what the checkpoints' training held out (they must agree; models that record no
    training, e.g. an untrained twin, are skipped); `"suite"`: `concepts.suite_holdout()`; `""`:
    none; a comma-separated string or a list: those ids."""
    if isinstance(heldout, str) and heldout.strip() == "auto":
        found = {str(c): h for c in checkpoints if (h := trained_holdout(c)) is not None}
        if len({tuple(h) for h in found.values()}) > 1:
            raise ProbeError("the checkpoints were trained with different held-out concepts (" +
                             "; ".join(f"{c}: {len(h)}" for c, h in found.items()) +
                             "): probe them apart, or name the held-out set with --heldout suite|ID,ID")
        return next(iter(found.values()), [])
    parts = heldout.replace(",", " ").split() if isinstance(heldout, str) else list(heldout)
    try:
        return list(_concepts.parse_holdout(parts))
    except ValueError as exc:
        raise ProbeError(str(exc).replace("concepts?holdout=cat+dog", "--heldout cat,dog")) from None


def load_items(spec: str, heldout: Iterable[str] = (), limit: int | None = None, anchors: str = "drop",
               notes: list[str] | None = None) -> list[Item]:
    """`concepts` / `lemmas` (the concept lexicon's lemma items; the probe command reads
    `concepts` as words in context, `analysis.contexts`, over these same items), `sentences`
    (`sentence_items`: same-template galleries, `anchors`) or a file path."""
    if spec in ("concepts", "lemmas"):
        items = concept_items(heldout)
        if limit is None:
            return items
        ids = list(dict.fromkeys(it.pair for it in items))  # concepts, lexicon order (grouped by category)
        step = max(1, len(ids) // max(1, limit))
        keep = set(ids[::step][:limit]) | {it.pair for it in items if it.heldout}  # spread over categories
        return [it for it in items if it.pair in keep]
    if spec == "sentences":
        return sentence_items(250 if limit is None else limit, anchors, notes)
    return file_items(spec)


def check_translations(items: Sequence[Item], langs: tuple[str, str] = ("en", "ru")) -> None:
    """Every item with a pair id in one of `langs` needs an item of the other language with the
    same pair id; else one line naming the first offender."""
    have: dict[str, set[str]] = {}
    for it in items:
        if it.pair:
            have.setdefault(it.pair, set()).add(it.lang)
    lonely = [it for it in items if it.pair and it.lang in langs and not set(langs) <= have[it.pair]]
    if lonely:
        it = lonely[0]
        raise ProbeError(f"{len(lonely)} item(s) have no translation: {it.text!r} ({it.lang}, pair {it.pair!r}) has "
                         f"no {'/'.join(set(langs) - {it.lang})} item with the same pair id; add one or drop the pair id")
