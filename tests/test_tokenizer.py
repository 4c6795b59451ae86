"""The bvv241 tokenizer (docs/recipe.md section 2): layout, n-gram rule, BPE mechanics against a
literal reference, lossless round trip (hypothesis, 10,000 strings per vocabulary), the
published `<unk>` switch, compact vocabularies, and loading any tokenizer dir."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from bvvlab.glyph import tokenizer as T

EN = ("The quick brown fox jumps over the lazy dog. Select the cell and choose Format - Cells. "
      "The test of the theory: hello there, the best of the rest. Tools - Options - LibreOffice Writer. ") * 3
RU = ("Съешь же ещё этих мягких французских булок, да выпей чаю. Выберите ячейку и команду Формат - Ячейки. "
      "Проверка теории: привет, лучшее из остального. Сервис - Параметры - LibreOffice Writer. ") * 3
ZH = "选择单元格，然后选择格式 - 单元格。工具 - 选项 - LibreOffice Writer。单元格格式。"
TEXTS = {"en": [EN, "hello the test 123 testing"], "ru": [RU], "zh": [ZH]}
GRAMS = T.ngram_table(TEXTS, ns=(2, 3), top_per_n=60)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """A full lossless 65,536 tokenizer, saved and re-loaded with AutoTokenizer (what users get)."""
    tok = T.hf_tokenizer(T.bvv241_vocab(65_536, GRAMS))
    path = tmp_path_factory.mktemp("full")
    tok.save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def compact(full, tmp_path_factory):
    tok = T.compact_tokenizer(full, [EN, RU])
    path = tmp_path_factory.mktemp("compact")
    tok.save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


# --- layout -------------------------------------------------------------------------------

@pytest.mark.parametrize("size", T.VOCAB_SIZES)
@pytest.mark.parametrize("byte_fallback", [True, False])
def test_layout_ids(size, byte_fallback):
    n = 8_000 if size == 65_536 else 9_000  # the larger vocab spills past 0xF8FF into 0x10000
    grams = [f"{chr(0x61 + i // 26 % 26)}{chr(0x61 + i % 26)}{chr(0x430 + i // 676)}" for i in range(n)]
    grams += ["ab", "zz"]
    v = T.bvv241_vocab(size, grams, byte_fallback=byte_fallback)
    assert len(v) == size
    for cp in (0, 0x0A, 0x20, 0x41, 0x416, 0x4E2D, 0xD7FF, 0xF900, 0xFF01, 0xFFFE):
        assert v[cp] == chr(cp)
    assert v[T.PAD_ID] == "<pad>" == v[57344] and v[T.BOS_ID] == "<s>" and v[T.EOS_ID] == "</s>"
    assert v[T.UNK_ID] == "<unk>" == v[57347] and v[57366] == "[FILE_SEP]"
    assert v[0xE000:0xE017] == list(T.SPECIAL_TOKENS)
    assert v[0xE017] == "<special_token_57367>" and v[0xE07F] == "<special_token_57471>"  # N = id (the author)
    if byte_fallback:
        assert v[0xE080] == "<0x80>" and v[0xE0FF] == "<0xFF>" and v[0xE0C3] == "<0xC3>"
    else:
        assert v[0xE080] == "<special_token_57472>" and v[0xE0FF] == "<special_token_57599>"
    order = T.sort_ngrams(grams)
    assert order[0] < order[1] and len(order[-1]) == 2 and order[-2:] == ["ab", "zz"]
    assert v[0xD800:0xE000] == order[:2048]
    assert v[0xE100:0xF900] == order[2048:8192] + [f"<unused_{i}>" for i in range(0xE100 + len(order) - 2048, 0xF900)]
    assert v[0xFFFF] == "<unused_65535>"
    if size == 131_072:
        end = 0x10000 + len(order) - 8192
        assert v[0x10000:end] == order[8192:] and v[end] == f"<unused_{end}>" and v[0x1FFFF] == "<unused_131071>"
    assert len(set(v)) == size


def test_layout_rejects_overflow_and_bad_ngrams():
    with pytest.raises(ValueError, match="do not fit the 8192 free slots"):
        T.bvv241_vocab(65_536, [f"a{i}" for i in range(8_193)])
    with pytest.raises(ValueError, match="reserved token name"):
        T.bvv241_vocab(65_536, ["ab", "<s>"])
    with pytest.raises(ValueError, match="not a bvv241 size"):
        T.bvv241_vocab(50_000, [])


# --- n-gram rule --------------------------------------------------------------------------

def _reference_table(texts_by_lang, ns, k):
    """The rule as written: per language, every word occurrence, every n-gram, top k per n."""
    table = set()
    for texts in texts_by_lang.values():
        for n in ns:
            c = Counter()
            for text in texts:
                for word in re.findall(T.WORD_PATTERN, re.sub(r"\d+", "", text)):
                    for i in range(len(word) - n + 1):
                        c[word[i:i + n]] += 1
            table |= {g for g, _ in sorted(c.items(), key=lambda gc: (-gc[1], gc[0]))[:k]}
    return sorted(table, key=lambda s: (-len(s), s))


@pytest.mark.parametrize("k", [1, 7, 60, 10_000])
def test_ngram_table_matches_literal_rule(k):
    assert T.ngram_table(TEXTS, (2, 3, 4), k, capacity=65_535) == _reference_table(TEXTS, (2, 3, 4), k)


def test_ngram_table_details():
    table = T.ngram_table(TEXTS, (2, 3), 60)
    assert "the" in table and "ки" in table and "单元" in table  # Latin, Cyrillic, CJK words
    assert not any(ch.isdigit() or ch.isspace() for g in table for ch in g)
    fill = T.ngram_table(TEXTS, (2, 3, 4, 5), None, capacity=500)
    assert len(fill) <= 500
    # largest k that fits: one more n-gram per list would overflow
    k = max(k for k in range(1, 400) if len(T.ngram_table(TEXTS, (2, 3, 4, 5), k, capacity=10**6)) <= 500)
    assert fill == T.ngram_table(TEXTS, (2, 3, 4, 5), k, capacity=500)


def test_ngram_table_empty_corpus_is_one_clear_error():
    with pytest.raises(ValueError, match="the corpus has no words") as err:
        T.ngram_table({"en": ["", "123 456"], "ru": []})
    assert "\n" not in str(err.value)


def test_bvv241_2_3_from_the_embedded_corpora():
    """The default table (embedded LibreOffice en/ru/zh corpora, top 338 per n per language)
    reproduces the recipe's worked example."""
    by_lang = T.corpus_texts_by_lang()
    assert sorted(by_lang) == ["en", "ru", "zh"]
    grams = T.kind_ngrams("bvv241-2-3")
    assert grams == T.ngram_table(by_lang, (2, 3), 338) and len(grams) <= 338 * 2 * 3
    assert {len(g) for g in grams} == {2, 3}
    tok = T.build_tokenizer("bvv241-2-3")
    assert T.tokenizer_vocab(tok)[0xD800:0xD800 + len(grams[:2048])] == grams[:2048]
    assert tok.convert_ids_to_tokens(tok.encode("hello the test")) == ["h", "ell", "o", " ", "the", " ", "t", "est"]


@pytest.mark.slow
def test_bvv241_max_fills_the_larger_vocab():
    by_lang = T.corpus_texts_by_lang()
    grams = T.kind_ngrams("bvv241-max", by_lang)
    capacity = len(T.ngram_slots(131_072))
    assert capacity == 2048 + 6144 + 0xFFFF
    assert len(grams) <= capacity and {len(g) for g in grams} == {2, 3, 4, 5}
    # sized to fill: the table is every n-gram of rank <= k, and rank k + 1 would overflow
    ranks = T.ngram_ranks(by_lang, (2, 3, 4, 5))
    k = max(ranks[g] for g in grams)
    assert grams == T.sort_ngrams(g for g, r in ranks.items() if r <= k)
    assert sum(r <= k + 1 for r in ranks.values()) > capacity
    vocab = T.bvv241_vocab(131_072, grams)
    assert vocab[0x10000] == grams[8192] and len(vocab) == 131_072


# --- BPE mechanics ------------------------------------------------------------------------

def test_recipe_example_hello_the_test():
    tok = T.hf_tokenizer(T.bvv241_vocab(65_536, ["ell", "the", "est", "he", "el", "ll", "lo", "th", "es", "st", "te",
                                                   "tes", "hel"]))
    ids = tok.encode("hello the test")
    assert tok.convert_ids_to_tokens(ids) == ["h", "ell", "o", " ", "the", " ", "t", "est"]


def test_merges_are_the_recipe_splits(full):
    model = json.loads(full.backend_tokenizer.to_str())["model"]
    vocab = set(T.bvv241_vocab(65_536, GRAMS))
    expected = [[p[:i], p[i:]] for p in T.sort_ngrams(GRAMS) for i in range(1, len(p))
                if p[:i] in vocab and p[i:] in vocab]
    assert [list(m) for m in model["merges"]] == expected
    assert model["byte_fallback"] is True and model["unk_token"] == "<unk>"


def _reference_tables(vocab, grams):
    """Token index and merge ranks as the recipe states them: every split (p[:i], p[i:]) of each
    n-gram with both halves in the vocabulary, in n-gram order."""
    index = {t: i for i, t in enumerate(vocab)}
    rank = {}
    for p in grams:
        for i in range(1, len(p)):
            if p[:i] in index and p[i:] in index:
                rank.setdefault((p[:i], p[i:]), len(rank))
    return index, rank


def _reference_bpe(text, index, rank):
    """Literal BPE (recipe section 2): characters, then repeatedly merge the adjacent pair of
    lowest merge rank (leftmost first); characters without a token become their UTF-8 bytes."""
    parts = list(text)
    while True:
        best = min(((rank[pair], j) for j, pair in enumerate(zip(parts, parts[1:])) if pair in rank), default=None)
        if best is None:
            break
        j = best[1]
        parts[j:j + 2] = [parts[j] + parts[j + 1]]
    out = []
    for p in parts:
        out.extend([index[p]] if p in index else [index[T.byte_token(b)] for b in p.encode("utf-8")])
    return out


@pytest.fixture(scope="module")
def reference():
    return _reference_tables(T.bvv241_vocab(65_536, GRAMS), T.sort_ngrams(GRAMS))


def test_encoding_equals_literal_bpe(full, reference):
    samples = [EN, RU, ZH, "hello the test", "thethethe", "Ёжик в тумане 😀 \ue123"]
    samples += [EN[i:i + 37] + RU[i:i + 23] for i in range(0, 200, 13)]
    for s in samples:
        assert full.encode(s) == _reference_bpe(s, *reference), s


_MERGE_HEAVY = st.text(st.sampled_from(sorted(set("the testhellollo аеоткинст单元格选择 ,.") | {"😀", "\ue000"})), max_size=40)


@pytest.mark.slow
def test_encoding_equals_literal_bpe_property(full, reference):
    """2,000 strings over an alphabet dense in n-grams, so merges compete: HF == literal rule."""

    @settings(max_examples=2_000, derandomize=True, deadline=None, database=None)
    @given(_MERGE_HEAVY)
    def check(s):
        assert full.encode(s) == _reference_bpe(s, *reference)

    check()


def test_tokenizer_files_are_deterministic(tmp_path):
    a, b = (T.hf_tokenizer(T.bvv241_vocab(65_536, list(reversed(GRAMS)) if i else GRAMS)) for i in range(2))
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
    a.save_pretrained(tmp_path / "a")
    b.save_pretrained(tmp_path / "b")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_saved_tokenizer_loads_offline_without_bos_eos(full):
    assert isinstance(full, PreTrainedTokenizerFast) and len(full) == 65_536
    assert (full.pad_token_id, full.bos_token_id, full.eos_token_id, full.unk_token_id) == (
        T.PAD_ID, T.BOS_ID, T.EOS_ID, T.UNK_ID)
    assert full("ab")["input_ids"] == [ord("a"), ord("b")]  # no BOS/EOS added, ids = code points
    assert full.encode("Жук") == [ord("Ж"), ord("у"), ord("к")]


def test_saved_tokenizers_pad_left(full, compact, tmp_path):
    """A decoder-only LM generates after the last position, so a padded batch must be padded
    on the left: bvv tokenizers (full and compact, saved and reloaded) do it by default."""
    for tok in (full, compact):
        assert tok.padding_side == "left"
        enc = tok(["a", "abc"], padding=True)
        assert enc["input_ids"][0] == [tok.pad_token_id, tok.pad_token_id, tok.convert_tokens_to_ids("a")]
        assert enc["attention_mask"] == [[0, 0, 1], [1, 1, 1]]
    assert full.pad_token_id == T.PAD_ID
    tok = T.hf_tokenizer(T.bvv241_vocab(65_536, GRAMS), padding_side="right")  # an explicit choice wins
    tok.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path).padding_side == "right"


# --- lossless round trip ------------------------------------------------------------------

def _chars(lo, hi):
    return st.characters(min_codepoint=lo, max_codepoint=hi)


# characters drawn from the scripts and corners that break tokenizers (lone surrogates are
# excluded: they are not valid Unicode and cannot be UTF-8 encoded)
_ALPHABET = st.one_of(
    st.characters(exclude_categories=("Cs",)),  # any valid character (no lone surrogates)
    _chars(0x1F300, 0x1FAFF), _chars(0x2600, 0x27BF), _chars(0x200D, 0x200D), _chars(0xFE00, 0xFE0F),  # emoji, ZWJ, VS
    _chars(0x0300, 0x036F), _chars(0x1AB0, 0x1AFF),  # combining marks
    _chars(0x20000, 0x2A6DF), _chars(0x4E00, 0x9FFF),  # CJK extension B, CJK unified
    _chars(0x0590, 0x06FF), _chars(0x200E, 0x200F), _chars(0x202A, 0x202E),  # Hebrew, Arabic, bidi controls
    _chars(0x00, 0x1F), _chars(0x7F, 0x9F),  # C0/C1 controls
    _chars(0xE000, 0xF8FF), _chars(0xF0000, 0x10FFFF), _chars(0xFFFE, 0xFFFF),  # private use, noncharacters
    st.sampled_from(" \t\n\r\u00a0\u2028\u3000"),  # whitespace
    _chars(0x20, 0x7E), _chars(0x0400, 0x04FF),  # ASCII, Cyrillic (n-gram merges)
)
_LITERALS = list(T.SPECIAL_TOKENS) + ["<0x80>", "<0xFF>", "<0x41>", "<special_token_99>", "<unused_65535>",
                                      "<s", "s>", "   ", EN[:40], RU[:40], ZH[:10], "hello the test"]
STRINGS = st.lists(st.one_of(st.text(_ALPHABET, max_size=8), st.sampled_from(_LITERALS)), max_size=5).map("".join)


@settings(max_examples=10_000, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(STRINGS)
def _round_trip(toks, seen, s):
    seen.append(s)
    for tok in toks:
        ids = tok.encode(s)
        assert tok.decode(ids) == s  # the documented defaults
        assert tok.unk_token_id not in ids or "<unk>" in s  # no character lost; only the literal "<unk>" maps there
        # split_special_tokens=True: the text never yields special ids, so even skipping them is exact
        ids = tok.encode(s, split_special_tokens=True)
        assert not set(ids) & set(tok.all_special_ids)
        assert tok.decode(ids, skip_special_tokens=True) == s


@pytest.mark.slow
def test_lossless_round_trip_property(full, compact):
    """10,000 generated strings, each through the full and the compact tokenizer."""
    seen: list[str] = []
    _round_trip([full, compact], seen)
    assert len(seen) >= 10_000
    assert any(ord(c) > 0xFFFF for s in seen for c in s) and any("<s>" in s for s in seen)
    assert any(c not in compact.get_vocab() for s in seen for c in s)  # the compact one needed its fallback


def test_placeholders_carry_the_authors_names_and_only_named_specials_are_special(full):
    """The author's builder names the unnamed slots `<special_token_{cp}>` (57367..57599) and
    registers only the 23 named tokens as special (docs/recipe.md section 2)."""
    published = T.bvv241_vocab(65_536, GRAMS, byte_fallback=False)
    assert published[0xE017:0xE100] == [f"<special_token_{cp}>" for cp in range(57367, 57600)]
    lossless = T.bvv241_vocab(65_536, GRAMS)
    assert lossless[0xE017:0xE080] == [f"<special_token_{cp}>" for cp in range(57367, 57472)]
    for tok in (full, T.hf_tokenizer(published, lossless=False)):
        registered = {t.content for t in tok.added_tokens_decoder.values() if t.special}
        assert registered == set(T.SPECIAL_TOKENS)
    ids = full.encode("x<special_token_57367>y")  # placeholder text is plain text, not the slot
    assert 0xE017 not in ids and full.decode(ids) == "x<special_token_57367>y"
    assert full.encode("<s>") == [T.BOS_ID]  # named specials still match as specials
    assert T.legacy_placeholders(lossless) == [] and T.is_reserved_name("<special_token_57367>")


def _legacy_vocab(vocab: list[str]) -> list[str]:
    """A vocabulary as bvvlab built it before following the author: placeholders by slot offset."""
    old = list(vocab)
    for i in range(len(T.SPECIAL_TOKENS), T.N_SPECIAL_SLOTS):
        if old[T.SPECIAL_BASE + i].startswith("<special_token_"):
            old[T.SPECIAL_BASE + i] = f"<special_token_{i}>"
    return old


def test_old_tokenizer_with_slot_offset_placeholders_still_loads(tmp_path):
    """A tokenizer saved with `<special_token_23>`-style names (and those registered as special,
    as bvvlab did then) loads with the same strings, ids and behaviour; rebuilding a tokenizer
    from its vocabulary (`hf_tokenizer`, as `compact_vocab(list)` does) keeps them registered."""
    old_vocab = _legacy_vocab(T.bvv241_vocab(65_536, GRAMS))
    assert old_vocab[0xE017] == "<special_token_23>" and old_vocab[0xE07F] == "<special_token_127>"
    assert T.legacy_placeholders(old_vocab) == [f"<special_token_{i}>" for i in range(23, 128)]
    T.hf_tokenizer(old_vocab).save_pretrained(tmp_path)
    loaded = T.load_tokenizer_dir(tmp_path)
    assert T.tokenizer_vocab(loaded) == old_vocab
    registered = {t.content for t in loaded.added_tokens_decoder.values() if t.special}
    assert registered == set(T.SPECIAL_TOKENS) | {f"<special_token_{i}>" for i in range(23, 128)}
    assert loaded.encode("<special_token_23>") == [0xE017]  # as the old tokenizer encoded it
    assert loaded.decode(loaded.encode(EN[:80] + RU[:40])) == EN[:80] + RU[:40]
    rebuilt = T.hf_tokenizer(T.tokenizer_vocab(loaded))
    assert rebuilt.encode("<special_token_99>") == [0xE000 + 99]


def test_renamed_placeholders_never_reuse_an_old_cached_matrix():
    """The matrix cache is keyed by the token strings: rows rendered from the old names (a
    different picture) are never served for the author's names."""
    from bvvlab.glyph.bitmaps import RECIPE_32
    from bvvlab.glyph.embeddings import cache_key

    new = T.bvv241_vocab(65_536, GRAMS)
    assert cache_key(new, RECIPE_32, 1024) != cache_key(_legacy_vocab(new), RECIPE_32, 1024)


def test_published_unk_behaviour_with_lossless_false():
    vocab = T.bvv241_vocab(65_536, GRAMS, byte_fallback=False)
    assert "<0x80>" not in vocab and vocab[0xE080] == "<special_token_57472>"
    tok = T.hf_tokenizer(vocab, lossless=False)
    ids = tok.encode("a😀b\ue000")
    assert tok.convert_ids_to_tokens(ids) == ["a", "<unk>", "b", "<unk>"]
    assert tok.decode(ids) == "a<unk>b<unk>"  # the published tokenizer loses the characters
    assert json.loads(tok.backend_tokenizer.to_str())["model"]["byte_fallback"] is False
    with pytest.raises(ValueError, match="lossless=True needs the byte tokens"):
        T.hf_tokenizer(vocab, lossless=True)
    # on text it covers, the published and the lossless tokenizers agree token for token
    lossless = T.hf_tokenizer(T.bvv241_vocab(65_536, GRAMS))
    for s in (EN, RU, ZH):
        assert tok.encode(s) == lossless.encode(s)


# --- compact vocabularies -----------------------------------------------------------------

def test_compact_vocab_maps_to_the_same_tokens(full, compact):
    tokens, full_ids = T.compact_vocab(full, [EN, RU])
    full_vocab = T.tokenizer_vocab(full)
    assert tokens == [full_vocab[i] for i in full_ids] and full_ids == sorted(set(full_ids))
    assert T.full_ids_of(compact) == full_ids and T.full_ids_of(full) is None  # saved with the tokenizer
    assert compact.init_kwargs["bvvlab_full_vocab_hash"] == T.vocab_hash(full_vocab)
    assert compact.init_kwargs["bvvlab_full_size"] == 65_536
    assert len(compact) == len(tokens) < 700
    assert set(T.BYTE_TOKENS) | {chr(c) for c in range(128)} | set(T.SPECIAL_TOKENS) <= set(tokens)
    samples = [EN, RU, EN[5:77] + RU[3:50], "hello the test", "<s>" + RU[:30] + "</s>"]
    samples += [EN[i:i + 29] for i in range(0, 300, 7)] + [RU[i:i + 31] for i in range(0, 300, 11)]
    # "covered": the full tokenizer's tokens for it are all in the compact vocab (slices that cut
    # a word can need an n-gram the corpus never used: those fall back to shorter tokens)
    covered = [s for s in samples if set(full.encode(s)) <= set(full_ids)]
    assert len(covered) >= 0.8 * len(samples) and EN in covered and RU in covered
    for s in covered:
        assert [full_ids[i] for i in compact.encode(s)] == full.encode(s), s
    # text it does not cover still round-trips, through bytes
    assert compact.convert_ids_to_tokens(compact.encode("中")) == ["<0xE4>", "<0xB8>", "<0xAD>"]
    assert compact.encode("中") != full.encode("中")


@pytest.mark.slow
def test_compact_equals_full_on_covered_slices_property(full, compact):
    """2,000 random slices of the corpus (specials spliced in): wherever the full tokenizer's
    tokens are all compact tokens, the compact tokenizer gives the same tokens."""
    full_ids = T.full_ids_of(compact)
    kept = set(full_ids)
    text = EN + "\n" + RU
    n_covered = []

    @settings(max_examples=2_000, derandomize=True, deadline=None, database=None)
    @given(st.integers(0, len(text)), st.integers(0, 60), st.sampled_from(["", "<s>", "</s>", "<pad>", "\n"]))
    def check(start, length, special):
        s = text[start:start + length] + special + text[start + length:start + 2 * length]
        ids = full.encode(s)
        if set(ids) <= kept:
            n_covered.append(s)
            assert [full_ids[i] for i in compact.encode(s)] == ids

    check()
    assert len(n_covered) >= 1_000


def test_compact_vocab_from_a_token_list_equals_from_tokenizer(full):
    assert T.compact_vocab(T.bvv241_vocab(65_536, GRAMS), [RU]) == T.compact_vocab(full, [RU])
    with pytest.raises(ValueError, match="byte_fallback=True"):
        T.compact_vocab(T.bvv241_vocab(65_536, GRAMS, byte_fallback=False), [RU])


# --- any tokenizer ------------------------------------------------------------------------

def test_vocab_from_tokenizer_dir_byte_level_bpe(tmp_path):
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([EN, RU] * 5, vocab_size=400, min_frequency=2, special_tokens=["<|endoftext|>"],
                            show_progress=False)
    PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>").save_pretrained(tmp_path)
    vocab = T.vocab_from_tokenizer_dir(tmp_path)
    expected = sorted(bpe.get_vocab().items(), key=lambda kv: kv[1])
    assert vocab == [t for t, _ in expected] and len(vocab) == bpe.get_vocab_size()
    assert "Ġthe" in vocab and vocab[0] == "<|endoftext|>"


def test_vocab_from_tokenizer_dir_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        T.vocab_from_tokenizer_dir(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="is not a tokenizer dir"):
        T.vocab_from_tokenizer_dir(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="could not be loaded as a tokenizer") as err:
        T.vocab_from_tokenizer_dir(tmp_path)
    assert "\n" not in str(err.value)


def test_glyph_text_makes_byte_tokens_distinct():
    """The 128 byte tokens get pairwise distinct bit vectors at every cell size (drawn
    literally they give only 98)."""
    import numpy as np

    from bvvlab.glyph.bitmaps import RECIPE_32, RECIPE_64, RECIPE_MAX, render_bits

    literal = render_bits(list(T.BYTE_TOKENS))
    assert len({r.tobytes() for r in literal}) == 98 < 128
    drawn = [T.glyph_text(t) for t in T.BYTE_TOKENS]
    for params in (RECIPE_32, RECIPE_64, RECIPE_MAX):
        assert len(np.unique(np.packbits(render_bits(drawn, params), axis=1), axis=0)) == 128, params
    assert T.glyph_text("<0xCA>") == "\uff23\uff21" and T.glyph_text("<0x09>") == "\uff10\uff19"
    assert T.glyph_text("the") == "the" and T.glyph_text("<s>") == "<s>" and T.glyph_text("CA") == "CA"


@pytest.mark.slow
@pytest.mark.parametrize("kind, params", [("bvv241-max", "RECIPE_MAX"), ("bvv241-2-3", "RECIPE_32")])
def test_byte_token_glyphs_equal_no_other_token(kind, params):
    """No byte token is drawn like any other token of the full vocabulary (every n-gram and
    every one-character token, ~3 s). With the earlier ASCII hex digits, `<0xCA>` had exactly
    the bits of the n-gram "CA" (33 such pairs in bvv241-max)."""
    import numpy as np

    from bvvlab.glyph import bitmaps as glyphs
    from bvvlab.glyph.embeddings import glyph_bits

    p = getattr(glyphs, params)
    vocab = T.bvv241_vocab(T.VOCAB_KINDS[kind].size, T.kind_ngrams(kind))
    packed = np.packbits(glyph_bits(vocab, p), axis=1)
    is_byte = np.array([t in set(T.BYTE_TOKENS) for t in vocab])
    others = {row.tobytes() for row in packed[~is_byte]}
    byte_rows = {row.tobytes() for row in packed[is_byte]}
    assert len(byte_rows) == 128 and not byte_rows & others
    if kind == "bvv241-max":  # the defect this guards against, on the old drawing
        assert "CA" in vocab
        ascii_hex = glyphs.render_bits(["CA"], p)[0]
        assert np.packbits(ascii_hex).tobytes() in others
        assert not np.array_equal(*glyph_bits(["<0xCA>", "CA"], p))
