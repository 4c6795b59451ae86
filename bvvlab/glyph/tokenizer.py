"""The Unicode-centric "bvv241" tokenizer (docs/recipe.md section 2), made lossless.

Layout (ids of a 65,536 or 131,072 vocabulary; recipe section 2):

* 0x0000-0xD7FF and 0xF900-0xFFFE: one-character tokens, id = code point.
* 0xE000-0xE0FF: 256 special slots. Slot i (id 0xE000 + i) holds `SPECIAL_TOKENS[i]` for
  i < 23 (`<pad>` 57344, `<s>`, `</s>`, `<unk>` 57347, ..., `[FILE_SEP]` 57366), else the
  placeholder `<special_token_{id}>`: **N is the id** (57367..57599), as the author's builder
  writes `f"<special_token_{cp}>"`. Only the 23 named tokens are registered as special (as
  the author registered them); placeholders are plain vocabulary entries.
  Lossless vocabularies (the default) put the byte-fallback tokens `<0x80>`..`<0xFF>` in
  slots 0x80..0xFF, i.e. byte b has id 0xE000 + b (placeholders 57472..57599 give way to them).
  Tokenizers saved before bvvlab followed the author here named the placeholders by slot
  offset (`<special_token_23>`..) and registered them as special: they load unchanged, and
  `hf_tokenizer` over such a vocabulary keeps registering them (`legacy_placeholders`), since
  their matrix rows were rendered from those names.
* Multi-character n-grams, sorted by (length descending, string), fill 0xD800-0xDFFF, then
  0xE100-0xF8FF, and in the 131,072 vocabulary also 0x10000-0x1FFFE.
* Every id left over becomes `<unused_{id}>` (**N is the id**, decimal), e.g. 0xFFFF is
  `<unused_65535>`.

Mechanics (recipe section 2): a `tokenizers` BPE over this vocabulary whose merges are every
two-way split (p[:i], p[i:]) of each n-gram with both halves in the vocabulary, in n-gram
order (longer n-grams merge first); no normalizer, no pre-tokenizer, no BOS/EOS added, decode
is concatenation.

Where bvvlab departs from the published tokenizer, and why:

* **Lossless** (`lossless=True`, the default): a character without a token (above U+FFFF such
  as emoji; the private-use characters U+E000-U+F8FF whose ids hold specials and n-grams;
  U+FFFF; characters missing from a compact vocabulary) is written as its UTF-8 bytes with
  `tokenizers`' byte fallback (`<0xXX>` tokens, decoded by ByteFallback + Fuse). Every such
  byte is >= 0x80 because ASCII always has its own tokens, so 128 byte tokens suffice.
  `lossless=False` with `bvv241_vocab(..., byte_fallback=False)` is the published tokenizer
  exactly: unknown characters become `<unk>` and are lost.
* Round trip contract: `tok.decode(tok.encode(s)) == s` for every str without lone
  surrogates, with the defaults (`skip_special_tokens=False`). Special-token strings in the
  text (`<s>`, `<pad>`, ...) are matched as special tokens (the Hugging Face default) and
  decode back to the same text; pass `split_special_tokens=True` when encoding untrusted text
  to keep them as plain characters (then even `skip_special_tokens=True` round-trips). Byte
  token names such as `<0x80>` in the text are never special: they encode as characters.
* The n-gram table is computed here from a corpus (`ngram_table`), by the recipe's rule.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# --- layout constants (recipe section 2) -------------------------------------------------

SPECIAL_TOKENS: tuple[str, ...] = (
    "<pad>", "<s>", "</s>", "<unk>", "<think>", "</think>", "<emotions>", "</emotions>",
    "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "[INST]", "[/INST]",
    "[EOT]", "[USER]", "[ASSISTANT]", "[FIM_PREFIX]", "[FIM_MIDDLE]", "[FIM_SUFFIX]",
    "[FIM_PAD]", "[REPO_NAME]", "[FILE_SEP]",
)
SPECIAL_BASE = 0xE000  # first special slot
N_SPECIAL_SLOTS = 256  # 0xE000-0xE0FF
PAD_ID = SPECIAL_BASE + 0  # 57344
BOS_ID = SPECIAL_BASE + 1  # 57345
EOS_ID = SPECIAL_BASE + 2  # 57346
UNK_ID = SPECIAL_BASE + 3  # 57347
BYTE_FALLBACK_FIRST = 0x80  # byte tokens <0x80>..<0xFF> live at id SPECIAL_BASE + byte
VOCAB_SIZES = (65_536, 131_072)
CHAR_RANGES = ((0x0000, 0xD800), (0xF900, 0xFFFF))  # half-open: one-character tokens
NGRAM_RANGES = ((0xD800, 0xE000), (0xE100, 0xF900), (0x10000, 0x1FFFF))  # half-open, in fill order

_BYTE_RE = re.compile(r"<0x([0-9A-F]{2})>\Z")
_PLACEHOLDER_RE = re.compile(r"<(?:special_token|unused)_\d+>\Z")


def byte_token(b: int) -> str:
    """The byte-fallback token name for byte `b` (`tokenizers`' convention: `<0xE2>`)."""
    return f"<0x{b:02X}>"


BYTE_TOKENS: tuple[str, ...] = tuple(byte_token(b) for b in range(BYTE_FALLBACK_FIRST, 256))


# ASCII hex digit -> its FULLWIDTH form (U+FF10-FF19, U+FF21-FF26): what a byte token is drawn as
_FULLWIDTH_HEX = str.maketrans({c: chr(ord(c) + 0xFEE0) for c in "0123456789ABCDEF"})


def glyph_text(token: str) -> str:
    """The string to draw for a token's glyph (used by `embeddings.glyph_strings`): a byte
    token's two hex digits in their FULLWIDTH forms ("<0xCA>" -> "ＣＡ", U+FF23 U+FF21), every
    other token itself (recipe 3: literal text).

    Why: drawn literally, the six characters of "<0xB3>" squeezed into 32 px give only 98
    distinct vectors for the 128 byte tokens ("<0xB3>" = "<0xB8>" = "<0xE3>" ...). Plain ASCII
    digits "CA" would be distinct but equal to the real n-gram token "CA" (33 such pairs in
    bvv241-max). Fullwidth digits give 128 distinct vectors and coincide with no other token:
    n-grams come from letters-only words (`WORD_PATTERN` excludes the fullwidth block) and
    one-character tokens are single characters (checked over the full bvv241-2-3 and
    bvv241-max vocabularies; tests/test_tokenizer.py keeps a fast version)."""
    m = _BYTE_RE.match(token)
    return m.group(1).translate(_FULLWIDTH_HEX) if m else token


def placeholder(token_id: int) -> str:
    """The author's name for an unnamed special slot: `<special_token_{id}>` (57367..57599)."""
    return f"<special_token_{token_id}>"


def special_slots(byte_fallback: bool = True) -> list[str]:
    """The 256 strings of ids 0xE000-0xE0FF (names above; placeholders `<special_token_{id}>`)."""
    out = []
    for i in range(N_SPECIAL_SLOTS):
        if i < len(SPECIAL_TOKENS):
            out.append(SPECIAL_TOKENS[i])
        elif byte_fallback and i >= BYTE_FALLBACK_FIRST:
            out.append(byte_token(i))
        else:
            out.append(placeholder(SPECIAL_BASE + i))
    return out


_LEGACY_PLACEHOLDER_RE = re.compile(r"<special_token_(\d+)>\Z")


def legacy_placeholders(vocab: Sequence[str]) -> list[str]:
    """The placeholders of a vocabulary built before bvvlab used the author's names: slot-offset
    names `<special_token_N>` with N < 256 (`<special_token_23>` at id 57367). Such tokenizers
    registered them as special; `hf_tokenizer` keeps doing so for them. Empty for current ones."""
    return [t for t in vocab if (m := _LEGACY_PLACEHOLDER_RE.match(t)) and int(m.group(1)) < N_SPECIAL_SLOTS]


def is_reserved_name(token: str) -> bool:
    """True for names the layout owns: specials, placeholders, unused ids and byte tokens."""
    return token in SPECIAL_TOKENS or bool(_PLACEHOLDER_RE.match(token) or _BYTE_RE.match(token))


def ngram_slots(size: int) -> list[int]:
    """The ids n-grams occupy, in fill order, for a vocabulary of `size` (recipe section 2.4)."""
    _check_size(size)
    ranges = NGRAM_RANGES if size == 131_072 else NGRAM_RANGES[:2]
    return [i for lo, hi in ranges for i in range(lo, hi)]


def _check_size(size: int) -> None:
    if size not in VOCAB_SIZES:
        raise ValueError(f"vocab size {size} is not a bvv241 size: use 65536 or 131072")


def sort_ngrams(ngrams: Iterable[str]) -> list[str]:
    """Deduplicated n-grams in layout order: length descending, then string (code points)."""
    return sorted(set(ngrams), key=lambda s: (-len(s), s))


def bvv241_vocab(size: int = 65_536, ngrams: Iterable[str] = (), byte_fallback: bool = True) -> list[str]:
    """The id-ordered token strings of a bvv241 vocabulary (recipe section 2).

    `ngrams` is any iterable of multi-character strings; it is deduplicated and sorted by
    (length desc, string) before filling the n-gram slots. `byte_fallback=False` gives the
    published layout exactly (placeholders in special slots 128..255).
    """
    _check_size(size)
    grams = sort_ngrams(ngrams)
    bad = next((g for g in grams if len(g) < 2 or is_reserved_name(g)), None)
    if bad is not None:
        raise ValueError(f"n-gram {bad!r} is a single character or a reserved token name: remove it from the n-gram list")
    slots = ngram_slots(size)
    if len(grams) > len(slots):
        raise ValueError(f"{len(grams)} n-grams do not fit the {len(slots)} free slots of a {size} vocab: "
                         "pass fewer n-grams (a smaller top_per_n) or use the 131072 size")
    vocab = [f"<unused_{i}>" for i in range(size)]
    for lo, hi in CHAR_RANGES:
        for cp in range(lo, hi):
            vocab[cp] = chr(cp)
    vocab[SPECIAL_BASE:SPECIAL_BASE + N_SPECIAL_SLOTS] = special_slots(byte_fallback)
    for slot, gram in zip(slots, grams):
        vocab[slot] = gram
    return vocab


# --- n-gram statistics (recipe section 2, "Variants") ------------------------------------

# Words: runs of Latin (ASCII + Latin-1 letters + Latin Extended-A/B) and Cyrillic letters, as
# in the recipe, plus CJK ideographs so that a zh corpus contributes its own n-grams (the
# recipe's 32 Wikipedia languages had none). Digits are removed first (recipe).
WORD_PATTERN = r"[A-Za-z\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u024F\u0400-\u04FF\u3400-\u4DBF\u4E00-\u9FFF]+"
LATIN_CYRILLIC_PATTERN = r"[A-Za-z\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u024F\u0400-\u04FF]+"
_DIGITS = re.compile(r"\d+")


def ngram_counts(texts: Iterable[str], ns: Sequence[int], word_pattern: str = WORD_PATTERN) -> dict[int, Counter]:
    """Character n-gram counts inside words, per n (n-grams never cross a word boundary).

    Words are counted first and n-grams taken per distinct word weighted by its count: the
    same totals as a pass over every word occurrence, at a fraction of the cost.
    """
    word_re = re.compile(word_pattern)
    words: Counter = Counter()
    for text in texts:
        words.update(word_re.findall(_DIGITS.sub("", text)))
    counts: dict[int, Counter] = {n: Counter() for n in ns}
    for word, c in words.items():
        for n in ns:
            cn = counts[n]
            for i in range(len(word) - n + 1):
                cn[word[i:i + n]] += c
    return counts


def _top(counter: Counter, k: int) -> list[str]:
    # ties broken by the string so the table is deterministic
    return [g for g, _ in sorted(counter.items(), key=lambda gc: (-gc[1], gc[0]))[:k]]


def ngram_ranks(texts_by_lang: Mapping[str, Iterable[str]], ns: Sequence[int] = (2, 3),
                word_pattern: str = WORD_PATTERN) -> dict[str, int]:
    """For every n-gram seen, its best 1-based frequency rank among the lists of one language
    and one n: the n-gram is in the recipe's table exactly when that rank <= top_per_n."""
    first_k: dict[str, int] = {}
    for texts in texts_by_lang.values():
        counts = ngram_counts(texts, ns, word_pattern)
        for n in ns:
            for r, g in enumerate(_top(counts[n], len(counts[n])), 1):
                if first_k.get(g, r + 1) > r:
                    first_k[g] = r
    if not first_k:
        raise ValueError(f"n-gram table: the corpus has no words (languages {sorted(texts_by_lang)}): "
                         "pass non-empty texts or an explicit n-gram list")
    return first_k


def ngram_table(texts_by_lang: Mapping[str, Iterable[str]], ns: Sequence[int] = (2, 3),
                top_per_n: int | None = 338, capacity: int = 8_192,
                word_pattern: str = WORD_PATTERN) -> list[str]:
    """The recipe's n-gram table: top `top_per_n` n-grams per language and per n, united,
    deduplicated and sorted longest first (recipe section 2: bvv241-2-3 took the top 338 per n
    per language of Wikipedia 2- and 3-grams, words matched by a regex, digits removed).

    `top_per_n=None` picks the largest k whose union still fits `capacity` free slots (how
    bvv241-max is sized). An empty corpus (no word anywhere) raises ValueError.
    """
    first_k = ngram_ranks(texts_by_lang, ns, word_pattern)
    if top_per_n is None:  # the largest k whose union fits the free slots
        ks = sorted(first_k.values())
        top_per_n = ks[-1] if len(ks) <= capacity else ks[capacity] - 1
    table = sort_ngrams(g for g, k in first_k.items() if k <= top_per_n)
    if len(table) > capacity:
        raise ValueError(f"top_per_n={top_per_n} gives {len(table)} n-grams, more than the {capacity} "
                         "free slots: lower top_per_n")
    return table


@dataclass(frozen=True)
class VocabKind:
    """A named bvv241 variant (recipe section 2, "Variants")."""

    size: int  # vocabulary size: 65536 or 131072
    ns: tuple[int, ...]  # n-gram lengths counted
    top_per_n: int | None  # n-grams kept per n per language; None = as many as fill the free slots


VOCAB_KINDS: dict[str, VocabKind] = {
    "bvv241-2-3": VocabKind(65_536, (2, 3), 338),
    "bvv241-max": VocabKind(131_072, (2, 3, 4, 5), None),
}
DEFAULT_CORPORA = ("libreoffice-en-ru", "libreoffice-en-zh")


def corpus_texts_by_lang(corpora: Sequence[str] = DEFAULT_CORPORA, split: str = "train",
                         max_chars: int = 4_000_000) -> dict[str, list[str]]:
    """Texts of corpora grouped by language, for n-gram statistics: `bvvlab.corpus.sources.texts_by_lang`."""
    from bvvlab.corpus.sources import texts_by_lang

    return texts_by_lang(corpora, split, max_chars)


def kind_ngrams(kind: str, texts_by_lang: Mapping[str, Iterable[str]] | None = None) -> list[str]:
    """The n-gram table of a named variant, from `texts_by_lang` or the embedded corpora."""
    if kind not in VOCAB_KINDS:
        raise ValueError(f"unknown vocab kind {kind!r}: use one of {sorted(VOCAB_KINDS)}")
    spec = VOCAB_KINDS[kind]
    if texts_by_lang is None:
        return list(_default_ngrams(kind))
    return ngram_table(texts_by_lang, spec.ns, spec.top_per_n, capacity=len(ngram_slots(spec.size)))


@functools.lru_cache(maxsize=4)
def _default_ngrams(kind: str) -> tuple[str, ...]:
    spec = VOCAB_KINDS[kind]
    return tuple(ngram_table(corpus_texts_by_lang(), spec.ns, spec.top_per_n, capacity=len(ngram_slots(spec.size))))


# --- Hugging Face tokenizer --------------------------------------------------------------

def vocab_ngrams(vocab: Sequence[str]) -> list[str]:
    """The n-grams of a vocabulary: its multi-character tokens that are not reserved names,
    in layout order. Works for full and compact vocabularies alike."""
    return sort_ngrams(t for t in vocab if len(t) > 1 and not is_reserved_name(t))


def bpe_merges(vocab_set: set[str] | Mapping[str, int], ngrams: Sequence[str]) -> list[tuple[str, str]]:
    """Every two-way split (p[:i], p[i:]) of each n-gram with both halves in the vocabulary,
    in n-gram order (recipe section 2: longer n-grams merge first)."""
    return [(p[:i], p[i:]) for p in ngrams for i in range(1, len(p)) if p[:i] in vocab_set and p[i:] in vocab_set]


def hf_tokenizer(vocab: Sequence[str], ngrams: Sequence[str] | None = None, lossless: bool = True,
                 **init_kwargs: Any):
    """A `transformers` fast tokenizer (TokenizersBackend, alias PreTrainedTokenizerFast) over
    `vocab` with the recipe's BPE mechanics (section 2).

    `ngrams` (default: `vocab_ngrams(vocab)`) fixes the merge order. `lossless=True` needs the
    byte tokens `<0x80>`..`<0xFF>` and the ASCII characters in `vocab`. Extra `init_kwargs` are
    stored in tokenizer_config.json (bvvlab keeps `bvvlab_full_ids` there for compact vocabs).

    `padding_side` defaults to "left" (saved with the tokenizer): the model is a decoder-only
    LM (recipe section 4), so a padded batch given to `generate` must end in real tokens, and
    `tok(batch, padding=True)` must pad on the left for that without the caller remembering.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    token_to_id: dict[str, int] = {}
    for i, t in enumerate(vocab):
        if token_to_id.setdefault(t, i) != i:
            raise ValueError(f"token {t!r} appears twice in the vocabulary (ids {token_to_id[t]} and {i}): "
                             "token strings must be unique")
    for name in ("<pad>", "<s>", "</s>", "<unk>"):
        if name not in token_to_id:
            raise ValueError(f"the vocabulary has no {name} token: build it with bvv241_vocab() or compact_vocab()")
    if lossless:
        missing = [t for t in BYTE_TOKENS + tuple(chr(c) for c in range(128)) if t not in token_to_id]
        if missing:
            raise ValueError(f"lossless=True needs the byte tokens <0x80>..<0xFF> and all ASCII characters, "
                             f"but {missing[0]!r} is missing: build the vocab with byte_fallback=True or pass lossless=False")
    grams = vocab_ngrams(vocab) if ngrams is None else list(ngrams)
    absent = next((g for g in grams if g not in token_to_id), None)
    if absent is not None:
        raise ValueError(f"n-gram {absent!r} is not in the vocabulary: pass the n-grams the vocab was built with")
    model = models.BPE(vocab=token_to_id, merges=bpe_merges(token_to_id, grams), unk_token="<unk>",
                       byte_fallback=lossless, fuse_unk=False)
    tok = Tokenizer(model)
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()]) if lossless else decoders.Fuse()
    # the 23 named specials become special added tokens, as the author registered them (the
    # placeholders and byte tokens stay plain vocabulary, so the text "<0x80>" or
    # "<special_token_57367>" is never mistaken for one); an old vocabulary whose placeholders
    # carry slot-offset names keeps them registered, as it was built
    specials = [t for t in vocab if t in SPECIAL_TOKENS] + legacy_placeholders(vocab)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        clean_up_tokenization_spaces=False, model_max_length=1 << 30,
        bvvlab_lossless=lossless, **{"padding_side": "left", **init_kwargs})


def build_tokenizer(kind: str = "bvv241-2-3", ngrams: Iterable[str] | None = None,
                    texts_by_lang: Mapping[str, Iterable[str]] | None = None, lossless: bool = True):
    """A full bvv241 tokenizer of a named kind: n-grams from `ngrams`, else computed from
    `texts_by_lang`, else from the embedded corpora (recipe section 2)."""
    if kind not in VOCAB_KINDS:
        raise ValueError(f"unknown vocab kind {kind!r}: use one of {sorted(VOCAB_KINDS)}")
    grams = sort_ngrams(ngrams) if ngrams is not None else kind_ngrams(kind, texts_by_lang)
    vocab = bvv241_vocab(VOCAB_KINDS[kind].size, grams, byte_fallback=lossless)
    return hf_tokenizer(vocab, grams, lossless=lossless)


def tokenizer_vocab(tokenizer) -> list[str]:
    """The id-ordered token strings of a tokenizer (holes, if any, as `<unused_{id}>`)."""
    size = len(tokenizer)
    out = [f"<unused_{i}>" for i in range(size)]
    for token, i in tokenizer.get_vocab().items():
        if i < size:
            out[i] = token
    return out


# --- compact vocabularies ----------------------------------------------------------------

def compact_vocab(full_vocab, texts: Iterable[str]) -> tuple[list[str], list[int]]:
    """The tokens a corpus uses, for a CPU-sized model whose embedding rows are taken from the
    full matrix (`matrix[full_ids]`), so the compact model stays in the shared space.

    `full_vocab` is a lossless full tokenizer or its id-ordered token list. Kept: every token
    the full tokenizer emits on `texts`, every vocabulary n-gram inside those tokens (the BPE
    intermediates, so the compact BPE replays the same merges: same token sequence, mapped
    ids), the named specials, ASCII, and the byte tokens `<0x80>`..`<0xFF>` (so the compact
    tokenizer is still lossless). Returns (tokens, full_ids), both in full-id order.
    """
    if isinstance(full_vocab, (list, tuple)):
        vocab, tok = list(full_vocab), hf_tokenizer(full_vocab)
    else:
        vocab, tok = tokenizer_vocab(full_vocab), full_vocab
    index = {t: i for i, t in enumerate(vocab)}
    missing = next((t for t in BYTE_TOKENS if t not in index), None)
    if missing is not None:
        raise ValueError(f"the full vocabulary has no byte token {missing}: build it with byte_fallback=True")
    used: set[int] = set()
    batch: list[str] = []

    def flush() -> None:
        for enc in tok.backend_tokenizer.encode_batch(batch, add_special_tokens=False):
            used.update(enc.ids)
        batch.clear()

    for text in texts:
        batch.append(text)
        if len(batch) >= 1024:
            flush()
    flush()
    keep = set(used)
    for i in used:  # BPE intermediates: every vocabulary substring of a used token
        t = vocab[i]
        if len(t) > 1 and not is_reserved_name(t):
            keep.update(index[t[a:b]] for a in range(len(t)) for b in range(a + 1, len(t) + 1) if t[a:b] in index)
    keep.update(index[t] for t in SPECIAL_TOKENS if t in index)
    keep.update(index[t] for t in BYTE_TOKENS)
    keep.update(index[chr(c)] for c in range(128))
    full_ids = sorted(keep)
    return [vocab[i] for i in full_ids], full_ids


def compact_tokenizer(full_tokenizer, texts: Iterable[str]):
    """A lossless compact tokenizer for `texts` (see `compact_vocab`). Its tokenizer_config.json
    keeps `bvvlab_full_ids` (the full-vocabulary id of every compact id), `bvvlab_full_size` and
    `bvvlab_full_vocab_hash`, so a checkpoint knows which full matrix its rows came from."""
    tokens, full_ids = compact_vocab(full_tokenizer, texts)
    return hf_tokenizer(tokens, lossless=True, bvvlab_full_ids=full_ids, bvvlab_full_size=len(full_tokenizer),
                        bvvlab_full_vocab_hash=vocab_hash(tokenizer_vocab(full_tokenizer)))


def full_ids_of(tokenizer) -> list[int] | None:
    """The compact-to-full id map saved with a compact tokenizer (None for a full one)."""
    ids = tokenizer.init_kwargs.get("bvvlab_full_ids")
    return list(ids) if ids is not None else None


# --- any tokenizer -----------------------------------------------------------------------

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


def load_tokenizer_dir(path: str | Path):
    """`AutoTokenizer.from_pretrained` on a local folder, offline, with `trust_remote_code=False`
    said explicitly (left unset, transformers asks on a terminal whether to run a folder's
    `auto_map` code, and a "y" runs it); a folder that is not a tokenizer, or one that needs its
    own code, raises one clear ValueError / FileNotFoundError."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer dir {path} does not exist: pass a folder written by save_pretrained()")
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        raise ValueError(f"{path} is not a tokenizer dir (none of {', '.join(_TOKENIZER_FILES)}): "
                         "pass a folder written by tokenizer.save_pretrained()")
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - any loader failure is the same user error
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"{path} could not be loaded as a tokenizer ({type(exc).__name__}: {first}): "
                         "pass a folder written by tokenizer.save_pretrained()") from None


def vocab_from_tokenizer_dir(path: str | Path) -> list[str]:
    """The id-ordered token strings of any Hugging Face tokenizer saved in `path`, spelled as
    the tokenizer spells them (byte-level BPE gives "Ġthe"): what the recipe renders for
    bvv241-nemo (section 2, "Variants")."""
    return tokenizer_vocab(load_tokenizer_dir(path))


# --- measurement -------------------------------------------------------------------------

def chars_per_token(tokenizer, texts: Iterable[str]) -> float:
    """Compression as the recipe reports it (section 2): characters / tokens over `texts`."""
    texts = list(texts)
    n_tokens = sum(len(e.ids) for e in tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False))
    if n_tokens == 0:
        raise ValueError("chars_per_token: the texts are empty: pass non-empty texts")
    return sum(len(t) for t in texts) / n_tokens


def vocab_hash(vocab: Sequence[str]) -> str:
    """sha256 of the id-ordered token strings (identifies a vocabulary in meta.json)."""
    return hashlib.sha256(json.dumps(list(vocab), ensure_ascii=False).encode("utf-8")).hexdigest()
