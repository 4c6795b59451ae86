"""Instruction infusion (docs/recipe.md section 7 prompt formats) over training text only.

About 10% of the author's training text was in the evaluation prompt formats; this generator
makes such items from the *training* splits of the embedded corpora and the concept lexicon,
never from an evaluation text.
"""

from __future__ import annotations

import random
from typing import Iterator

from bvvlab.core.errors import CorpusError
from bvvlab.corpus import concepts as _concepts
from bvvlab.corpus.documents import Document
from bvvlab.corpus.parallel_text import PARALLEL_FILES, parallel_pairs, without_concepts

# ----------------------------------------------------------------------------- instructions


INSTRUCTION_DIRECTIONS = (("libreoffice-en-ru", "en", "ru"), ("libreoffice-en-ru", "ru", "en"),
                          ("libreoffice-en-zh", "en", "zh"), ("concepts", "en", "ru"), ("concepts", "ru", "en"))
_LANG_NAMES = {"en": "English", "ru": "Russian", "zh": "Chinese"}
# "Which of these is {...}?" per lexicon category: the instruction corpus and the offline suites
# (bvvlab.eval.suites) ask the same question
CATEGORY_QUESTIONS = {
    "animals": "an animal", "colours": "a color", "numbers": "a number", "family": "a family member",
    "people": "a word for a person", "food": "food or a drink", "body": "a part of the body", "places": "a place",
    "time": "a day, a month, a season or a time of day", "professions": "a profession", "verbs": "an action (a verb)",
    "adjectives": "a quality (an adjective)", "things": "a man-made object", "nature": "a thing in nature",
}
# categories a "Which of these is ...?" question must not mix (the distractor could also be right)
CONFUSABLE_CATEGORIES = ({"family", "people", "professions"}, {"colours", "adjectives"},
                         {"animals", "nature", "food", "things", "places"})


def eval_texts(concept_corpus: "_concepts.ConceptCorpus | None" = None) -> frozenset[str]:
    """Every text of every evaluation item: LibreOffice validation/test (all sides) and concept held-out sentences."""
    out = set((concept_corpus or _concepts.ConceptCorpus()).eval_texts())
    for name, (_, tgt) in PARALLEL_FILES.items():
        for split in ("validation", "test"):
            for r in parallel_pairs(name, split):
                out.update((r["en"], r[tgt]))
    return frozenset(out)


class InstructionCorpus:
    """Instruction infusion (docs/recipe.md section 7 prompt formats), training data only.

    Why: the author mixed about 10% of training text in the evaluation prompt formats so a small
    model learns what `Question: ... Options: ... Answer:` and `Translate from English to
    Russian:` ask for. Items:

    - translation requests `Translate from English to Russian:\\n{src}\\nAnswer: {tgt}` over
      LibreOffice *train* pairs (en->ru, ru->en, en->zh) and concept *training* sentences;
    - concept questions with four options in either layout of section 7 (MMLU: options on one
      line; ARC: one per line), `Answer: X`: the Russian word for an English one, the English
      word for a Russian one, "Which of these is an animal?" and so on, over concepts that are
      not held out.

    No item contains an evaluation text (checked against `eval_texts`), a held-out concept
    sentence, or a held-out concept.
    """

    def __init__(self, seed: int = 0, concepts: "_concepts.ConceptCorpus | None" = None,
                 question_share: float = 0.4, holdout_concepts: tuple[str, ...] | list[str] = ()) -> None:
        if concepts is not None and holdout_concepts:
            raise CorpusError("give holdout_concepts either to the ConceptCorpus or to InstructionCorpus, not both")
        self.seed = seed  # item order and choices
        # holdout rules come from here: pass the same ConceptCorpus (or holdout_concepts) as the training mix uses
        self.concepts = concepts or _concepts.ConceptCorpus(seed=seed, holdout_concepts=holdout_concepts)
        self.question_share = question_share  # share of items that are concept questions (rest: translations)

    def documents(self, split: str = "train") -> Iterator[Document]:
        if split != "train":
            raise CorpusError(f"instructions exist only for split 'train' (got {split!r}): evaluation prompts "
                              f"come from the validation/test splits of the other corpora")
        rng = random.Random(f"instructions:{self.seed}")
        banned = eval_texts(self.concepts)
        pools = {name: [r for r in without_concepts(parallel_pairs(name, "train"), name, self.concepts.holdout)
                        if r["en"] not in banned and r[PARALLEL_FILES[name][1]] not in banned]
                 for name in PARALLEL_FILES}
        concept_pairs = self.concepts.train_pairs(random.Random(f"instructions-pairs:{self.seed}"))
        words = [c for c in _concepts.LEXICON.values() if c.id not in self.concepts.holdout]
        while True:
            if rng.random() < self.question_share:
                doc = self._question(rng, words)
            else:
                source, src, tgt = rng.choice(INSTRUCTION_DIRECTIONS)
                if source == "concepts":
                    p = next(concept_pairs)
                    pair, ids = {"en": p.en, "ru": p.ru}, list(p.concepts)
                else:
                    pair, ids = rng.choice(pools[source]), []
                if pair[src] in banned or pair[tgt] in banned:
                    continue
                text = f"Translate from {_LANG_NAMES[src]} to {_LANG_NAMES[tgt]}:\n{pair[src]}\nAnswer: {pair[tgt]}"
                doc = Document(text, "-".join(sorted((src, tgt), key=["en", "ru", "zh"].index)), "instructions",
                               {"kind": "translation", "task": f"{src}->{tgt}", "from": source, "concepts": ids})
            if self.concepts.mentions is None or not self.concepts.mentions.search(doc.text):
                yield doc  # a question template's own words ("food or a drink") may spell a held-out concept

    @staticmethod
    def _options(rng: random.Random, answer: str, distractors: list[str]) -> tuple[str, str]:
        opts = [answer] + distractors
        rng.shuffle(opts)
        letter = "ABCD"[opts.index(answer)]
        if rng.random() < 0.5:  # MMLU layout
            return "Options: " + " ".join(f"{l}) {o}" for l, o in zip("ABCD", opts)), letter
        return "Options:\n" + "\n".join(f"{l}) {o}" for l, o in zip("ABCD", opts)), letter

    def _question(self, rng: random.Random, words: list) -> Document:
        kind = rng.choice(("ru_word", "en_word", "category"))
        c = rng.choice(words)
        if kind == "category":
            group = next((g for g in CONFUSABLE_CATEGORIES if c.category in g), {c.category})
            pool = [w for w in words if w.category not in group]
            distract = []
            while len(distract) < 3:
                w = rng.choice(pool)
                if _concepts.word_line(w)[0] not in distract + [_concepts.word_line(c)[0]]:
                    distract.append(_concepts.word_line(w)[0])
            q = f"Question: Which of these is {CATEGORY_QUESTIONS[c.category]}?"
            answer, lang, others = _concepts.word_line(c)[0], "en", distract
        else:
            side = 1 if kind == "ru_word" else 0
            en, ru = _concepts.word_line(c)
            pool = [w for w in words if w.pos == c.pos and w.category == c.category and w.id != c.id]
            if len(pool) < 3:
                pool = [w for w in words if w.pos == c.pos and w.id != c.id]
            # distractors must not be another correct answer: no shared English or Russian form
            others = []
            for w in rng.sample(pool, len(pool)):
                e, r = _concepts.word_line(w)
                if e != en and r != ru and (e, r)[side] not in others:
                    others.append((e, r)[side])
                if len(others) == 3:
                    break
            if kind == "ru_word":
                q, answer = f'Question: What is the Russian word for "{en}"?', ru
            else:
                q, answer = f'Question: What does the Russian word "{ru}" mean in English?', en
            lang = "en-ru"
        opts, letter = self._options(rng, answer, others)
        return Document(f"{q}\n{opts}\nAnswer: {letter}", lang, "instructions",
                        {"kind": "question", "task": kind, "concepts": [c.id], "answer": letter})


def training_weights(instruction_share: float = 0.10, base: dict[str, float] | None = None) -> dict[str, float]:
    """Mixture weights with `instruction_share` of the characters going to "instructions".

    `base` (default: equal LibreOffice en-ru and concepts) is scaled to the remaining share.
    """
    if not 0.0 <= instruction_share < 1.0:
        raise CorpusError(f"instruction_share must be in [0, 1), got {instruction_share}")
    base = base or {"libreoffice-en-ru": 1.0, "concepts": 1.0}
    total = sum(base.values())
    out = {k: (1.0 - instruction_share) * v / total for k, v in base.items()}
    if instruction_share > 0:
        out["instructions"] = instruction_share
    return out


