"""A glyph-disjoint clone of English: the positive control of the probes (issue 28).

Every English letter is mapped one-to-one onto a letter of a script that shares no glyph with
English or Russian (Armenian by default: upper and lower case, and in the recipe's "easy"
augmentation range like Latin and Cyrillic, so the clone's pictures get the same treatment).
The assignment is shuffled (seeded), so a clone letter does not look like the letter it stands
for. Digits, punctuation and spaces stay shared, as between real languages. Trained on English
mixed with its clone like a second language, a model has every reason to align the two, and
layer 0 cannot (no shared glyph): if the probe sees nothing on such a model, the probe or the
budget is at fault, not the claim (Dufter & Schuetze 2020, "Identifying elements essential for
BERT's multilinguality", fake-English).

`clone-en` is a corpus source (`bvvlab.corpus.sources`): English documents (LibreOffice help
English paragraphs and the concept generator's English sentences) and, drawn in an independent
order, the clones of such documents, tagged `CLONE_LANG`. Its vocabulary must hold the clones of
the English n-grams (`clone_ngrams`), or the clone is tokenised into single characters while
English gets 2-3 letter n-grams (issue 28, trap (a))."""

from __future__ import annotations

import random
import string
from typing import Iterator, Mapping

from bvvlab.core.errors import CorpusError
from bvvlab.corpus.documents import Document

CLONE_LANG = "enx"  # the clone's language tag (probe items, documents)
# (first lower-case code point, first upper-case code point, letters) per script with case pairs
SCRIPTS = {"armenian": (0x0561, 0x0531, 38)}
# the glyphs the clone may never use: English and Russian letters (the other languages of a run)
RESERVED = set(string.ascii_letters) | {chr(c) for c in range(0x0400, 0x0530)}


def clone_map(script: str = "armenian", seed: int = 0) -> dict[str, str]:
    """a-z and A-Z -> letters of `script`, a seeded shuffle, upper case onto the clone letter's
    own upper case (so capitalisation is cloned too)."""
    if script not in SCRIPTS:
        raise CorpusError(f"clone script {script!r} is unknown: use one of {', '.join(SCRIPTS)}")
    lo, up, n = SCRIPTS[script]
    pick = random.Random(f"clone:{script}:{seed}").sample(range(n), 26)
    out = {}
    for letter, k in zip(string.ascii_lowercase, pick):
        out[letter] = chr(lo + k)
        out[letter.upper()] = chr(up + k)
    return out


def check_clone_map(mapping: Mapping[str, str], reserved: set[str] | None = None) -> dict[str, str]:
    """`mapping` as a dict, checked: single characters both sides, one-to-one, and no clone glyph
    among the English letters or the other language's (`reserved`, default Latin + Cyrillic):
    one line naming the first offence."""
    reserved = RESERVED if reserved is None else set(reserved)
    m = dict(mapping)
    bad = next(((k, v) for k, v in m.items() if len(k) != 1 or not isinstance(v, str) or len(v) != 1), None)
    if bad is not None:
        raise CorpusError(f"clone mapping {bad[0]!r} -> {bad[1]!r}: map single characters to single characters")
    seen: dict[str, str] = {}
    for k, v in m.items():
        if v in seen:
            raise CorpusError(f"clone mapping is not one-to-one: {seen[v]!r} and {k!r} both map to {v!r} (U+{ord(v):04X}); "
                              "give every letter its own clone letter")
        seen[v] = k
    clash = next((v for v in m.values() if v in reserved or v in m), None)
    if clash is not None:
        raise CorpusError(f"clone letter {clash!r} (U+{ord(clash):04X}) is a glyph of English or the other language: "
                          "the clone must share no glyph with them (use a script such as Armenian)")
    return m


def clone_text(text: str, mapping: Mapping[str, str]) -> str:
    """`text` with every mapped letter replaced (everything else kept)."""
    return text.translate({ord(k): v for k, v in mapping.items()})


def clone_ngrams(ngrams, mapping: Mapping[str, str]) -> list[str]:
    """The clones of the n-grams made of mapped letters only: what the clone's vocabulary must add
    so the clone tokenises like English (issue 28, trap (a))."""
    return [clone_text(g, mapping) for g in ngrams if len(g) > 1 and all(ch in mapping for ch in g)]


class CloneCorpus:
    """English documents and, in an independent order, clones of English documents (`share` of
    the documents are clones). English text: LibreOffice help English paragraphs of `split`
    (without the held-out concepts' words) and groups of 8 concept-generator English sentences
    (training pairs for "train", the fixed held-out pairs otherwise)."""

    def __init__(self, seed: int = 0, holdout_concepts=(), share: float = 0.5, script: str = "armenian",
                 concept_share: float = 0.5) -> None:
        self.seed, self.share, self.concept_share = seed, float(share), float(concept_share)
        self.holdout = tuple(holdout_concepts)
        self.mapping = check_clone_map(clone_map(script, 0))

    def _english(self, split: str, seed: int) -> Iterator[str]:
        from bvvlab.corpus import concepts as C
        from bvvlab.corpus.parallel_text import parallel_pairs

        rng = random.Random(seed)
        pat = C.mention_pattern(self.holdout)
        paras = [r["en"] for r in parallel_pairs("libreoffice-en-ru", split) if pat is None or not pat.search(r["en"])]
        if split == "train":
            corpus = C.ConceptCorpus(seed=seed, holdout_concepts=self.holdout)
            sents = (p.en for p in corpus.train_pairs(random.Random(seed + 1)))
        else:
            sents = iter([p.en for p in C.eval_pairs(split)] if split in C.EVAL_SIZES else [])
        order = list(range(len(paras)))
        rng.shuffle(order)
        i = 0
        while True:
            if rng.random() < self.concept_share:
                group = [s for _, s in zip(range(8), sents)]
                if group:
                    yield " ".join(group)
                    continue
            if i >= len(order):
                if split != "train":
                    return
                rng.shuffle(order)
                i = 0
            yield paras[order[i]]
            i += 1

    def documents(self, split: str = "train") -> Iterator[Document]:
        en = self._english(split, self.seed * 2 + 1)
        cl = self._english(split, self.seed * 2 + 2)
        rng = random.Random(f"clone-mix:{self.seed}")
        for n in range(10 ** 12):
            try:
                if rng.random() < self.share:
                    yield Document(clone_text(next(cl), self.mapping), CLONE_LANG, "clone-en", {"split": split, "kind": "clone"})
                else:
                    yield Document(next(en), "en", "clone-en", {"split": split, "kind": "english"})
            except StopIteration:
                return
