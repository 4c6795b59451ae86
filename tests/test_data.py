"""Token shards and batches (issue 5, "Data"): exact round trip, dtype, content-keyed cache,
resumable and rank-independent batch sampling."""

from __future__ import annotations

import copy
import itertools
import json
import string

import numpy as np
import pytest
from tokenizers import Regex, pre_tokenizers

from bvvlab.glyph import tokenizer as T
from bvvlab.train import shards as D

DOCS = ["hello world", "мир труд май", "a\tb\nc", "zebra 42"] * 5


def small_tokenizer():
    """A lossless tokenizer over ASCII + a few Cyrillic letters (the rest goes through bytes)."""
    vocab = ["<pad>", "<s>", "</s>", "<unk>"] + list(T.BYTE_TOKENS) + [chr(c) for c in range(128)] + list("мир")
    return T.hf_tokenizer(vocab, [])


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "docs.jsonl"
    import json

    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in DOCS), encoding="utf-8")
    return path


def test_shard_round_trip_uint16(tmp_path, corpus_file):
    tok = small_tokenizer()
    shard = D.build_shard(str(corpus_file), tok, "train", root=tmp_path / "shards", progress=False)
    texts = list(D.iter_texts({str(corpus_file): 1.0}, "train", 0))
    assert texts, "the corpus split must not be empty for this test"
    # tokens: each document's ids, then EOS; exactly what the tokenizer gives
    expected = []
    for t in texts:
        expected += tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert shard.tokens.dtype == np.uint16
    assert np.array_equal(np.asarray(shard.tokens), np.asarray(expected))
    # characters: every character of the text counted exactly once (byte-fallback tokens of one
    # character share it), EOS covers none
    assert int(np.asarray(shard.chars, dtype=np.int64).sum()) == sum(len(t) for t in texts) == shard.n_chars
    assert shard.meta["n_docs"] == len(texts)
    # decoding the shard gives the text back
    eos = tok.eos_token_id
    ids = np.asarray(shard.tokens).tolist()
    docs, cur = [], []
    for i in ids:
        if i == eos:
            docs.append(tok.decode(cur))
            cur = []
        else:
            cur.append(i)
    assert docs == texts


def test_chars_per_token_counts_shared_spans_once():
    # "м" as two byte tokens sharing the span (0, 1), then "a" at (1, 2)
    assert D._chars_per_token([(0, 1), (0, 1), (1, 2)]) == [1, 0, 1]
    assert D._chars_per_token([(0, 3), (3, 4)]) == [3, 1]
    # the vectorised rule the shards use agrees with the literal one, on random spans too
    rng = np.random.default_rng(0)
    for offs in ([(0, 1), (0, 1), (1, 2)], [(0, 3), (3, 4)], [(2, 2), (0, 1)]):
        assert D.chars_per_token(np.asarray(offs).reshape(-1, 2)).tolist() == D._chars_per_token(offs)
    for _ in range(200):
        s = np.sort(rng.integers(0, 30, size=rng.integers(0, 20)))
        offs = [(int(a), int(a + rng.integers(0, 4))) for a in s]
        assert D.chars_per_token(np.asarray(offs, dtype=np.int64).reshape(-1, 2)).tolist() == D._chars_per_token(offs)


def test_uint32_when_vocab_exceeds_uint16(tmp_path, corpus_file):
    assert D.token_dtype(65536) == np.uint16  # ids 0..65535 fit
    assert D.token_dtype(65537) == np.uint32
    # a 131,072 vocabulary whose 3-grams spill past 0xFFFF (layout: 3-grams first, "zzz" last)
    letters = string.ascii_lowercase
    grams = ["".join(p) for n in (3, 2) for p in itertools.product(letters, repeat=n)]
    tok = T.hf_tokenizer(T.bvv241_vocab(131072, grams))
    shard = D.build_shard(str(corpus_file), tok, "train", root=tmp_path / "shards", progress=False)
    assert shard.tokens.dtype == np.uint32
    texts = list(D.iter_texts({str(corpus_file): 1.0}, "train", 0))
    expected = [i for t in texts for i in tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]
    assert max(expected) > 65535  # ids that uint16 would have wrapped
    assert np.asarray(shard.tokens).tolist() == expected


def test_cache_reuse_and_content_key(tmp_path, corpus_file, monkeypatch):
    tok = small_tokenizer()
    root = tmp_path / "shards"
    a = D.build_shard(str(corpus_file), tok, "train", root=root, progress=False)

    def boom(*args, **kwargs):
        raise AssertionError("a cached shard was tokenised again")

    monkeypatch.setattr(D, "encode_texts", boom)
    b = D.build_shard(str(corpus_file), tok, "train", root=root, progress=False)
    assert b.path == a.path and np.array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
    monkeypatch.undo()
    # a different limit, split or file content is a different shard
    c = D.build_shard(str(corpus_file), tok, "train", root=root, max_chars=20, progress=False)
    assert c.path != a.path and c.n_chars == 20
    corpus_file.write_text(corpus_file.read_text(encoding="utf-8").replace("zebra", "zebu"), encoding="utf-8")
    d = D.build_shard(str(corpus_file), tok, "train", root=root, progress=False)
    assert d.path != a.path
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == []  # no temp dirs left


def _shard(n=500, vocab=300):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, vocab, n).astype(np.uint16)
    return D.TokenShard(path=None, tokens=tokens, chars=np.ones(n, np.uint16), meta={"n_chars": n})


def test_sampler_resume_and_ranks():
    shard = _shard()
    s = D.BatchSampler(shard, seq_len=16, global_batch=8, seed=3)
    s.next_batch()
    state = s.state_dict()
    ahead = [s.next_batch() for _ in range(3)]
    r = D.BatchSampler(shard, seq_len=16, global_batch=8, seed=99)
    r.load_state_dict(state)
    assert all((x == y).all() for x, y in zip(ahead, [r.next_batch() for _ in range(3)]))
    # two ranks' slices, side by side, are the one-process global batch
    one = D.BatchSampler(shard, 16, 8, seed=5).next_batch()
    parts = [D.BatchSampler(shard, 16, 8, seed=5, rank=k, world_size=2).next_batch() for k in range(2)]
    assert (np.concatenate([p.numpy() for p in parts]) == one.numpy()).all()
    # windows are real slices of the shard
    row = one[0].numpy()
    starts = [i for i in range(len(shard) - 15) if (np.asarray(shard.tokens[i:i + 16]) == row).all()]
    assert starts


def test_eval_windows_cover_every_target_once():
    shard = _shard(n=100)
    wins = list(D.eval_windows(shard, seq_len=16, n_windows=1000))
    assert sum(len(w) - 1 for w, _ in wins) == len(shard) - 1
    assert sum(c for _, c in wins) == len(shard) - 1  # one char per token here, the first is no target


def test_empty_corpus_is_one_clear_error(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="no text|empty"):
        D.build_shard(str(empty), small_tokenizer(), "train", root=tmp_path / "shards", progress=False)
    assert not any((tmp_path / "shards").glob("*")) if (tmp_path / "shards").exists() else True


def test_corpus_weights_parsing():
    assert D.normalize_weights("a:0.7,b:0.3") == {"a": 0.7, "b": 0.3}
    assert D.normalize_weights("libreoffice-en-ru") == {"libreoffice-en-ru": 1.0}
    assert D.normalize_weights("hf:/data/x") == {"hf:/data/x": 1.0}
    assert D.normalize_weights("hf:org/x?config=en&streaming=1:0.5,libreoffice-en-ru:0.5") == {
        "hf:org/x?config=en&streaming=1": 0.5, "libreoffice-en-ru": 0.5}  # spec options survive weights
    with pytest.raises(ValueError, match="weight"):
        D.normalize_weights({"a": 0})


def test_local_hugging_face_dataset_source(tmp_path):
    """`hf:<folder>` (a dataset saved with save_to_disk, read offline) tokenises like any source."""
    import datasets

    folder = tmp_path / "ds"
    datasets.Dataset.from_dict({"text": DOCS}).save_to_disk(str(folder))
    tok = small_tokenizer()
    shard = D.build_shard(f"hf:{folder}", tok, "train", root=tmp_path / "shards", progress=False)
    texts = list(D.iter_texts({f"hf:{folder}": 1.0}, "train", 0))
    assert texts and set(texts) <= set(DOCS)
    expected = [i for t in texts for i in tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]
    assert np.asarray(shard.tokens).tolist() == expected


def _decoded_docs(tok, shard):
    ids, docs, cur = np.asarray(shard.tokens).tolist(), [], []
    for i in ids:
        if i == tok.eos_token_id:
            docs.append(tok.decode(cur))
            cur = []
        else:
            cur.append(i)
    return docs


def _write_rows(folder, texts):
    folder.mkdir(exist_ok=True)
    (folder / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")


def _no_tokenising(*args, **kwargs):
    raise AssertionError("a cached shard was tokenised again")


def test_hf_json_folder_shard_follows_a_changed_row(tmp_path, monkeypatch):
    """`hf:<folder of JSON lines>`: unchanged data reuses the cached shard; changing one row
    changes the key, and the new shard holds the new text (not the old shard's)."""
    pytest.importorskip("datasets")
    tok, root, d = small_tokenizer(), tmp_path / "shards", tmp_path / "ds"
    texts = [f"doc {i} zebra" for i in range(12)]
    _write_rows(d, texts)
    a = D.build_shard(f"hf:{d}", tok, "all", root=root, progress=False)
    assert _decoded_docs(tok, a) == texts
    _write_rows(d, texts)  # same bytes, new mtime: still the same content
    with monkeypatch.context() as m:
        m.setattr(D, "encode_texts", _no_tokenising)
        assert D.build_shard(f"hf:{d}", tok, "all", root=root, progress=False).path == a.path
    changed = texts[:5] + ["doc 5 zebu"] + texts[6:]
    _write_rows(d, changed)
    b = D.build_shard(f"hf:{d}", tok, "all", root=root, progress=False)
    assert b.path != a.path and _decoded_docs(tok, b) == changed
    assert _decoded_docs(tok, D.open_shard(a.path)) == texts  # the old shard is intact


def test_hf_hub_shard_key_follows_the_dataset_revision(tmp_path, monkeypatch):
    """A Hub name (a stand-in Hub over local folders, offline) is keyed by the loaded dataset's
    `datasets` fingerprint: a new revision is a new shard, not the old one reused."""
    datasets = pytest.importorskip("datasets")
    tok, root = small_tokenizer(), tmp_path / "shards"
    revs = {1: tmp_path / "rev1", 2: tmp_path / "rev2"}
    _write_rows(revs[1], ["old text one", "old text two"])
    _write_rows(revs[2], ["new text one", "old text two"])
    real = datasets.load_dataset
    current = {"rev": 1}
    monkeypatch.setattr(datasets, "load_dataset", lambda path, *a, **k: real(
        str(revs[current["rev"]]) if path == "org/name" else path, *a, **k))
    a = D.build_shard("hf:org/name", tok, "all", root=root, progress=False)
    with monkeypatch.context() as m:
        m.setattr(D, "encode_texts", _no_tokenising)
        assert D.build_shard("hf:org/name", tok, "all", root=root, progress=False).path == a.path
    current["rev"] = 2
    b = D.build_shard("hf:org/name", tok, "all", root=root, progress=False)
    assert b.path != a.path and _decoded_docs(tok, b) == ["new text one", "old text two"]


def test_streamed_hub_source_is_never_reused(tmp_path, monkeypatch):
    """A streamed Hub dataset has no fingerprint: every build re-tokenises it (and so reads the
    stream's current rows), replacing the shard of its key; no temporary folders are left."""
    datasets = pytest.importorskip("datasets")
    tok, root, d = small_tokenizer(), tmp_path / "shards", tmp_path / "ds"
    _write_rows(d, ["first version", "second row"])
    real, streamed = datasets.load_dataset, []

    def hub(path, *args, **kwargs):
        streamed.append(kwargs.get("streaming"))
        return real(str(d) if path == "org/name" else path, *args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", hub)
    spec = "hf:org/name?streaming=1"
    assert D.source_fingerprint(spec) == f"{spec}#stream"
    a = D.build_shard(spec, tok, "all", root=root, progress=False)
    assert _decoded_docs(tok, a) == ["first version", "second row"] and set(streamed) == {True}
    calls, real_encode = [], D.encode_texts

    def counting_encode(*args, **kwargs):
        calls.append(1)
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(D, "encode_texts", counting_encode)
    _write_rows(d, ["changed version", "second row"])
    b = D.build_shard(spec, tok, "all", root=root, progress=False)
    assert calls and b.path == a.path and _decoded_docs(tok, b) == ["changed version", "second row"]
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []


def test_validation_mixture_drops_train_only_sources():
    w = {"libreoffice-en-ru": 0.9, "instructions": 0.1}
    assert D.held_out_weights(w) == {"libreoffice-en-ru": 0.9}
    with pytest.raises(ValueError, match="no validation split"):
        D.held_out_weights({"instructions": 1.0})


def test_endless_training_source_needs_a_budget():
    with pytest.raises(ValueError, match="train_chars="):
        D.resolve_max_chars({"concepts": 1.0}, "train", None, 0)
    assert D.resolve_max_chars({"concepts": 1.0}, "train", 1000, 0) == 1000
    assert D.resolve_max_chars({"concepts": 1.0}, "validation", None, 0) is None  # held-out sets end


def test_literal_special_token_text_stays_text(tmp_path):
    """"<s>strike</s>" in a user's text file is HTML, not BOS/EOS: the shard holds its characters
    (the only EOS is the one that ends the document) and decodes back to the text."""
    tok = small_tokenizer()
    path = tmp_path / "html.txt"
    path.write_text("".join(f"old <s>price {i}</s> new </s>\n\n" for i in range(20)), encoding="utf-8")
    shard = D.build_shard(str(path), tok, "train", root=tmp_path / "shards", progress=False)
    ids = np.asarray(shard.tokens).tolist()
    docs = list(D.iter_texts({str(path): 1.0}, "train", 0))
    assert docs and all("<s>" in d and "</s>" in d for d in docs)
    assert ids.count(tok.eos_token_id) == len(docs) and ids[-1] == tok.eos_token_id
    assert tok.bos_token_id not in ids
    eos_at = [i for i, t in enumerate(ids) if t == tok.eos_token_id]
    assert tok.decode(ids[:eos_at[0]]) == docs[0]
    assert int(np.asarray(shard.chars, dtype=np.int64).sum()) == sum(map(len, docs))


def test_failed_rebuild_leaves_the_earlier_shard_intact_and_no_temp_folder(tmp_path, corpus_file, monkeypatch):
    """`cache=False` rebuilds a shard over the one of its key: a full disk after the first chunk
    was written is one line naming the shard, the earlier shard stays byte for byte, and no
    temporary folder is left in the shard root."""
    import errno

    from bvvlab.core.errors import OutputError

    tok = small_tokenizer()
    root = tmp_path / "shards"
    a = D.build_shard(str(corpus_file), tok, "train", root=root, progress=False)
    before = {p.name: p.read_bytes() for p in a.path.iterdir()}
    encode = D.encode_texts

    def full_disk_after_one_chunk(*args, **kwargs):
        chunks = encode(*args, **kwargs)
        yield next(chunks)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(D, "encode_texts", full_disk_after_one_chunk)
    with pytest.raises(OutputError, match="no space left") as err:
        D.build_shard(str(corpus_file), tok, "train", root=root, progress=False, cache=False)
    assert str(a.path) in str(err.value) and "\n" not in str(err.value)
    assert {p.name: p.read_bytes() for p in a.path.iterdir()} == before
    assert [p.name for p in root.iterdir()] == [a.path.name]
    monkeypatch.undo()
    b = D.build_shard(str(corpus_file), tok, "train", root=root, progress=False, cache=False)
    assert b.path == a.path and np.array_equal(np.asarray(b.tokens), np.asarray(a.tokens))
    assert [p.name for p in root.iterdir()] == [a.path.name]


def test_split_smaller_than_asked_ends_its_bar_full_and_says_so_once(tmp_path, corpus_file, capsys, monkeypatch):
    """A bar closed short of its total is drawn red in a notebook (02's validation bar stopped at
    83% when val_chars exceeded the split): it ends at 100% and one line says the split was smaller."""
    import tqdm.auto

    ends = []

    class Recorded(tqdm.auto.tqdm):
        def close(self):
            ends.append((self.n, self.total))
            super().close()

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorded)
    total = sum(len(t) for t in D.iter_texts({str(corpus_file): 1.0}, "train", 0))
    D.build_shard(str(corpus_file), small_tokenizer(), "train", root=tmp_path / "a", max_chars=10 * total)
    assert ends and set(ends) == {(total, total)}  # close() may run twice (tqdm calls it again on delete)
    out = capsys.readouterr().out
    assert out.count("fewer than the") == 1 and f"the split has {total:,} characters" in out
    D.build_shard(str(corpus_file), small_tokenizer(), "train", root=tmp_path / "b", max_chars=total // 2)
    assert "fewer than" not in capsys.readouterr().out and ends[-1][0] >= ends[-1][1] == total // 2


# ---------------------------------------------------------------------------------------------
# encode_texts: the batched Rust-backend path equals the per-document Hugging Face call

ADVERSARIAL = [
    "", " ", "   \t\t  \n\n\n  ", "\r\n\r\n", "a  b\t\tc\n\nd", " leading and trailing ",
    "mixed Latin кириллица 中文字符 and ελληνικά", "emoji 😀🚀 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 beyond U+FFFF",
    "private use \ue000\ue001\uf8ff and \uffff", "specials </s><s><pad><unk> [INST] x [/INST]",
    "byte names <0x80><0xFF> and <special_token_57367> <unused_65535>", "\u0301 combining first",
    "zero\u200bwidth\u00a0nbsp\u3000ideographic space", "x" * 5000 + " " + "яблоко " * 700,
]


def some_bytes_tokenizer():
    """Byte fallback with only some byte tokens: "м" (D0 BC) becomes bytes, "и" (D0 B8) <unk>."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<unk>", "</s>", "<0xD0>", "<0xBC>"] + [chr(c) for c in range(128)])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>")


def reference_encode(tok, texts):
    """The rule, one document at a time through the Hugging Face call, with the literal
    `_chars_per_token`: ids + EOS, characters + 0."""
    ids, chars = [], []
    for t in texts:
        enc = tok(t, add_special_tokens=False, split_special_tokens=True, return_offsets_mapping=True)
        ids += enc["input_ids"] + [tok.eos_token_id]
        chars += D._chars_per_token(enc["offset_mapping"]) + [0]
    return ids, chars


def test_encode_texts_equals_the_per_document_call():
    from bvvlab.corpus import sources as corpora

    docs = [d.text for name in ("libreoffice-en-ru", "libreoffice-en-zh", "clone-en")
            for d in itertools.islice(corpora.iter_documents(name, split="validation"), 400)]
    texts = ADVERSARIAL + docs + ADVERSARIAL  # > 1 chunk of _ENCODE_CHUNK documents
    assert len(texts) > 2 * D._ENCODE_CHUNK
    vocab = T.bvv241_vocab(65_536, ["ab", "bc", "abc", "яб", "ко"], byte_fallback=False)
    full = T.build_tokenizer("bvv241-2-3")
    # the same BPE cut at every whitespace character first: the ids cannot change, as no
    # n-gram holds whitespace (the characters per token are then read from the offsets)
    cut = copy.deepcopy(full)
    cut.backend_tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"\s"), behavior="isolated")
    cases = [(full, full, True), (small_tokenizer(),) * 2 + (True,), (cut, full, False),
             (T.hf_tokenizer(vocab, lossless=False),) * 2 + (False,), (some_bytes_tokenizer(),) * 2 + (True,)]
    for tok, ref, by_table in cases:
        assert (D.char_table(tok) is not None) == by_table  # both ways of counting characters run
        parts = list(D.encode_texts(tok, texts))
        ids, chars = reference_encode(ref, texts)
        assert np.concatenate([p[0] for p in parts]).tolist() == ids
        assert np.concatenate([p[1] for p in parts]).tolist() == chars
        assert sum(p[2] for p in parts) == len(texts) and sum(p[3] for p in parts) == sum(map(len, texts))
        # the lossless tokenizers count every character once (lossless=False: <unk> spans too)
        assert sum(chars) == sum(map(len, texts))


def test_encode_texts_leaves_the_tokenizer_as_it_found_it():
    # the Hugging Face call with split_special_tokens=True leaves the backend's
    # encode_special_tokens switched on, so a later backend encode read "</s>" as text
    tok = small_tokenizer()
    before = tok.backend_tokenizer.encode("</s>", add_special_tokens=False).ids
    list(D.encode_texts(tok, ["a </s> b"]))
    assert tok.backend_tokenizer.encode_special_tokens is False
    assert tok.backend_tokenizer.encode("</s>", add_special_tokens=False).ids == before == [tok.eos_token_id]
