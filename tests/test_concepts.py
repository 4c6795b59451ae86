"""The concept corpus: lexicon labels, Russian agreement, determinism, held-out sets (issue 2, corpora 2)."""

import hashlib
import json
import random
import re

import pytest

from bvvlab.core.errors import CorpusError
from bvvlab.corpus import concepts as C
from bvvlab.corpus.sources import take

CYRILLIC_WORDS = re.compile(r"^[а-яё]+( [а-яё]+)*$")
ENGLISH_WORDS = re.compile(r"^[A-Za-z]+( [A-Za-z]+)*$")
NON_FORMS = {"gender", "governs"}


def _sentences(doc):
    """The sentences of a rendered document, recovered from its text (not from meta)."""
    if doc.lang == "en-ru":
        return doc.text.split("\n")
    return re.split(r"(?<=\.) ", doc.text)


def test_lexicon_size_and_categories():
    assert len(C.LEXICON) >= 250
    assert len(C.CATEGORIES) >= 12
    per = {cat: [c for c in C.LEXICON.values() if c.category == cat] for cat in C.CATEGORIES}
    assert all(len(v) >= 8 for v in per.values()), {k: len(v) for k, v in per.items()}
    assert sum(map(len, per.values())) == len(C.LEXICON)  # every concept is in a listed category
    assert all(c.id == key for key, c in C.LEXICON.items())


def test_every_russian_form_is_cyrillic_and_every_english_form_latin():
    for c in C.LEXICON.values():
        for name, form in c.ru.items():
            if name in NON_FORMS or form == "-":
                continue
            assert CYRILLIC_WORDS.match(form), (c.id, name, form)
        for name, form in c.en.items():
            if name == "det":
                assert form in ("a", "an", "", "the"), (c.id, form)
            else:
                assert ENGLISH_WORDS.match(form), (c.id, name, form)


def test_noun_case_forms_follow_russian_declension():
    """Hand-typed forms checked against the declension rules they must obey."""
    for c in (c for c in C.LEXICON.values() if c.pos == "noun"):
        r, g = c.ru, c.ru["gender"]
        assert g in ("m", "f", "n"), c.id
        first_decl = r["nom"].endswith(("а", "я"))
        if first_decl:  # кошка/кошку, дедушка/дедушку, судья...
            assert r["acc"] == r["nom"][:-1] + {"а": "у", "я": "ю"}[r["nom"][-1]], c.id
        elif g == "m" and c.category in C.ANIMATE:  # animate masculine: accusative = genitive
            assert r["acc"] == r["gen"], c.id
        else:  # inanimate masculine, neuter, feminine in -ь: accusative = nominative
            assert r["acc"] == r["nom"], c.id
        if c.countable:
            assert r["nom_pl"] != "-" and r["gen_pl"] != "-", c.id
        assert (c.category in C.ANIMATE) <= (g in ("m", "f")), c.id  # subjects need a m/f past tense


def test_adjective_verb_number_forms_have_their_endings():
    for c in C.LEXICON.values():
        r = c.ru
        if c.pos == "adj":
            assert r["m"].endswith(("ый", "ий", "ой")) and r["f"].endswith(("ая", "яя")), c.id
            assert r["n"].endswith(("ое", "ее")) and r["pl"].endswith(("ые", "ие")), c.id
            assert r["acc_f"].endswith(("ую", "юю")) and r["gen_m"].endswith(("ого", "его")), c.id
            assert r["m"][:-2] == r["f"][:-2] == r["pl"][:-2] == r["gen_m"][:-3], c.id  # one stem
        elif c.pos == "verb":
            reflexive = r["inf"].endswith("ся")
            # reflexive suffix: -ся after a consonant, -сь after a vowel (смеялся, смеялась)
            ends = (lambda s, e: s.endswith(e + ("сь" if e[-1] in "аи" else "ся") if reflexive else e))
            assert ends(r["3sg"], "т") and ends(r["3pl"], "т"), c.id
            assert ends(r["past_f"], "ла") and ends(r["past_pl"], "ли") and ends(r["past_m"], "л"), c.id
        elif c.pos == "num":
            assert r["governs"] in ("nom", "gen", "gen_pl"), c.id


@pytest.mark.parametrize("num,noun,en,ru", [
    ("one", "cat", "one cat", "одна кошка"), ("one", "apple", "one apple", "одно яблоко"),
    ("one", "table", "one table", "один стол"), ("two", "cat", "two cats", "две кошки"),
    ("two", "grandfather", "two grandfathers", "два дедушки"), ("four", "egg", "four eggs", "четыре яйца"),
    ("five", "cat", "five cats", "пять кошек"), ("twenty", "child", "twenty children", "двадцать детей"),
    ("hundred", "tooth", "one hundred teeth", "сто зубов"), ("three", "child", "three children", "три ребёнка"),
])
def test_numeral_agreement(num, noun, en, ru):
    assert C._count_phrase(C.LEXICON[num], C.LEXICON[noun]) == (en, ru)


@pytest.mark.parametrize("adj,noun,nom,acc", [
    ("big", "cat", "большая кошка", "большую кошку"), ("big", "bear", "большой медведь", "большого медведя"),
    ("big", "table", "большой стол", "большой стол"), ("big", "window", "большое окно", "большое окно"),
    ("old", "grandfather", "старый дедушка", "старого дедушку"), ("blue", "cup", "синяя чашка", "синюю чашку"),
])
def test_adjective_agreement(adj, noun, nom, acc):
    a, n = C.LEXICON[adj], C.LEXICON[noun]
    assert f"{C._adj_nom(a, n)} {n.ru['nom']}" == nom
    assert f"{C._adj_acc(a, n)} {n.ru['acc']}" == acc


def test_templates_render_stored_forms_in_both_languages():
    """Every concept a pair is labelled with shows up in both of its sentences (as a stored form)."""
    def alternation(forms):
        return re.compile(r"(?<!\w)(" + "|".join(map(re.escape, sorted(forms, key=len, reverse=True))) + r")(?!\w)", re.I)

    en_re = {c.id: alternation(v for k, v in c.en.items() if k != "det") for c in C.LEXICON.values()}
    ru_re = {c.id: alternation(v for k, v in c.ru.items() if k not in NON_FORMS and v != "-") for c in C.LEXICON.values()}
    corpus = C.ConceptCorpus(seed=1)
    seen = set()
    for p in take(corpus.train_pairs(random.Random(1)), 30_000):
        for cid in p.concepts:
            assert en_re[cid].search(p.en) and ru_re[cid].search(p.ru), (cid, p)
            seen.add(cid)
        assert p.en[0].isupper() and p.ru[0].isupper() and p.en.endswith(".") and p.ru.endswith(".")
        assert not re.search(r"[A-Za-z]", p.ru) and not re.search(r"[а-яё]", p.en, re.I)
    assert seen == set(C.LEXICON)  # every concept appears, in both languages


def test_generator_deterministic_per_seed_and_different_across_seeds():
    def first(seed, n=400):
        return [(d.text, d.lang, d.meta) for d in take(C.ConceptCorpus(seed=seed).documents("train"), n)]

    assert first(3) == first(3)
    assert first(3) != first(4)
    assert sum(a == b for a, b in zip(first(3), first(4))) < 40


def test_document_labels_are_consistent():
    for d in take(C.ConceptCorpus(seed=2, parallel_ratio=0.5).documents("train"), 3000):
        assert d.source == "concepts" and d.lang in ("en", "ru", "en-ru")
        sents = d.meta["sentences"]
        assert [s["text"] for s in sents] == _sentences(d)  # meta describes exactly the rendered text
        assert d.meta["concepts"] == sorted({c for s in sents for c in s["concepts"]})
        assert set(d.meta["concepts"]) <= set(C.LEXICON)
        for s in sents:
            assert s["lang"] in ("en", "ru", "en-ru")
            if s["lang"] == "ru":
                assert not re.search(r"[A-Za-z]", s["text"])
            if s["lang"] == "en":
                assert not re.search(r"[а-яё]", s["text"], re.I)


@pytest.mark.parametrize("ratio", [0.0, 0.3, 1.0])
def test_parallel_ratio(ratio):
    docs = take(C.ConceptCorpus(seed=0, parallel_ratio=ratio).documents("train"), 2000)
    share = sum(d.lang == "en-ru" for d in docs) / len(docs)
    assert abs(share - ratio) < 0.04  # binomial sd at n=2000 is <= 0.012
    if 0 < ratio < 1:
        assert {d.lang for d in docs} == {"en", "ru", "en-ru"}


@pytest.mark.slow
def test_heldout_sets_fixed_disjoint_and_never_in_training():
    test, val = C.eval_pairs("test"), C.eval_pairs("validation")
    assert len(test) == C.EVAL_SIZES["test"] and len(val) == C.EVAL_SIZES["validation"]
    assert {p.en for p in test}.isdisjoint({p.en for p in val})
    assert all(C.heldout_split(p) == "test" for p in test) and all(C.heldout_split(p) == "validation" for p in val)
    # fixed: independent of the user's seed and of the other options
    a, b = C.ConceptCorpus(seed=0), C.ConceptCorpus(seed=99, parallel_ratio=0.9)
    assert [d.text for d in a.documents("validation")] == [d.text for d in b.documents("validation")]
    banned = a.eval_texts()
    assert len(banned) >= 2 * (len(test) + len(val)) - 10
    n_sent = 0
    for d in take(C.ConceptCorpus(seed=7).documents("train"), 20_000):
        for s in _sentences(d):
            assert s not in banned, s
            n_sent += 1
    assert n_sent > 30_000


def test_holdout_concepts_never_in_training_and_in_test():
    hold = ("cat", "sleep", "red", "five", "kitchen")
    corpus = C.ConceptCorpus(seed=5, holdout_concepts=hold)
    forms_en = {f.lower() for cid in hold for k, f in C.LEXICON[cid].en.items() if k not in ("det", "loc", "when")}
    forms_ru = {f for cid in hold for k, f in C.LEXICON[cid].ru.items() if k not in NON_FORMS and f != "-"}
    for d in take(corpus.documents("train"), 10_000):
        assert not set(d.meta["concepts"]) & set(hold)
        words = set(re.findall(r"[a-zа-яё]+", d.text.lower()))
        assert not words & forms_en and not words & forms_ru, d.text
    extra = corpus.eval_split("test")[C.EVAL_SIZES["test"]:]
    assert {p.en for p in corpus.eval_split("test")}.isdisjoint({p.en for p in corpus.eval_split("validation")})
    for cid in hold:
        assert sum(cid in p.concepts for p in extra) >= C.HOLDOUT_CONCEPT_SENTENCES
    assert [p.en for p in corpus.eval_split("test")] == [p.en for p in C.ConceptCorpus(holdout_concepts=hold).eval_split("test")]


def test_bad_options_are_one_line_errors():
    with pytest.raises(ValueError, match="unknown concept id") as e:
        C.ConceptCorpus(holdout_concepts=("unicorn",))
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="parallel_ratio"):
        C.ConceptCorpus(parallel_ratio=1.5)
    with pytest.raises(ValueError, match="validation"):
        list(C.ConceptCorpus().documents("dev"))


# ------------------------------------------------------------------ the lexicon as data (issue 22)

def _lexicon_digest() -> str:
    rows = [[c.id, c.category, c.pos, list(c.en.items()), list(c.ru.items()), list(c.applies)] for c in C.LEXICON.values()]
    extra = [list(C.CATEGORIES), list(C.ANIMATE), list(C.HUMAN), sorted(C.DRINKS), sorted(C.DAYS), sorted(C.NEEDS_PLACE)]
    return hashlib.sha256(json.dumps([rows, extra], ensure_ascii=False).encode()).hexdigest()


def _documents_digest(*streams, tail: bytes = b"") -> str:
    h = hashlib.sha256()
    for docs in streams:
        for d in docs:
            h.update(json.dumps([d.text, d.lang, d.source, d.meta], ensure_ascii=False).encode() + b"\n")
    h.update(tail)
    return h.hexdigest()


def test_lexicon_moved_to_data_unchanged():
    """The words moved from Python literals in concepts.py to data/concepts/*.tsv (issue 22). The
    digests were computed at be5f065, the last commit with the words as code, by this same code:
    every concept (id, category, part of speech, forms in their order, `applies`), the sets the
    templates name, and the documents of the concept corpus (training stream of two seeds, one
    with the suite holdout, validation, test with held-out concepts) and of the instruction
    corpus are byte-identical to what the code produced before the move."""
    import itertools

    from bvvlab.corpus.instructions import InstructionCorpus

    assert len(C.LEXICON) == 306
    assert _lexicon_digest() == "a0338d6b2d7671039c962a7a6f32b9d000c0a7920a3b5293c9413d13f1259c02"
    held = C.ConceptCorpus(seed=3, parallel_ratio=0.7, holdout_concepts=C.parse_holdout("suite"))
    digest = _documents_digest(itertools.islice(C.ConceptCorpus(seed=0).documents("train"), 400),
                               itertools.islice(held.documents("train"), 400), held.documents("validation"),
                               held.documents("test"), tail=json.dumps(C.suite_holdout()).encode())
    assert digest == "14ccb0f8c6b2071e867e1fdf43291c83f0907ce1c53eb4d73d5e6ac037990e00"
    assert _documents_digest(itertools.islice(InstructionCorpus(seed=0).documents("train"), 300)) == \
        "fcbd9ab0c60567878996974d2bdf0bd0ba0f934371a291eed24237bedd5dac5e"


def test_editing_the_lexicon_invalidates_the_corpus_cache_key(tmp_path, monkeypatch):
    """The shard cache is keyed by `source_fingerprint`: a changed word must give another key, for
    the generated corpora and for an embedded corpus filtered by held-out concepts."""
    from bvvlab.corpus import sources

    specs = ("concepts", "instructions", "libreoffice-en-ru?holdout=suite")
    before = [sources.source_fingerprint(s) for s in specs]
    copies = []
    for path in C.LEXICON_FILES:
        copies.append(tmp_path / path.name)
        copies[-1].write_bytes(path.read_bytes())
    monkeypatch.setattr(C, "LEXICON_FILES", tuple(copies))
    assert [sources.source_fingerprint(s) for s in specs] == before  # same bytes, same key
    nouns = tmp_path / "nouns.tsv"
    nouns.write_text(nouns.read_text(encoding="utf-8").replace("кошку", "кошкy"), encoding="utf-8")
    after = [sources.source_fingerprint(s) for s in specs]
    assert all(a != b for a, b in zip(after, before))
    assert sources.source_fingerprint("libreoffice-en-ru") == sources.source_fingerprint("libreoffice-en-ru")


def test_read_lexicon_round_trip_and_one_line_errors(tmp_path):
    """`read_lexicon` of a copy gives the same concepts; a damaged file names itself, the line and
    the problem in one line."""
    for path in C.LEXICON_FILES:
        (tmp_path / path.name).write_bytes(path.read_bytes())
    again = C.read_lexicon(tmp_path)
    assert list(again) == list(C.LEXICON)
    assert all((a.category, a.pos, a.en, a.ru, a.applies) == (b.category, b.pos, b.en, b.ru, b.applies)
               for a, b in zip(again.values(), C.LEXICON.values()))
    nouns = (tmp_path / "nouns.tsv").read_text(encoding="utf-8")
    lines = nouns.splitlines()
    cases = {
        "header": ("\n".join(["id\tcategory"] + lines[1:]), "first line must be the tab-separated header"),
        "missing": ("\n".join(lines[:2] + [lines[2].rsplit("\t", 1)[0]] + lines[3:]), "line 3 has no ru_gen_pl"),
        "extra": ("\n".join(lines[:2] + [lines[2] + "\t" * 9 + "x"] + lines[3:]), "line 3 has 20 cells"),
        "twice": ("\n".join(lines + [lines[1]]), "'cat' is used twice"),
        "category": (nouns.replace("cat\tanimals", "cat\tbeasts", 1), "unknown category 'beasts'"),
    }
    for name, (text, words) in cases.items():
        (tmp_path / "nouns.tsv").write_text(text, encoding="utf-8")
        with pytest.raises(CorpusError, match=re.escape(words)) as e:
            C.read_lexicon(tmp_path)
        assert "\n" not in str(e.value) and "nouns.tsv" in str(e.value), name
    (tmp_path / "nouns.tsv").write_text(nouns, encoding="utf-8")
    adjs = tmp_path / "adjectives.tsv"
    adjs.write_text(adjs.read_text(encoding="utf-8").replace("things flower", "things flowr", 1), encoding="utf-8")
    with pytest.raises(CorpusError, match=r"red applies to unknown \['flowr'\]"):
        C.read_lexicon(tmp_path)
