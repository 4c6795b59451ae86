"""Token shards and batches: text is tokenised once, then training reads random windows for free.

Why shards: tokenising on the fly costs more than a small model's step on a CPU and makes the
data order depend on worker timing. Here a source mixture (`bvvlab.corpus.sources`: embedded corpora,
text / JSON-lines files, local Hugging Face datasets) is tokenised once into a flat memory-mapped
array of token ids (uint16 while the vocabulary fits, else uint32), cached under
`cache_dir()/shards/<key>` where the key hashes everything that determines the content (source
spec and file contents, an `hf:` dataset's `corpora.hf_fingerprint`, tokenizer, split, limits,
seed); a streamed Hub dataset has no fingerprint and is re-tokenised on every build. A parallel array stores how many
characters of the original text each token covers, so validation can report bits per character,
which does not depend on the tokenizer (frozen vs unfrozen, compact vs full vocabulary compare
fairly; issue 5, "bits per character").

Batches are windows of `seq_len` tokens at positions drawn by a seeded numpy generator; its
state is part of the trainer state, so a resumed run reads exactly the batches the uninterrupted
run would have read. Every rank draws the same global batch and takes its own slice, so N
processes see the same data as one process with the same global batch (DDP equivalence).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from bvvlab.core.atomic import atomic_dir, write_atomic
from bvvlab.core.runinfo import cache_dir

SHARD_FORMAT = 2  # bump when the on-disk layout or the tokenisation rule changes
_ENCODE_CHUNK = 256  # documents per tokenizer call (fast tokenizers batch in Rust)


# ---------------------------------------------------------------------------------------------
# source specs and cache keys


def normalize_weights(corpus: str | dict[str, float]) -> dict[str, float]:
    """`"a"` or `"a:0.7,b:0.3"` or `{"a": 0.7, "b": 0.3}` -> a dict of positive weights."""
    if isinstance(corpus, str):
        weights: dict[str, float] = {}
        for part in [p for p in corpus.split(",") if p.strip()]:
            name, _, w = part.strip().rpartition(":") if _looks_weighted(part) else (part.strip(), "", "1")
            weights[name] = float(w)
        corpus = weights
    if not corpus:
        raise ValueError("corpus is empty: give at least one source, e.g. corpus=libreoffice-en-ru")
    out = {}
    for name, w in dict(corpus).items():
        if not (float(w) > 0):
            raise ValueError(f"corpus weight of {name!r} is {w}: weights must be > 0")
        out[str(name)] = float(w)
    from bvvlab.corpus import sources as corpora

    for name in out:
        corpora.split_spec(name)  # a generated source's options (`concepts?holdout=suite`) are checked now
    corpora.heldout_concepts(out)
    return out


def _looks_weighted(part: str) -> bool:
    """`name:0.5` has a weight; `hf:dir` or `C:\\x` do not (the text after the colon is no number)."""
    head, sep, tail = part.strip().rpartition(":")
    if not sep:
        return False
    try:
        float(tail)
        return bool(head)
    except ValueError:
        return False


def source_fingerprint(name: str) -> str:
    """What identifies a source's content (`bvvlab.corpus.sources.source_fingerprint`)."""
    from bvvlab.corpus import sources as corpora

    return corpora.source_fingerprint(name)


def is_cacheable(fingerprints: Iterable[str]) -> bool:
    """False when a source has no content fingerprint (a streamed `hf:` dataset): its text may
    differ on every read, so a shard made from it must not stand in for a later build."""
    return not any(fp.endswith("#stream") for fp in fingerprints)


def tokenizer_hash(tokenizer: Any) -> str:
    """Hash of the tokenizer's full definition (vocab, normaliser, specials)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    text += json.dumps([tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.pad_token_id])
    return hashlib.sha256(text.encode()).hexdigest()


def shard_key(weights: dict[str, float], tok_hash: str, split: str, max_chars: int | None, seed: int,
              fingerprints: dict[str, str] | None = None) -> str:
    """The cache key: everything that determines a shard's content (`fingerprints`: precomputed
    `source_fingerprint` per source, so a Hub dataset is not loaded twice)."""
    fps = fingerprints or {k: source_fingerprint(k) for k in weights}
    spec = {"format": SHARD_FORMAT, "sources": {fps[k]: v for k, v in sorted(weights.items())},
            "tokenizer": tok_hash, "split": split, "max_chars": max_chars, "seed": seed}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]


# ---------------------------------------------------------------------------------------------
# documents


def iter_texts(weights: dict[str, float], split: str, seed: int) -> Iterator[str]:
    """The mixture's document texts, through `bvvlab.corpus.sources` (one source: its own order)."""
    from bvvlab.corpus import sources as corpora

    if len(weights) == 1:
        docs: Iterable[Any] = corpora.iter_documents(next(iter(weights)), split=split, seed=seed)
    else:
        docs = corpora.mix(weights, split=split, seed=seed)
    for doc in docs:
        text = doc.text if hasattr(doc, "text") else str(doc)
        if text:
            yield text




def held_out_weights(weights: dict[str, float]) -> dict[str, float]:
    """The validation mixture of a training mixture: the same sources and weights, less those
    that have no held-out split (instruction infusion is made from training text)."""
    from bvvlab.corpus.sources import TRAIN_ONLY, source_base

    held = {k: v for k, v in weights.items() if source_base(k) not in TRAIN_ONLY}
    if not held:
        raise ValueError(f"{', '.join(weights)} has no validation split: add a source with held-out text, "
                         "e.g. corpus=libreoffice-en-ru:0.9,instructions:0.1")
    return held


def resolve_max_chars(weights: dict[str, float], split: str, max_chars: int | None, seed: int) -> int | None:
    """The character budget of a split. A training mixture of several sources cycles forever
    (`corpora.mix`), so with no budget it takes one pass worth of characters of its sources;
    a generated source has no end at all, so it needs an explicit budget."""
    if max_chars is not None or split != "train":
        return max_chars
    from bvvlab.corpus.sources import GENERATED, source_base

    endless = [name for name in weights if source_base(name) in GENERATED]
    if endless:
        raise ValueError(f"{endless[0]} generates text without end: set train_chars= (e.g. train_chars=2000000)")
    if len(weights) == 1:
        return None
    from bvvlab.corpus import sources as corpora

    return sum(len(d.text) for name in weights for d in corpora.iter_documents(name, split=split, seed=seed))


def take_chars(texts: Iterable[str], max_chars: int | None) -> Iterator[str]:
    """Documents until `max_chars` characters have been taken (the last one is cut)."""
    left = max_chars
    for text in texts:
        if left is not None:
            if left <= 0:
                return
            text = text[:left]
            left -= len(text)
        yield text


# ---------------------------------------------------------------------------------------------
# shards


@dataclass
class TokenShard:
    """A tokenised split: `tokens[i]` is a token id, `chars[i]` the characters of text it covers."""

    path: Path
    tokens: np.ndarray  # memmap, uint16 or uint32
    chars: np.ndarray  # memmap, uint16: characters of the original text covered by each token
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def n_chars(self) -> int:
        return int(self.meta["n_chars"])


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits (vocab <= 65,536 ids 0..65535), else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.uint32)


def _chars_per_token(offsets: list[tuple[int, int]]) -> list[int]:
    """Characters each token adds: every character counted once, even when several byte-fallback
    tokens share one character's span (they get 0 after the first). The literal rule;
    `chars_per_token` is the same on arrays."""
    out, end = [], 0
    for s, e in offsets:
        out.append(max(0, e - max(s, end)))
        end = max(end, e)
    return out


def chars_per_token(offsets: np.ndarray) -> np.ndarray:
    """`_chars_per_token` vectorised: (n, 2) int64 offsets -> (n,) characters (no Python loop per
    token: tokenising a large corpus spends its time here otherwise)."""
    if not len(offsets):
        return np.zeros(0, np.int64)
    s, e = offsets[:, 0], offsets[:, 1]
    before = np.concatenate([[0], np.maximum.accumulate(e)[:-1]])  # the furthest end so far
    return np.maximum(0, e - np.maximum(s, np.maximum(before, 0)))


def char_table(tokenizer: Any) -> np.ndarray | None:
    """Characters of the text each token id stands for, when the id alone fixes it; else None.

    Why: the offsets `chars_per_token` reads cost more than the BPE (`encode_batch_fast`, which
    skips them, runs about 1.6x faster; bench/bench_prepare.py). For a `tokenizers` BPE with
    byte fallback and nothing that rewrites or cuts the text first (no normalizer, no
    pre-tokenizer, no added tokens matched as text, no dropout or word affixes), a token is
    either a vocabulary string spelled by the characters it covers (len(token) characters) or a
    byte-fallback token `<0xXX>`: the bytes of one character share that character's span, so
    the lead byte counts 1 and a continuation byte (0x80-0xBF) 0, as `_chars_per_token` gives
    them. `<unk>` is the one token whose span the id does not fix (`encode_texts` then reads the
    offsets). The bvv241 tokenizers qualify (glyph/tokenizer.py: no normalizer, no
    pre-tokenizer); tests/test_data.py checks the ids and characters against the offsets rule."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_batch_fast"):
        return None
    spec = json.loads(backend.to_str())
    model = spec.get("model") or {}
    plain = (model.get("type") == "BPE" and model.get("byte_fallback") and not model.get("dropout")
             and not model.get("continuing_subword_prefix") and not model.get("end_of_word_suffix")
             and spec.get("normalizer") is None and spec.get("pre_tokenizer") is None
             and all(t.get("special") for t in spec.get("added_tokens") or []))
    if not plain:
        return None
    vocab: dict[str, int] = model["vocab"]
    table = np.zeros(max(vocab.values()) + 1, np.int64)
    for token, i in vocab.items():
        m = _BYTE_TOKEN.fullmatch(token)
        table[i] = (int(m.group(1), 16) & 0xC0 != 0x80) if m else len(token)
    return table


_BYTE_TOKEN = re.compile(r"<0x([0-9A-F]{2})>")  # tokenizers' byte-fallback token names


def _encode_chunk(tokenizer: Any, chunk: list[str], fast: bool = False) -> tuple[list[list[int]], list[Any] | None]:
    """Token ids and character offsets of each text (`fast`: no offsets, None), special-token
    strings kept as text.

    A fast tokenizer is called through its Rust backend (`backend_tokenizer.encode_batch` with
    `encode_special_tokens=True`): exactly what `tokenizer(chunk, add_special_tokens=False,
    split_special_tokens=True, return_offsets_mapping=True)` runs (transformers'
    `_encode_plus`), without building a BatchEncoding of per-document dicts and attention
    masks, which cost more than the BPE itself (bench/bench_prepare.py; LOG 2026-12-06)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # a slow (Python) tokenizer
        enc = tokenizer(chunk, add_special_tokens=False, split_special_tokens=True, return_offsets_mapping=True)
        return enc["input_ids"], enc["offset_mapping"]
    old = backend.encode_special_tokens
    backend.encode_special_tokens = True  # split_special_tokens: a literal "</s>" in the text is text
    try:
        encs = (backend.encode_batch_fast if fast else backend.encode_batch)(chunk, add_special_tokens=False)
    finally:
        backend.encode_special_tokens = old
    return [e.ids for e in encs], None if fast else [e.offsets for e in encs]


def encode_texts(tokenizer: Any, texts: Iterable[str]) -> Iterator[tuple[np.ndarray, np.ndarray, int, int]]:
    """Yield (ids, chars, n_docs, n_chars) per chunk; each document ends with EOS (0 characters),
    the only special token a shard holds: special-token strings inside the text are tokenised as text.

    Characters per token come from `char_table` when the tokenizer allows it (the bvv241 ones
    do), else from the offsets. A chunk is converted to arrays at once, not per document: each
    document's offsets are shifted by the characters before it, so one `chars_per_token` over
    the chunk gives every document's own counts (a document's offsets lie in [0, len(text)], so
    the running maximum never carries from one document into the next)."""
    eos, unk = tokenizer.eos_token_id, getattr(tokenizer, "unk_token_id", None)
    table = char_table(tokenizer)
    chunk: list[str] = []

    def flush() -> tuple[np.ndarray, np.ndarray, int, int]:
        id_lists, off_lists = _encode_chunk(tokenizer, chunk, fast=table is not None)
        lens = np.fromiter(map(len, id_lists), np.int64, len(id_lists))
        n = int(lens.sum())
        ids = np.fromiter(itertools.chain.from_iterable(id_lists), np.int64, n)
        if table is not None and (unk is None or not (ids == unk).any()):
            chars = table[ids]
        else:  # the offsets rule (an <unk> covers whatever character the vocabulary lacked)
            if off_lists is None:
                off_lists = _encode_chunk(tokenizer, chunk)[1]
            offs = np.fromiter(itertools.chain.from_iterable(itertools.chain.from_iterable(off_lists)), np.int64, 2 * n)
            starts = np.cumsum([0] + [len(t) for t in chunk[:-1]], dtype=np.int64)
            chars = chars_per_token(offs.reshape(-1, 2) + np.repeat(starts, lens)[:, None])
        if eos is not None:  # one EOS after each document: token j of document d moves to j + d
            keep = np.arange(n) + np.repeat(np.arange(len(chunk)), lens)
            ids_out = np.full(n + len(chunk), eos, np.int64)
            chars_out = np.zeros(n + len(chunk), np.int64)
            ids_out[keep], chars_out[keep] = ids, chars
            ids, chars = ids_out, chars_out
        return ids, chars, len(chunk), sum(len(t) for t in chunk)

    for text in texts:
        chunk.append(text)
        if len(chunk) >= _ENCODE_CHUNK:
            yield flush()
            chunk = []
    if chunk:
        yield flush()


def build_shard(weights: str | dict[str, float], tokenizer: Any, split: str = "train", *,
                max_chars: int | None = None, seed: int = 0, cache: bool = True,
                progress: bool = True, root: Path | None = None) -> TokenShard:
    """Tokenise a source mixture's `split` once; later calls with the same content reuse the cache.

    The directory is written under a temporary name and renamed (`atomic_dir`), so a killed build
    never leaves a half shard that a later run would trust.

    A mixture with a streamed `hf:` source (`?streaming=1`, a Hub name) has no content
    fingerprint, so it is re-tokenised on every call and replaces the shard of its key; the one
    exception is a non-zero rank of an initialised torch.distributed group, which opens the shard
    rank 0 has just built (the trainer builds on rank 0, then a barrier, then the others open it),
    so all ranks read the same tokens. A resumed run re-reads the stream: its data matches the
    interrupted run's only if the stream gives the same rows.
    """
    weights = normalize_weights(weights)
    max_chars = resolve_max_chars(weights, split, max_chars, seed)
    fps = {k: source_fingerprint(k) for k in weights}
    key = shard_key(weights, tokenizer_hash(tokenizer), split, max_chars, seed, fps)
    root = Path(root) if root is not None else cache_dir() / "shards"
    final = root / key
    if not is_cacheable(fps.values()):
        cache = _nonzero_rank() and (final / "meta.json").exists()
    if cache and (final / "meta.json").exists():
        return open_shard(final)

    try:
        with atomic_dir(final, replace=not cache) as tmp:
            _write_shard(tmp, weights, tokenizer, split, max_chars, seed, key, progress,
                         shard_key(weights, "", split, max_chars, seed, fps))
    except FileExistsError:
        if not (final / "meta.json").exists():
            raise
        # another process finished the same shard first (only when cached): theirs is identical
    return open_shard(final)


def _write_shard(tmp: Path, weights: dict[str, float], tokenizer: Any, split: str, max_chars: int | None,
                 seed: int, key: str, progress: bool, content: str) -> None:
    """Tokenise into the (temporary) folder `tmp`: tokens.bin, chars.bin, meta.json."""
    from tqdm.auto import tqdm

    dtype = token_dtype(len(tokenizer))
    n_tokens = n_docs = n_chars = 0
    bar = tqdm(desc=f"tokenising {split}", unit=" chars", total=max_chars, disable=not progress,
               leave=False)
    with open(tmp / "tokens.bin", "wb") as ft, open(tmp / "chars.bin", "wb") as fc:
        for ids, chars, nd, nc in encode_texts(tokenizer, take_chars(iter_texts(weights, split, seed),
                                                                      max_chars)):
            if ids.size and int(ids.max()) >= np.iinfo(dtype).max + 1:
                raise ValueError(f"token id {int(ids.max())} does not fit {dtype}: tokenizer/vocab mismatch")
            ft.write(ids.astype(dtype).tobytes())
            fc.write(np.minimum(chars, 65535).astype(np.uint16).tobytes())
            n_tokens += ids.size
            n_docs += nd
            n_chars += nc
            bar.update(nc)
    if progress and max_chars is not None and n_chars < max_chars:
        # the split is smaller than asked: the bar ends at what there was (a bar closed at 83% is drawn red,
        # as a failure, in a notebook) and one line says so
        bar.total = n_chars
        bar.refresh()
        print(f"tokenising {split}: the split has {n_chars:,} characters, fewer than the {max_chars:,} asked; "
              "all of them are used", flush=True)
    bar.close()
    if n_tokens == 0:
        names = ", ".join(weights)
        raise ValueError(f"corpus {names} has no text in split {split!r}: point corpus= at a source with text")
    meta = shard_meta(key, split, weights, max_chars, seed, dtype, len(tokenizer), tokenizer_hash(tokenizer),
                      content, n_tokens=n_tokens, n_docs=n_docs, n_chars=n_chars)
    write_atomic(tmp / "meta.json", json.dumps(meta, indent=2) + "\n")


def shard_meta(key: str, split: str, weights: dict[str, float], max_chars: int | None, seed: int, dtype: np.dtype,
               vocab_size: int, tok_hash: str, content: str, *, n_tokens: int, n_docs: int,
               n_chars: int) -> dict[str, Any]:
    """A shard's meta.json (one writer for the trainer's build and `bvvlab data prepare`).
    `tokenizer` and `content` (the key without the tokenizer) let a missing shard be told apart
    from one of the same text prepared with another tokenizer."""
    return {"format": SHARD_FORMAT, "key": key, "split": split, "sources": weights, "max_chars": max_chars,
            "seed": seed, "dtype": dtype.name, "vocab_size": vocab_size, "n_tokens": n_tokens,
            "n_docs": n_docs, "n_chars": n_chars, "tokenizer": tok_hash,
            "content": content}


def _nonzero_rank() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() \
        and torch.distributed.get_rank() != 0


def open_shard(path: str | Path) -> TokenShard:
    path = Path(path)
    meta = json.loads((path / "meta.json").read_text())
    n = int(meta["n_tokens"])
    tokens = np.memmap(path / "tokens.bin", dtype=np.dtype(meta["dtype"]), mode="r", shape=(n,))
    chars = np.memmap(path / "chars.bin", dtype=np.uint16, mode="r", shape=(n,))
    return TokenShard(path, tokens, chars, meta)


# ---------------------------------------------------------------------------------------------
# batches


class BatchSampler:
    """Random windows of `seq_len` tokens from a shard, drawn by a seeded generator (the model's
    HF-convention loss predicts tokens 1..seq_len-1 of each window from the ones before).

    `next_batch()` draws the whole *global* batch (`global_batch` windows) and returns this rank's
    contiguous slice, so the data a step sees does not depend on the number of processes. The
    generator state (`state_dict`) is saved with every checkpoint: exact resume.
    """

    def __init__(self, shard: TokenShard, seq_len: int, global_batch: int, seed: int,
                 rank: int = 0, world_size: int = 1):
        if len(shard) < seq_len + 1:
            raise ValueError(f"training split has {len(shard)} tokens, not more than seq_len={seq_len}: "
                             "use more text (train_chars=) or a shorter seq_len")
        if global_batch % world_size:
            raise ValueError(f"batch_size {global_batch} is not divisible by the {world_size} processes")
        self.shard, self.seq_len, self.global_batch = shard, seq_len, global_batch
        self.rank, self.world_size = rank, world_size
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.batches_drawn = 0

    def next_batch(self) -> torch.Tensor:
        """(global_batch // world_size, seq_len) int64 token ids for this rank."""
        starts = self.rng.integers(0, len(self.shard) - self.seq_len, size=self.global_batch)
        self.batches_drawn += 1
        per = self.global_batch // self.world_size
        mine = starts[self.rank * per:(self.rank + 1) * per]
        rows = np.stack([np.asarray(self.shard.tokens[s:s + self.seq_len], dtype=np.int64) for s in mine])
        return torch.from_numpy(rows)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "batches_drawn": self.batches_drawn}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.batches_drawn = int(state["batches_drawn"])


def eval_windows(shard: TokenShard, seq_len: int, n_windows: int | None) -> Iterator[tuple[torch.Tensor, int]]:
    """Validation windows from the start of the split, the same for every run on the same data
    (`n_windows=None`: all of them, the whole split).

    Window i is tokens[i*(T-1) : i*(T-1)+T]: consecutive windows share one token, so every token
    after the first is a target exactly once. Yields (ids (<=T,), characters covered by the
    targets ids[1:]). The last window may be shorter.
    """
    step = seq_len - 1
    for i in range(n_windows) if n_windows is not None else itertools.count():
        s = i * step
        e = min(s + seq_len, len(shard))
        if e - s < 2:
            return
        ids = torch.from_numpy(np.asarray(shard.tokens[s:e], dtype=np.int64))
        yield ids, int(np.asarray(shard.chars[s + 1:e], dtype=np.int64).sum())
