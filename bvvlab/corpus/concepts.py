"""A bilingual (English-Russian) concept corpus: controlled data with known labels.

Why (issue 2, "The embedded corpora" 2): probing, fusion and evaluation need text whose
content is known exactly: which concepts each sentence mentions, in which language, and
which sentences a model has never seen. This module reads a hand-written lexicon of concepts
(`LEXICON`, 14 `CATEGORIES`; the words are data in data/concepts/) and holds the templates that
turn it into

- parallel sentence pairs ("The cat sleeps." / "Кошка спит."),
- word-translation lines ("cat — кошка"),
- monolingual documents (several sentences in one language),

mixed by `parallel_ratio`, deterministic from a seed and unbounded.

Russian grammar: every Russian form a template uses is stored explicitly in the lexicon
(noun case forms nom/acc/gen and nom/gen plural with gender; adjective forms by gender,
number and the accusative; verb person/number and past-tense gender forms; the case a numeral
governs; the full "where"/"when" phrase with its preposition). Templates only pick stored
forms, so agreement is decided by data written and checked by hand, never by suffix rules.

Held-out evaluation data: a sentence pair is held out when a hash of its English or its
Russian text falls in the first `HOLDOUT_PERCENT` buckets (of 100); its English bucket says
which eval split it belongs to (< 2: "test", < 4: "validation"). The rule is fixed (it does not
depend on the seed), so the held-out set is the same for every run, and training output
never contains a held-out English or Russian sentence. Optionally whole concepts are held out
(`holdout_concepts`): training then never mentions them (not in sentences, not in word
lines), and the "test" split adds sentences that contain them.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from bvvlab.core.errors import CorpusError
from bvvlab.core.runinfo import embedded_data_dir
from bvvlab.corpus.documents import Document

# ----------------------------------------------------------------------------- lexicon

CATEGORIES: tuple[str, ...] = (
    "animals", "colours", "numbers", "family", "people", "food", "body", "places", "time",
    "professions", "verbs", "adjectives", "things", "nature",
)
ANIMATE = ("animals", "family", "people", "professions")  # nouns that can be a sentence subject
HUMAN = ("family", "people", "professions")


@dataclass(frozen=True, eq=False)
class Concept:
    """One lexicon entry with every English and Russian form the templates use."""

    id: str  # unique id, e.g. "cat" (an English lemma, disambiguated where needed: "orange_fruit")
    category: str  # one of CATEGORIES
    pos: str  # "noun" | "adj" | "verb" | "num"
    en: dict[str, str]  # English forms by name (noun: sg, pl, det; adj: base; verb: base, 3sg, past; ...)
    ru: dict[str, str]  # Russian forms by name (noun: gender, nom, acc, gen, nom_pl, gen_pl; ...)
    applies: tuple[str, ...] = ()  # adjectives/verbs: noun categories they combine with

    @property
    def en_lemma(self) -> str:
        return self.en["sg"] if self.pos == "noun" else self.en["base"]

    @property
    def ru_lemma(self) -> str:
        return self.ru[{"noun": "nom", "adj": "m", "verb": "inf", "num": "m"}[self.pos]]

    @property
    def countable(self) -> bool:
        return self.pos == "noun" and self.en["det"] in ("a", "an") and self.ru.get("nom_pl", "-") != "-"


# The words are data: data/concepts/ holds one tab-separated file per part of speech (its README
# gives the format, the Russian forms each column holds and their provenance). This module only
# reads them; the templates below pick stored forms and never inflect a word themselves.
LEXICON_DIR = embedded_data_dir() / "concepts"  # the shipped lexicon (never `BVVLAB_DATA`: it defines the corpus)
LEXICON_COLUMNS: dict[str, tuple[str, tuple[str, ...]]] = {  # part of speech -> (file, its header)
    "noun": ("nouns.tsv", ("id", "category", "en_sg", "en_pl", "en_det", "ru_gender", "ru_nom", "ru_acc", "ru_gen",
                           "ru_nom_pl", "ru_gen_pl", "en_loc", "ru_loc", "en_when", "ru_when")),
    "adj": ("adjectives.tsv", ("id", "category", "en_base", "ru_m", "ru_f", "ru_n", "ru_pl", "ru_acc_f", "ru_gen_m",
                               "applies")),
    "verb": ("verbs.tsv", ("id", "category", "en_base", "en_3sg", "en_past", "ru_inf", "ru_1sg", "ru_3sg", "ru_3pl",
                           "ru_past_m", "ru_past_f", "ru_past_pl", "applies")),
    "num": ("numerals.tsv", ("id", "category", "en_base", "ru_m", "ru_f", "ru_n", "ru_governs")),
}
LEXICON_FILES: tuple[Path, ...] = tuple(LEXICON_DIR / name for name, _ in LEXICON_COLUMNS.values())
_PHRASES = ("en_loc", "ru_loc", "en_when", "ru_when")  # a noun's "where"/"when" phrase: an empty cell means none
_MAY_BE_EMPTY = ("en_det", "applies") + _PHRASES  # an empty en_det: no article ("bread", "Monday")

_GROUPS = {"animate": ANIMATE, "human": HUMAN}  # what an `applies` cell may name besides a category or an id
DRINKS = frozenset({"milk", "water", "tea", "coffee", "juice"})  # food the templates drink, not eat
DAYS = frozenset({"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"})
NEEDS_PLACE = frozenset({"live"})  # verbs only said with a place ("I live in the city")


def _lexicon_error(path: Path, problem: str) -> CorpusError:
    return CorpusError(f"{path}: {problem}; see {LEXICON_DIR / 'README.md'} for the format, or restore the file "
                       "from the bvvlab source")


def _read_rows(path: Path, columns: tuple[str, ...]) -> Iterator[dict[str, str]]:
    """The rows of one lexicon file as {column: cell}, checked: the header, no cell missing (trailing
    empty cells may be left out), no tab too many. Blank lines are skipped."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or tuple(lines[0].split("\t")) != columns:
        raise _lexicon_error(path, "the first line must be the tab-separated header " + " ".join(columns))
    for number, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) > len(columns):
            raise _lexicon_error(path, f"line {number} has {len(cells)} cells, the header {len(columns)}")
        row = dict(zip(columns, cells + [""] * (len(columns) - len(cells))))
        empty = [c for c in columns if not row[c] and c not in _MAY_BE_EMPTY]
        if empty:
            raise _lexicon_error(path, f"line {number} has no {', '.join(empty)}")
        yield row


def read_lexicon(directory: Path = LEXICON_DIR) -> dict[str, Concept]:
    """Every concept of the lexicon files in `directory`, in file order (nouns, adjectives, verbs,
    numerals). A column `en_X`/`ru_X` becomes the form X of that language; `applies` names noun
    categories, concept ids or `_GROUPS`, expanded to categories and ids."""
    lexicon: dict[str, Concept] = {}
    for pos, (name, columns) in LEXICON_COLUMNS.items():
        path = Path(directory) / name
        for row in _read_rows(path, columns):
            if row["id"] in lexicon:
                raise _lexicon_error(path, f"the concept id {row['id']!r} is used twice")
            if row["category"] not in CATEGORIES:
                raise _lexicon_error(path, f"{row['id']}: unknown category {row['category']!r} (one of {', '.join(CATEGORIES)})")
            forms = {lang: {c[3:]: v for c, v in row.items() if c.startswith(lang + "_") and (v or c not in _PHRASES)}
                     for lang in ("en", "ru")}
            applies = tuple(dict.fromkeys(x for word in row.get("applies", "").split() for x in _GROUPS.get(word, (word,))))
            lexicon[row["id"]] = Concept(row["id"], row["category"], pos, forms["en"], forms["ru"], applies)
    for c in lexicon.values():
        unknown = [x for x in c.applies if x not in CATEGORIES and x not in lexicon]
        if unknown:
            raise _lexicon_error(Path(directory), f"{c.id} applies to unknown {unknown}")
    return lexicon


LEXICON: dict[str, Concept] = read_lexicon()

_POSSESSIVE = {"m": "мой", "f": "моя", "n": "моё"}


def word_line(c: Concept) -> tuple[str, str]:
    """The word-translation line's two sides ("cat", "кошка"; verbs as "to sleep", "спать")."""
    return ("to " + c.en_lemma if c.pos == "verb" else c.en_lemma), c.ru_lemma


# ----------------------------------------------------------------------------- templates


@dataclass(frozen=True)
class Pair:
    """One parallel sentence pair with its labels."""

    en: str  # English sentence
    ru: str  # Russian sentence
    concepts: tuple[str, ...]  # ids of the lexicon concepts it mentions (slot fillers only)
    template: str  # name of the template that made it


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _a(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _np_en(n: Concept, adj: Concept | None = None) -> str:
    """English indefinite noun phrase: "a cat", "an old cat", "bread", "cold milk", "the sun"."""
    words = (adj.en["base"] + " " if adj else "") + n.en["sg"]
    det = n.en["det"]
    if det in ("a", "an"):
        det = _a(words)
    return f"{det} {words}".strip()


def _adj_nom(a: Concept, n: Concept) -> str:
    return a.ru[n.ru["gender"]]


def _adj_acc(a: Concept, n: Concept) -> str:
    g = n.ru["gender"]
    if g == "f":
        return a.ru["acc_f"]
    if g == "m" and n.category in ANIMATE:
        return a.ru["gen_m"]
    return a.ru[g]


def _past(v: Concept, n: Concept) -> str:
    return v.ru["past_" + n.ru["gender"]]


class _Pools:
    """Concept pools for the templates, without the excluded (held-out) concepts."""

    def __init__(self, exclude: frozenset[str]) -> None:
        ok = [c for c in LEXICON.values() if c.id not in exclude]
        self.nouns = [c for c in ok if c.pos == "noun" and c.category != "time"]
        self.subjects = [c for c in self.nouns if c.category in ANIMATE]
        self.humans = [c for c in self.nouns if c.category in HUMAN]
        self.countable = [c for c in self.nouns if c.countable]
        self.have = [c for c in self.countable if c.category in ("animals", "family", "people", "things", "food", "body")]
        self.there = [c for c in self.countable if c.category in ("animals", "people", "professions", "things", "food", "nature")]
        self.places = [c for c in self.nouns if c.category == "places"]
        self.food = [c for c in self.nouns if c.category == "food" and c.id not in DRINKS]
        self.drinks = [c for c in self.nouns if c.id in DRINKS]
        self.days = [c for c in ok if c.id in DAYS]
        self.periods = [c for c in ok if c.category == "time" and c.id not in DAYS]
        self.when = [c for c in ok if c.category == "time"]
        self.adjs = [c for c in ok if c.pos == "adj"]
        self.verbs = [c for c in ok if c.pos == "verb"]
        self.bare_verbs = [v for v in self.verbs if v.id not in NEEDS_PLACE]
        self.nums = [c for c in ok if c.pos == "num"]
        self.eat = LEXICON["eat"] if "eat" not in exclude else None
        self.drink = LEXICON["drink"] if "drink" not in exclude else None
        # (adjective, noun) combinations allowed by `applies`; mass nouns only with food adjectives
        self.adj_noun = [(a, n) for a in self.adjs for n in self.nouns
                         if (n.category in a.applies or n.id in a.applies) and (n.en["det"] != "" or n.category == "food")]
        self.adj_noun_indef = [(a, n) for a, n in self.adj_noun if n.en["det"] != "the"]  # "a red cat", "cold milk"
        self.adj_noun_pl = [(a, n) for a, n in self.adj_noun if n.countable]
        # (subject, verb) combinations allowed by the verb's subject categories
        self.subj_verb = [(s, v) for v in self.verbs for s in self.subjects if s.category in v.applies]
        self.subj_bare_verb = [(s, v) for s, v in self.subj_verb if v.id not in NEEDS_PLACE]
        self.kin_verb = [(s, v) for s, v in self.subj_bare_verb if s.category in ("family", "people")]


def _choice(rng: random.Random, items: list):
    return rng.choice(items) if items else None


def _t_this_is(rng, P):
    n = _choice(rng, P.nouns)
    if n is None:
        return None
    return Pair(f"This is {_np_en(n)}.", f"Это {n.ru['nom']}.", (n.id,), "this_is")


def _t_this_is_adj(rng, P):
    an = _choice(rng, P.adj_noun_indef)
    if an is None:
        return None
    a, n = an
    return Pair(f"This is {_np_en(n, a)}.", f"Это {_adj_nom(a, n)} {n.ru['nom']}.", (a.id, n.id), "this_is_adj")


def _t_is_adj(rng, P):
    an = _choice(rng, P.adj_noun)
    if an is None:
        return None
    a, n = an
    return Pair(f"The {n.en['sg']} is {a.en['base']}.", f"{_cap(n.ru['nom'])} {_adj_nom(a, n)}.", (n.id, a.id), "is_adj")


def _t_are_adj(rng, P):
    an = _choice(rng, P.adj_noun_pl)
    if an is None:
        return None
    a, n = an
    return Pair(f"The {n.en['pl']} are {a.en['base']}.", f"{_cap(n.ru['nom_pl'])} {a.ru['pl']}.", (n.id, a.id), "are_adj")


def _t_see(rng, P):
    n = _choice(rng, P.nouns)
    if n is None:
        return None
    return Pair(f"I see {_np_en(n)}.", f"Я вижу {n.ru['acc']}.", (n.id,), "see")


def _t_see_adj(rng, P):
    an = _choice(rng, P.adj_noun_indef)
    if an is None:
        return None
    a, n = an
    return Pair(f"I see {_np_en(n, a)}.", f"Я вижу {_adj_acc(a, n)} {n.ru['acc']}.", (a.id, n.id), "see_adj")


def _t_subj_verb(rng, P):
    sv = _choice(rng, P.subj_bare_verb)
    if sv is None:
        return None
    s, v = sv
    return Pair(f"The {s.en['sg']} {v.en['3sg']}.", f"{_cap(s.ru['nom'])} {v.ru['3sg']}.", (s.id, v.id), "subj_verb")


def _t_subj_verb_pl(rng, P):
    sv = _choice(rng, P.subj_bare_verb)
    if sv is None:
        return None
    s, v = sv
    return Pair(f"The {s.en['pl']} {v.en['base']}.", f"{_cap(s.ru['nom_pl'])} {v.ru['3pl']}.", (s.id, v.id), "subj_verb_pl")


def _t_subj_verb_past(rng, P):
    sv = _choice(rng, P.subj_bare_verb)
    if sv is None:
        return None
    s, v = sv
    return Pair(f"The {s.en['sg']} {v.en['past']}.", f"{_cap(s.ru['nom'])} {_past(v, s)}.", (s.id, v.id), "subj_verb_past")


def _t_i_verb(rng, P):
    if not P.bare_verbs:
        return None
    v = rng.choice(P.bare_verbs)
    return Pair(f"I {v.en['base']}.", f"Я {v.ru['1sg']}.", (v.id,), "i_verb")


def _t_want(rng, P):
    if not P.bare_verbs:
        return None
    v = rng.choice(P.bare_verbs)
    return Pair(f"I want to {v.en['base']}.", f"Я хочу {v.ru['inf']}.", (v.id,), "want")


def _t_verb_when(rng, P):
    sv = _choice(rng, P.subj_bare_verb)
    if sv is None or not P.when:
        return None
    s, v = sv
    t = rng.choice(P.when)
    return Pair(f"The {s.en['sg']} {v.en['3sg']} {t.en['when']}.", f"{_cap(s.ru['nom'])} {v.ru['3sg']} {t.ru['when']}.",
                (s.id, v.id, t.id), "verb_when")


def _t_past_when(rng, P):
    sv = _choice(rng, P.subj_bare_verb)
    if sv is None or not P.when:
        return None
    s, v = sv
    t = rng.choice(P.when)
    return Pair(f"The {s.en['sg']} {v.en['past']} {t.en['when']}.", f"{_cap(s.ru['nom'])} {_past(v, s)} {t.ru['when']}.",
                (s.id, v.id, t.id), "past_when")


def _t_is_at(rng, P):
    if not P.subjects or not P.places:
        return None
    s, p = rng.choice(P.subjects), rng.choice(P.places)
    return Pair(f"The {s.en['sg']} is {p.en['loc']}.", f"{_cap(s.ru['nom'])} {p.ru['loc']}.", (s.id, p.id), "is_at")


def _t_verb_at(rng, P):
    sv = _choice(rng, P.subj_verb)
    if sv is None or not P.places:
        return None
    s, v = sv
    p = rng.choice(P.places)
    return Pair(f"The {s.en['sg']} {v.en['3sg']} {p.en['loc']}.", f"{_cap(s.ru['nom'])} {v.ru['3sg']} {p.ru['loc']}.",
                (s.id, v.id, p.id), "verb_at")


def _t_eats(rng, P):
    options = [(P.eat, P.food), (P.drink, P.drinks)]
    options = [(v, objs) for v, objs in options if v is not None and objs]
    if not options or not P.subjects:
        return None
    v, objs = rng.choice(options)
    s, o = rng.choice(P.subjects), rng.choice(objs)
    return Pair(f"The {s.en['sg']} {v.en['3sg']} {_np_en(o)}.", f"{_cap(s.ru['nom'])} {v.ru['3sg']} {o.ru['acc']}.",
                (s.id, v.id, o.id), "eats")


def _t_like(rng, P):
    foods = P.food + P.drinks
    if not foods:
        return None
    o = rng.choice(foods)
    if o.countable:  # "I like apples" / "Я люблю яблоки" (inanimate accusative plural = nominative plural)
        return Pair(f"I like {o.en['pl']}.", f"Я люблю {o.ru['nom_pl']}.", (o.id,), "like")
    return Pair(f"I like {o.en['sg']}.", f"Я люблю {o.ru['acc']}.", (o.id,), "like")


def _count_phrase(num: Concept, n: Concept) -> tuple[str, str]:
    en = f"{num.en['base']} {n.en['sg'] if num.id == 'one' else n.en['pl']}"
    case = num.ru["governs"]
    noun = n.ru["nom"] if case == "nom" else n.ru["gen"] if case == "gen" else n.ru["gen_pl"]
    return en, f"{num.ru[n.ru['gender']]} {noun}"


def _t_have(rng, P):
    if not P.nums or not P.have:
        return None
    num, n = rng.choice(P.nums), rng.choice(P.have)
    en, ru = _count_phrase(num, n)
    return Pair(f"I have {en}.", f"У меня есть {ru}.", (num.id, n.id), "have")


def _t_there(rng, P):
    if not P.nums or not P.there:
        return None
    num, n = rng.choice(P.nums), rng.choice(P.there)
    en, ru = _count_phrase(num, n)
    verb = "is" if num.id == "one" else "are"
    return Pair(f"There {verb} {en} here.", f"Здесь {ru}.", (num.id, n.id), "there")


def _t_today(rng, P):
    if not P.days:
        return None
    d = rng.choice(P.days)
    return Pair(f"Today is {d.en['sg']}.", f"Сегодня {d.ru['nom']}.", (d.id,), "today")


def _t_now(rng, P):
    if not P.periods:
        return None
    t = rng.choice(P.periods)
    return Pair(f"It is {t.en['sg']} now.", f"Сейчас {t.ru['nom']}.", (t.id,), "now")


def _t_my(rng, P):
    sv = _choice(rng, P.kin_verb)
    if sv is None:
        return None
    s, v = sv
    return Pair(f"My {s.en['sg']} {v.en['3sg']}.", f"{_cap(_POSSESSIVE[s.ru['gender']])} {s.ru['nom']} {v.ru['3sg']}.",
                (s.id, v.id), "my")


TEMPLATES: dict[str, Callable[[random.Random, _Pools], Pair | None]] = {
    f.__name__[3:]: f for f in (
        _t_this_is, _t_this_is_adj, _t_is_adj, _t_are_adj, _t_see, _t_see_adj, _t_subj_verb, _t_subj_verb_pl,
        _t_subj_verb_past, _t_i_verb, _t_want, _t_verb_when, _t_past_when, _t_is_at, _t_verb_at, _t_eats,
        _t_like, _t_have, _t_there, _t_today, _t_now, _t_my)
}


def sample_pair(rng: random.Random, pools: _Pools) -> Pair:
    """One sentence pair from a uniformly chosen template (templates without fillers are skipped)."""
    names = list(TEMPLATES)
    while True:
        pair = TEMPLATES[rng.choice(names)](rng, pools)
        if pair is not None:
            return pair


# ----------------------------------------------------------------------------- held-out rule

HOLDOUT_PERCENT = 4  # buckets 0..3 of 100 are held out: 0-1 "test", 2-3 "validation" (by the English text)
EVAL_SIZES = {"validation": 500, "test": 1000}  # fixed eval set sizes (sentence pairs)
HOLDOUT_SEED = 20261128  # fixed: the eval sets never depend on a user's seed
HOLDOUT_CONCEPT_SENTENCES = 20  # extra "test" pairs per held-out concept


def bucket(text: str) -> int:
    """Stable hash bucket 0..99 of a sentence (BLAKE2b; independent of PYTHONHASHSEED)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big") % 100


def heldout_split(pair: Pair) -> str | None:
    """"test"/"validation" for a held-out pair, "excluded" if only its Russian side is held out, else None."""
    b = bucket(pair.en)
    if b < 2:
        return "test"
    if b < HOLDOUT_PERCENT:
        return "validation"
    return "excluded" if bucket(pair.ru) < HOLDOUT_PERCENT else None


SUITE_HOLDOUT_PERCENT = 10  # concepts whose id hashes into bucket < 10 (about 10%): the "suite" holdout
_NOT_FORMS = ("gender", "det", "governs")  # lexicon keys that hold no word of the concept
_FUNCTION_WORDS = frozenset("a an the to in on at of for в во на у к с о об по за".split())


def word_forms(c: Concept) -> frozenset[str]:
    """Every lower-case English and Russian word the lexicon spells `c` with (the words of its
    "in the kitchen" / "на кухне" phrases, less the prepositions and articles)."""
    out: set[str] = set()
    for key, v in list(c.en.items()) + list(c.ru.items()):
        if key not in _NOT_FORMS and v != "-":
            out |= {w for w in v.lower().split() if w not in _FUNCTION_WORDS}
    return frozenset(out)


def holdout_closure(ids) -> tuple[str, ...]:
    """`ids` and every concept spelt with one of their words: holding out the colour "orange"
    must also hold out the fruit "orange", or training would print the held-out word."""
    ids = set(ids)
    words = set().union(*(word_forms(LEXICON[c]) for c in ids)) if ids else set()
    return tuple(sorted(ids | {c.id for c in LEXICON.values() if word_forms(c) & words}))


def suite_holdout() -> list[str]:
    """The concepts the offline evaluation suites and the probes call held out (about 10%, by a
    hash of the id, closed over shared spellings): train with `concepts?holdout=suite` and the
    generated text never mentions them."""
    return list(holdout_closure(c for c in LEXICON if bucket(c) < SUITE_HOLDOUT_PERCENT))


class Mentions:
    """Does a text spell one of `words`? Whole words, case-insensitive: the text's maximal runs of
    word characters, lower-cased, against the set (what a `(?<!\\w)(?:w1|w2|...)(?!\\w)` regex
    would find, without its alternation's cost: 7x faster over the LibreOffice pairs)."""

    _WORD = re.compile(r"\w+")

    def __init__(self, words) -> None:
        self.words = frozenset(w.lower() for w in words)

    def search(self, text: str) -> str | None:
        """The first held-out word (alphabetically) that `text` spells, or None."""
        hit = self.words.intersection(self._WORD.findall(text.lower()))
        return min(hit) if hit else None


def mention_pattern(ids) -> Mentions | None:
    """A whole-word, case-insensitive test (`.search(text)`) for every word form of the concepts
    `ids` (None for none): what a filter of free text (the LibreOffice pairs) drops."""
    words = set().union(*(word_forms(LEXICON[c]) for c in ids)) if ids else set()
    return Mentions(words) if words else None


def parse_holdout(value: "str | list[str] | tuple[str, ...]") -> tuple[str, ...]:
    """`"suite"`, `"cat dog"` / `"cat;dog"` (a corpus spec's `holdout=` value) or a list of ids ->
    sorted concept ids, each checked against `LEXICON`."""
    if isinstance(value, str):
        parts = [p for p in value.replace(";", " ").replace("+", " ").split() if p]
    else:
        parts = [str(p) for p in value]
    ids: set[str] = set()
    for part in parts:
        ids |= set(suite_holdout()) if part == "suite" else {part}
    unknown = sorted(ids - set(LEXICON))
    if unknown:
        raise ValueError(f"unknown concept id(s) {unknown[:5]} in holdout: use 'suite' or ids from "
                         "bvvlab.corpus.concepts.LEXICON, e.g. concepts?holdout=cat+dog")
    return holdout_closure(ids)


@functools.lru_cache(maxsize=None)
def _pools(exclude: frozenset[str]) -> _Pools:
    return _Pools(exclude)


@functools.lru_cache(maxsize=4)
def eval_pairs(split: str) -> tuple[Pair, ...]:
    """The fixed held-out sentence pairs of "validation" or "test" (deterministic, seed-free)."""
    if split not in EVAL_SIZES:
        raise ValueError(f"unknown concept eval split {split!r}: use 'validation' or 'test'")
    rng, pools = random.Random(f"{HOLDOUT_SEED}:{split}"), _pools(frozenset())
    out: dict[str, Pair] = {}
    while len(out) < EVAL_SIZES[split]:
        p = sample_pair(rng, pools)
        if heldout_split(p) == split:
            out.setdefault(p.en, p)
    return tuple(out.values())


# ----------------------------------------------------------------------------- documents


@dataclass
class ConceptConfig:
    """How the concept corpus is generated (saved with any run that uses it)."""

    seed: int = 0  # generator seed: same seed, same documents
    parallel_ratio: float = 0.5  # share of documents that are parallel (pairs or word lines); the rest monolingual
    word_share: float = 0.2  # of the parallel documents, the share that are word-translation lists
    holdout_concepts: tuple[str, ...] = ()  # concept ids never shown in training (added to "test")
    max_sentences: int = 4  # sentences (or lines) per document: 1..max_sentences
    monolingual_langs: tuple[str, ...] = ("en", "ru")  # languages of the monolingual documents


class ConceptCorpus:
    """Deterministic, unbounded documents over `LEXICON`; see the module docstring.

    `documents("train")` never ends; "validation" and "test" are the fixed held-out sets
    (`eval_pairs`), as parallel documents, plus (test only) pairs with `holdout_concepts`.
    Every document has `meta = {"kind", "concepts", "sentences": [{"text", "lang", "concepts",
    "template"}]}`; parallel text is rendered one sentence per line, English line first.
    """

    def __init__(self, seed: int = 0, parallel_ratio: float = 0.5, holdout_concepts: tuple[str, ...] | list[str] = (),
                 **kw) -> None:
        self.config = ConceptConfig(seed=seed, parallel_ratio=parallel_ratio,
                                    holdout_concepts=tuple(holdout_concepts), **kw)
        unknown = [c for c in self.config.holdout_concepts if c not in LEXICON]
        if unknown:
            raise ValueError(f"unknown concept id(s) {unknown}: use ids from bvvlab.corpus.concepts.LEXICON")
        if not 0.0 <= parallel_ratio <= 1.0:
            raise ValueError(f"parallel_ratio must be in [0, 1], got {parallel_ratio}")
        self.holdout = frozenset(holdout_closure(self.config.holdout_concepts))  # shared spellings too
        self.pools = _pools(self.holdout)
        self.mentions = mention_pattern(self.holdout)  # any word form of a held-out concept

    # -- training stream
    def train_pairs(self, rng: random.Random) -> Iterator[Pair]:
        """Training sentence pairs: never held out, never with a held-out concept."""
        while True:
            p = sample_pair(rng, self.pools)
            if heldout_split(p) is None and not (self.mentions and (self.mentions.search(p.en)
                                                                   or self.mentions.search(p.ru))):
                yield p

    def documents(self, split: str = "train") -> Iterator[Document]:
        if split != "train":
            yield from (self._parallel_doc([p], "heldout") for p in self.eval_split(split))
            return
        # the guarantee: no training document spells a word form of a held-out concept (a
        # template's own words included)
        yield from (d for d in self._train_documents() if not (self.mentions and self.mentions.search(d.text)))

    def _train_documents(self) -> Iterator[Document]:
        cfg = self.config
        rng = random.Random(f"concepts:{cfg.seed}")
        pairs = self.train_pairs(rng)
        words = [c for c in LEXICON.values() if c.id not in self.holdout]
        while True:
            k = rng.randint(1, cfg.max_sentences)
            if rng.random() < cfg.parallel_ratio:
                if rng.random() < cfg.word_share:
                    chosen = rng.sample(words, k)
                    lines = [word_line(c) for c in chosen]
                    yield Document("\n".join(f"{e} — {r}" for e, r in lines), "en-ru", "concepts",
                                   {"kind": "words", "concepts": sorted({c.id for c in chosen}),
                                    "en": "\n".join(e for e, _ in lines), "ru": "\n".join(r for _, r in lines),
                                    "sentences": [{"text": f"{e} — {r}", "lang": "en-ru", "concepts": [c.id],
                                                   "template": "word"} for (e, r), c in zip(lines, chosen)]})
                else:
                    yield self._parallel_doc([next(pairs) for _ in range(k)], "parallel")
            else:
                lang = rng.choice(cfg.monolingual_langs)
                sents = [next(pairs) for _ in range(k)]
                texts = [getattr(p, lang) for p in sents]
                yield Document(" ".join(texts), lang, "concepts",
                               {"kind": "monolingual", "concepts": sorted({c for p in sents for c in p.concepts}),
                                "sentences": [{"text": t, "lang": lang, "concepts": list(p.concepts),
                                               "template": p.template} for t, p in zip(texts, sents)]})

    @staticmethod
    def _parallel_doc(pairs: list[Pair], kind: str) -> "Document":
        sentences = []
        for p in pairs:
            sentences += [{"text": p.en, "lang": "en", "concepts": list(p.concepts), "template": p.template},
                          {"text": p.ru, "lang": "ru", "concepts": list(p.concepts), "template": p.template}]
        # meta "en"/"ru": each side alone (as the LibreOffice documents carry them)
        return Document("\n".join(s["text"] for s in sentences), "en-ru", "concepts",
                        {"kind": kind, "concepts": sorted({c for p in pairs for c in p.concepts}), "sentences": sentences,
                         "en": "\n".join(p.en for p in pairs), "ru": "\n".join(p.ru for p in pairs)})

    # -- evaluation
    def eval_split(self, split: str) -> list[Pair]:
        """Fixed held-out pairs; "test" also gets up to HOLDOUT_CONCEPT_SENTENCES pairs per held-out concept."""
        if split not in EVAL_SIZES:
            raise ValueError(f"unknown split {split!r} for concepts: use 'train', 'validation' or 'test'")
        out = list(eval_pairs(split))
        if split == "test" and self.holdout:
            out += self._holdout_concept_pairs()
        return out

    def _holdout_concept_pairs(self) -> list[Pair]:
        rng, pools = random.Random(f"{HOLDOUT_SEED}:concepts"), _pools(frozenset())
        need = {c: HOLDOUT_CONCEPT_SENTENCES for c in sorted(self.holdout)}
        seen = {p.en for p in eval_pairs("test")}
        out: list[Pair] = []
        for _ in range(400_000):
            if not any(need.values()):
                break
            p = sample_pair(rng, pools)
            hit = [c for c in p.concepts if need.get(c)]
            if hit and p.en not in seen and heldout_split(p) != "validation":  # keep test and validation disjoint
                seen.add(p.en)
                out.append(p)
                for c in hit:
                    need[c] -= 1
        return out

    def eval_texts(self) -> frozenset[str]:
        """Every English and Russian sentence of the validation and test sets (leak checks)."""
        return frozenset(t for s in EVAL_SIZES for p in self.eval_split(s) for t in (p.en, p.ru))


__all__ = ["CATEGORIES", "LEXICON", "Concept", "ConceptConfig", "ConceptCorpus", "Pair", "TEMPLATES", "eval_pairs",
           "Mentions", "heldout_split", "holdout_closure", "mention_pattern", "parse_holdout", "sample_pair", "suite_holdout",
           "word_forms", "word_line"]
