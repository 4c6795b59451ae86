"""Documents from every text source the workbench trains and evaluates on, and their mixture.

Why (issue 2, "The embedded corpora"): the offline default data ships in the
repo, and every consumer (tokenizer statistics, token shards, probes, evaluation) reads text
through one small API with language tags:

- `iter_documents(source, split="train", seed=0, **options) -> Iterator[Document]`
- `mix(weights, split="train", seed=0) -> Iterator[Document]`

Sources (`CORPORA` lists the names):

- "libreoffice-en-ru", "libreoffice-en-zh": LibreOffice help paragraph pairs committed under
  `data/corpora/` (see its README: provenance, MPL-2.0, counts, fixed split). The file's SHA-256
  is checked against `manifest.json` before reading. One document per pair, shuffled by seed.
- "concepts": the bilingual concept generator (`bvvlab.corpus.concepts.ConceptCorpus`; options
  `parallel_ratio`, `holdout_concepts`, ...). "train" is unbounded.
- "instructions": instruction infusion in the prompt formats of docs/recipe.md section 7
  (`InstructionCorpus`), built from training splits only; "train" only, unbounded.
- The embedded sources take options in the spec as a query string, so a training `corpus=`
  can carry them: "concepts?holdout=suite" never mentions the suite's held-out concepts
  (`concepts.suite_holdout`, about 10%, what `bvvlab eval` and `bvvlab probe` report apart);
  "concepts?holdout=cat+dog" names them; "concepts?parallel_ratio=0.7". "instructions?holdout=..."
  and "libreoffice-en-ru?holdout=..." drop the training items and pairs that spell any word form
  of those concepts (`concepts.mention_pattern`; the LibreOffice validation/test splits stay
  whole). A mixture whose embedded sources hold out different concepts is refused
  (`heldout_concepts`): one would teach what another holds out. Files and hf: sources are not
  filtered.
- "clone-en": English and a glyph-disjoint clone of English (`bvvlab.corpus.clone`), the
  probes' positive control; options holdout=, share= (of clone documents, 0.5),
  concept_share= (of concept-sentence documents, 0.5). Train on it with a vocabulary that holds
  the clones of the English n-grams (`scripts/issue28_clone.py` builds one).
- a path: a `.txt` file (one document per blank-line-separated paragraph), a `.jsonl` file
  (one JSON object per line with a `text` field and an optional `lang`), either of them
  `.gz`-compressed, or a directory (one document per `*.txt` file, recursively, sorted).
  Files have no split of their own: "train"/"validation"/"test" take the documents whose
  text hash falls in 0-89/90-94/95-99 (as the LibreOffice split), "all" takes every document.
  Files stream in order (no shuffle; `seed` is unused).
- "hf:<dataset name or local path>": a Hugging Face dataset (`datasets`). A folder written by
  `save_to_disk` is loaded with `load_from_disk`; anything else with `load_dataset` (local data
  files, or a Hub name: that downloads, so only when you are online and ask for it). Options
  `text_column="text"`, `lang_column="lang"`, `lang=None`, `config=None`. A dataset without
  splits, or with only a "train" split (what `load_dataset` gives for a folder of JSON-lines
  files without validation/test files), is split by text hash exactly like a file:
  "train"/"validation"/"test" are the rows whose text hash falls in 0-89/90-94/95-99, "all"
  every row; so "train" is then ~90% of the rows, and validation never overlaps it. A dataset
  with other splits uses its own splits. Options can also ride in the spec as a query string,
  so a training `corpus=` can carry them: "hf:allenai/c4?config=en&streaming=1&text_column=text"
  (`parse_hf_spec`). `streaming=True` passes `streaming=True` to `load_dataset`: meant for Hub
  names when online (nothing is downloaded up front; rows arrive as they are read).
  `hf_fingerprint(spec)` names the dataset's content for caches (token shards, `bvvlab.train.shards`).

Language tags: "en", "ru", "zh" for monolingual text, "en-ru" / "en-zh" for parallel text, which
is rendered one sentence (or paragraph) per line, English line first: "The cat sleeps.\\nКошка
спит.". Untagged file/dataset text gets the majority script (Cyrillic: ru, CJK: zh, else en).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import math
import os
import re
import sys
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from bvvlab.core.atomic import hash_path
from bvvlab.core.errors import CorpusError
from bvvlab.corpus import concepts as _concepts
from bvvlab.corpus.documents import Document
from bvvlab.corpus.instructions import InstructionCorpus, eval_texts, training_weights  # noqa: F401  (re-exported)
from bvvlab.corpus.parallel_text import (  # noqa: F401
    CORPORA_VERSION,
    GENERATOR_VERSION,
    PARALLEL_FILES,
    SPLITS,
    check_split,
    corpora_dir,
    parallel_documents,
    parallel_pairs,
)

CORPORA: tuple[str, ...] = ("libreoffice-en-ru", "libreoffice-en-zh", "concepts", "instructions", "clone-en")



# ----------------------------------------------------------------------------- files


_SCRIPT_RUNS = {"en": re.compile("[A-Za-z]+"), "ru": re.compile("[\u0400-\u04ff]+"),
                "zh": re.compile("[\u3400-\u9fff]+")}


def guess_lang(text: str) -> str:
    """Majority script of the letters: Cyrillic -> "ru", CJK ideographs -> "zh", otherwise "en"
    (ASCII letters; a tie goes to the earlier of en, ru, zh). Counted as regex runs: a
    per-character Python loop here took most of a corpus file's reading time (LOG 2026-12-06)."""
    lat, cyr, cjk = (sum(map(len, _SCRIPT_RUNS[k].findall(text))) for k in ("en", "ru", "zh"))
    best = max((lat, "en"), (cyr, "ru"), (cjk, "zh"), key=lambda t: t[0])
    return best[1] if best[0] > 0 else "en"


def text_split(text: str) -> str:
    """The split of a file document: SHA-256 of its text mod 100 (<90 train, <95 validation, else test)."""
    b = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") % 100
    return "train" if b < 90 else "validation" if b < 95 else "test"


def _lines(path: Path) -> Iterator[tuple[int, int, str]]:
    """(line number, byte offset, decoded line) of a UTF-8 (optionally .gz) file; clear error otherwise."""
    opener = gzip.open if path.suffix == ".gz" else open
    offset = 0
    try:
        with opener(path, "rb") as fh:
            for no, raw in enumerate(fh, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    where = " (uncompressed)" if path.suffix == ".gz" else ""
                    raise CorpusError(f"{path}: not valid UTF-8 at byte {offset + exc.start}{where} (line {no}): "
                                      f"re-encode the file as UTF-8, e.g. `iconv -f cp1251 -t utf-8`") from None
                yield no, offset, line
                offset += len(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise CorpusError(f"{path}: cannot read ({type(exc).__name__}: {exc}): check the file") from None


def _txt_documents(path: Path) -> Iterator[Document]:
    para: list[str] = []
    start = 0
    for no, _, line in _lines(path):
        if line.strip():
            if not para:
                start = no
            para.append(line.rstrip())
        elif para:
            text = "\n".join(para)
            yield Document(text, guess_lang(text), str(path), {"path": str(path), "line": start})
            para = []
    if para:
        text = "\n".join(para)
        yield Document(text, guess_lang(text), str(path), {"path": str(path), "line": start})


def _jsonl_documents(path: Path) -> Iterator[Document]:
    for no, _, line in _lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise CorpusError(f"{path}:{no}: not a JSON object ({exc.msg}): one JSON object per line, with a 'text' field") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise CorpusError(f"{path}:{no}: no string 'text' field: each line must be like {{\"text\": \"...\", \"lang\": \"en\"}}")
        lang = obj.get("lang") or guess_lang(obj["text"])
        meta = {k: v for k, v in obj.items() if k not in ("text", "lang")}
        yield Document(obj["text"], lang, str(path), {"path": str(path), "line": no, **meta})


def _dir_documents(path: Path) -> Iterator[Document]:
    for f in sorted(path.rglob("*.txt")):
        text = "".join(line for _, _, line in _lines(f)).strip()
        if text:
            yield Document(text, guess_lang(text), str(f), {"path": str(f)})


def _file_documents(path: Path, split: str) -> Iterator[Document]:
    check_split(split, str(path), allow_all=True)
    name = path.name[:-3] if path.suffix == ".gz" else path.name
    if path.is_dir():
        docs = _dir_documents(path)
    elif name.endswith((".jsonl", ".json")):
        docs = _jsonl_documents(path)
    else:
        docs = _txt_documents(path)
    n_any = 0
    for doc in docs:
        n_any += 1
        if split == "all" or text_split(doc.text) == split:
            yield doc
    if n_any == 0:
        what = "has no .txt files with text" if path.is_dir() else "is empty (no text)"
        raise CorpusError(f"{path} {what}: give a source with at least one document")


# ----------------------------------------------------------------------------- Hugging Face


HF_OPTIONS = ("text_column", "lang_column", "lang", "config", "streaming")  # options an hf: spec may carry


def parse_hf_spec(spec: str, **options: Any) -> tuple[str, dict[str, Any]]:
    """`"hf:name?k=v&k=v"` -> (name, options); keyword `options` override the query string.

    Why: a training corpus is one string (`corpus=hf:...:0.5,libreoffice-en-ru:0.5`), so the
    options a dataset needs (config, text column, streaming) must fit in it.
    """
    from urllib.parse import parse_qsl

    name, _, query = spec[3:].partition("?")
    if not name:
        raise CorpusError("empty Hugging Face source 'hf:': use hf:<dataset name or local path>")
    opts: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    opts.update(options)
    bad = [k for k in opts if k not in HF_OPTIONS]
    if bad:
        raise CorpusError(f"{spec}: unknown option {bad[0]!r}: use {', '.join(HF_OPTIONS)}")
    if isinstance(opts.get("streaming"), str):
        flag = opts["streaming"].lower()
        if flag not in ("1", "true", "yes", "0", "false", "no", ""):
            raise CorpusError(f"{spec}: streaming={opts['streaming']!r} is not a yes/no value: use streaming=1 or 0")
        opts["streaming"] = flag in ("1", "true", "yes")
    return name, opts


SPEC_OPTIONS = {"concepts": ("holdout", "parallel_ratio", "word_share"), "instructions": ("holdout", "question_share"),
                "clone-en": ("holdout", "share", "concept_share"),
                **{name: ("holdout",) for name in PARALLEL_FILES}}  # options a source's spec may carry


def split_spec(spec: str | os.PathLike) -> tuple[str, dict[str, Any]]:
    """`"concepts?holdout=suite&parallel_ratio=0.7"` -> ("concepts", {"holdout_concepts": (...),
    "parallel_ratio": 0.7}); any other source -> (spec, {})."""
    from urllib.parse import parse_qsl

    src = os.fspath(spec)
    base, sep, query = src.partition("?")
    if not sep or base not in SPEC_OPTIONS:
        return src, {}
    opts: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in opts or (key == "holdout" and "holdout_concepts" in opts):
            raise CorpusError(f"{src}: {key}= is given twice: give it once (holdout=suite+cat adds ids to the suite)")
        if not value:
            raise CorpusError(f"{src}: {key}= has no value: e.g. {key}={'suite' if key == 'holdout' else '0.5'}")
        if key not in SPEC_OPTIONS[base]:
            raise CorpusError(f"{src}: unknown option {key!r}: {base} takes {', '.join(SPEC_OPTIONS[base])}")
        if key == "holdout":
            try:
                opts["holdout_concepts"] = _concepts.parse_holdout(value)
            except ValueError as exc:
                raise CorpusError(f"{src}: {exc}") from None
        else:
            try:
                opts[key] = float(value)
            except ValueError:
                raise CorpusError(f"{src}: {key}={value!r} is not a number: give e.g. {key}=0.5") from None
            if not 0.0 <= opts[key] <= 1.0:
                raise CorpusError(f"{src}: {key}={value} is a share and must be in [0, 1], e.g. {key}=0.5")
    return base, opts


def source_base(spec: Any) -> Any:
    """The source's name without its options ("concepts?holdout=suite" -> "concepts")."""
    return split_spec(spec)[0] if isinstance(spec, (str, os.PathLike)) else spec


def heldout_concepts(weights: Iterable[Any], strict: bool = True) -> list[str]:
    """The concepts a training mixture never mentions: what its sources that take `holdout=` (the
    generated ones and the embedded LibreOffice pairs) hold out. Empty when none holds anything
    out; a mixture whose such sources disagree is refused (one would teach what another holds
    out), or with `strict=False` (reading what an older run recorded) gets what all of them hold
    out. Files and `hf:` sources are not filtered: their text is the user's to vouch for."""
    seen = {}
    for spec in weights:
        base, opts = split_spec(spec) if isinstance(spec, (str, os.PathLike)) else (None, {})
        if base in SPEC_OPTIONS:
            seen[os.fspath(spec)] = tuple(opts.get("holdout_concepts", ()))
    if len(set(seen.values())) > 1 and not strict:
        return sorted(set.intersection(*(set(v) for v in seen.values())))
    if len(set(seen.values())) > 1:
        raise CorpusError(f"{' and '.join(seen)} hold out different concepts: give every embedded source the same "
                          "holdout=, e.g. libreoffice-en-ru?holdout=suite,concepts?holdout=suite,"
                          "instructions?holdout=suite")
    return sorted(next(iter(seen.values()), ()))


def _is_saved(local: Path) -> bool:
    """A folder written by `save_to_disk` (Dataset or DatasetDict)."""
    return local.is_dir() and ((local / "dataset_dict.json").exists() or (local / "state.json").exists())


_DATA_FILES = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}


@contextlib.contextmanager
def quiet_datasets() -> Iterator[None]:
    """`datasets` without its log lines ("Failed to read file ...": the caller's one line says it)
    and its "Generating train split" bars, which are not the user's business, for the block."""
    from datasets.utils import logging as ds_logging

    verbosity, bars = ds_logging.get_verbosity(), ds_logging.is_progress_bar_enabled()
    ds_logging.set_verbosity(ds_logging.CRITICAL)
    ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        ds_logging.set_verbosity(verbosity)
        if bars:
            ds_logging.enable_progress_bar()


def _load_hf(spec: str, name: str, config: str | None, streaming: bool) -> Any:
    import datasets

    local = Path(name).expanduser()
    try:
        if _is_saved(local):
            with quiet_datasets():
                return datasets.load_from_disk(str(local))
        if local.is_file() and local.suffix in _DATA_FILES:  # one local data file
            with quiet_datasets():
                return datasets.load_dataset(_DATA_FILES[local.suffix], data_files=str(local), streaming=streaming)
        if local.exists():
            with quiet_datasets():
                return datasets.load_dataset(str(local), config, streaming=streaming)
        return datasets.load_dataset(name, config, streaming=streaming)  # the Hub: its own bars and words
    except FileNotFoundError as exc:
        raise CorpusError(f"{spec}: dataset not found ({exc}): give a local path or a Hub name (online)") from None
    except Exception as exc:  # noqa: BLE001 - a damaged parquet, malformed JSON lines...: pyarrow's words alone
        if not local.exists():  # named nothing local: the Hub's own error (offline, unknown name) stays as it was
            raise
        raise CorpusError(f"{spec}: {_unreadable(local)} cannot be read as a dataset ({_innermost(exc)}); check or "
                          "rebuild the file (parquet, JSON lines, CSV, or a save_to_disk folder)") from None


def _innermost(exc: BaseException) -> str:
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    why = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {why}" if why else type(exc).__name__


def _unreadable(local: Path) -> Path:
    """The damaged parquet file under `local` when one is (its footer or schema does not read), else `local`."""
    import pyarrow.parquet as pq

    for f in [local] if local.is_file() else sorted(local.rglob("*.parquet")):
        try:
            pq.read_schema(f)
        except Exception:  # noqa: BLE001 - any reason it cannot be read
            return f
    return local


def _hash_files(root: Path) -> str:
    """SHA-256 over the relative names and bytes of a file, or of a folder's non-hidden files."""
    h = hashlib.sha256()
    files = [root] if root.is_file() else sorted(
        p for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))
    for f in files:
        h.update((f.name if f == root else f.relative_to(root).as_posix()).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def hf_fingerprint(spec: str, **options: Any) -> str | None:
    """A content fingerprint of an `hf:` dataset, for caches keyed by content; None for a stream.

    - a local path (a `save_to_disk` folder: its state/info/arrow files; a data file or a
      folder of data files): SHA-256 of the bytes and relative names of its non-hidden files,
      so any edit of a row changes it (also when the spec asks for streaming: the bytes are here);
    - a Hub name: the dataset is loaded as `iter_documents` would load it (from the `datasets`
      cache, or downloaded: only when you are online and asked for this source) and the
      `Dataset._fingerprint` of each split is hashed; `datasets` derives it from the resolved
      data files' origin (Hub revision / ETag), so a new revision gives a new fingerprint;
    - a Hub name with `streaming=True`: None. A stream is never materialised, so there is
      nothing to fingerprint; callers must not reuse anything cached from it (`bvvlab.train.shards`
      re-tokenises it on every build).

    The spec string itself (name and options) is not part of the fingerprint: callers key on both.
    """
    name, opts = parse_hf_spec(spec, **options)
    local = Path(name).expanduser()
    if local.exists():
        return "sha256:" + _hash_files(local)
    if opts.get("streaming"):
        return None
    ds = _load_hf(spec, name, opts.get("config"), False)
    splits = {k: ds[k]._fingerprint for k in sorted(ds)} if isinstance(ds, dict) else {"": ds._fingerprint}
    return "datasets:" + hashlib.sha256(json.dumps(splits, sort_keys=True).encode()).hexdigest()


def _hf_documents(spec: str, split: str, **options: Any) -> Iterator[Document]:
    """Documents of a Hugging Face dataset (see the module docstring)."""
    name, opts = parse_hf_spec(spec, **options)
    return _hf_rows(spec, name, split, **opts)


def _hf_rows(spec: str, name: str, split: str, text_column: str = "text", lang_column: str = "lang",
             lang: str | None = None, config: str | None = None, streaming: bool = False) -> Iterator[Document]:
    import datasets

    ds: Any = _load_hf(spec, name, config, bool(streaming))
    hash_split = False
    dicts = (datasets.DatasetDict, datasets.IterableDatasetDict)
    if isinstance(ds, dicts) and list(ds) != ["train"]:
        if split not in ds:
            raise CorpusError(f"{spec} has no split {split!r}: it has {', '.join(ds)}")
        ds = ds[split]
    else:  # no split, or only "train" (load_dataset on a folder of data files): split by text hash
        check_split(split, spec, allow_all=True)
        ds = ds["train"] if isinstance(ds, dicts) else ds
        hash_split = split != "all"
    columns = ds.column_names  # a stream may not know its columns before the first row: checked per row then
    if columns is not None and text_column not in columns:
        raise CorpusError(f"{spec}: no column {text_column!r} (columns: {', '.join(columns)}): pass text_column=")
    n = 0
    for i, row in enumerate(ds):
        if text_column not in row:
            raise CorpusError(f"{spec}: row {i} has no column {text_column!r} (columns: {', '.join(row)}): "
                              "pass text_column=")
        text = row[text_column]
        if not isinstance(text, str):
            raise CorpusError(f"{spec}: row {i} column {text_column!r} is {type(text).__name__}, not text")
        n += 1
        if hash_split and text_split(text) != split:
            continue
        tag = lang or row.get(lang_column) or guess_lang(text)
        yield Document(text, tag, spec, {"row": i})
    if n == 0:
        raise CorpusError(f"{spec} split {split!r} is empty: give a dataset with at least one row")


# ----------------------------------------------------------------------------- API


def _unknown(source: str) -> CorpusError:
    return CorpusError(f"unknown corpus {source!r} (and no such file): use one of {', '.join(CORPORA)}, "
                       f"a .txt/.jsonl path or directory, or hf:<dataset>")


def iter_documents(source: str | os.PathLike, split: str = "train", seed: int = 0, **options: Any) -> Iterator[Document]:
    """Documents of one source (see the module docstring for sources, splits and tags).

    `options` go to the source: `ConceptCorpus` keywords for "concepts", `InstructionCorpus`
    keywords for "instructions", `text_column`/`lang`/... for "hf:" sources.
    """
    src, spec_opts = split_spec(source)
    options = {**spec_opts, **options}
    if src in PARALLEL_FILES:
        check_split(split, src)
        extra = [k for k in options if k != "holdout_concepts"]
        if extra:
            raise CorpusError(f"{src} takes only holdout= (got {', '.join(extra)})")
        return parallel_documents(src, split, seed, options.get("holdout_concepts", ()))
    if src == "concepts":
        check_split(split, src)
        try:
            corpus = _concepts.ConceptCorpus(seed=seed, **options)
        except (TypeError, ValueError) as exc:
            raise CorpusError(f"bad option for concepts: {exc}") from None
        return corpus.documents(split)
    if src == "instructions":
        try:
            corpus = InstructionCorpus(seed=seed, **options)
        except (TypeError, ValueError) as exc:
            raise CorpusError(f"bad option for instructions: {exc}") from None
        return corpus.documents(split)
    if src == "clone-en":
        from bvvlab.corpus.clone import CloneCorpus

        check_split(split, src)
        try:
            return CloneCorpus(seed=seed, **options).documents(split)
        except TypeError as exc:
            raise CorpusError(f"bad option for clone-en: {exc}") from None
    if src.startswith("hf:"):
        return _hf_documents(src, split, **options)
    path = Path(src).expanduser()
    if not path.exists():
        raise _unknown(src)
    return _file_documents(path, split)


def _source_key(source: Any) -> str:
    return source if isinstance(source, str) else getattr(source, "name", type(source).__name__)


def _stream(source: Any, split: str, seed: int, cycle: bool) -> Iterator[Document]:
    """Documents of one mixture member; with `cycle`, a finite source restarts (reshuffled per epoch)."""
    epoch = 0
    while True:
        sub_seed = int.from_bytes(hashlib.blake2b(f"{seed}:{_source_key(source)}:{epoch}".encode(), digest_size=4).digest(), "big")
        docs = source.documents(split) if hasattr(source, "documents") else iter_documents(source, split, sub_seed)
        n = 0
        for doc in docs:
            n += 1
            yield doc
        if not cycle:
            return
        if n == 0:
            raise CorpusError(f"mixture source {_source_key(source)!r} has no documents for split {split!r}")
        epoch += 1


def mix(weights: dict[Any, float], split: str = "train", seed: int = 0) -> Iterator[Document]:
    """Deterministic weighted interleaving of sources; weights are shares of *characters*.

    Keys are source names/paths (as for `iter_documents`) or objects with `.documents(split)`
    (a configured `ConceptCorpus` or `InstructionCorpus`). At each step the source furthest
    below its share (smallest characters_emitted / weight) gives the next document, so the
    text shares match the weights exactly in the long run ("about 10% instructions").
    For "train" a finite source restarts when it ends (reshuffled by a derived seed), so the
    mixture is unbounded; for other splits a source that ends drops out, and the mixture ends
    when all have ended. `seed` derives each named source's seed.
    """
    if not weights:
        raise CorpusError("empty mixture: give weights like {'libreoffice-en-ru': 0.45, 'concepts': 0.45, 'instructions': 0.1}")
    for key, w in weights.items():
        if not (isinstance(w, (int, float)) and math.isfinite(w) and w > 0):
            raise CorpusError(f"weight of {_source_key(key)!r} must be a positive number, got {w!r}")
        if isinstance(key, str) and source_base(key) not in CORPORA and not key.startswith("hf:") \
                and not Path(key).expanduser().exists():
            raise _unknown(key)
    heldout_concepts(weights)
    keys = list(weights)
    streams = {i: _stream(k, split, seed, cycle=split == "train") for i, k in enumerate(keys)}
    chars = {i: 0 for i in streams}
    while streams:
        i = min(streams, key=lambda j: (chars[j] / weights[keys[j]], j))
        try:
            doc = next(streams[i])
        except StopIteration:
            del streams[i]
            continue
        chars[i] += max(1, len(doc.text))
        yield doc


def take(docs: Iterable[Document], n: int) -> list[Document]:
    """The first n documents of an (often unbounded) stream."""
    out = []
    for doc in docs:
        if len(out) >= n:
            break
        out.append(doc)
    return out


# ----------------------------------------------------------------------------- text for n-gram statistics

NGRAM_CORPORA = ("libreoffice-en-ru", "libreoffice-en-zh")  # the default n-gram source (tokenizer.DEFAULT_CORPORA)


def texts_by_lang(corpora: Sequence[str] = NGRAM_CORPORA, split: str = "train",
                  max_chars: int = 4_000_000) -> dict[str, list[str]]:
    """Texts of corpora (names or paths, as `iter_documents` takes them) grouped
    by language, each distinct text once: a parallel document ("en-ru") contributes each side
    to its own language, and the English side shared by en-ru and en-zh counts once.

    At most `max_chars` characters are read from each corpus: the generated corpora
    ("concepts", "instructions") are unbounded, and the embedded files are smaller than that."""
    out: dict[str, dict[str, None]] = {}
    for name in corpora:
        budget = max_chars
        for doc in iter_documents(name, split=split):
            budget -= len(doc.text)
            if budget < 0:
                break
            langs = doc.lang.split("-")
            if len(langs) > 1 and all(isinstance(doc.meta.get(lang), str) for lang in langs):
                for lang in langs:
                    out.setdefault(lang, {})[doc.meta[lang]] = None
            else:
                out.setdefault(doc.lang, {})[doc.text] = None
    return {lang: list(texts) for lang, texts in sorted(out.items())}


# ----------------------------------------------------------------------------- cache identity

GENERATED = ("concepts", "instructions", "clone-en")  # generated sources: their "train" split never ends
TRAIN_ONLY = ("instructions",)  # built from training splits only: no held-out text


def source_fingerprint(name: str) -> str:
    """What identifies a source's content: a path or embedded corpus by its bytes, a generated one
    by its code and the lexicon files it reads (`concepts.LEXICON_FILES`), an `hf:` dataset by
    `hf_fingerprint` (local bytes, or the loaded Hub dataset's `datasets` fingerprint, which
    follows its revision). A streamed Hub dataset has no
    fingerprint: it gets "#stream" and `bvvlab.train.shards.build_shard` never reuses its shard."""
    from bvvlab.corpus import clone, instructions
    from bvvlab.corpus import parallel_text as parallel

    if name.startswith("hf:"):
        fp = hf_fingerprint(name)
        return f"{name}#stream" if fp is None else f"{name}#{fp}"
    p = Path(name).expanduser()
    h = hashlib.sha256()
    if p.exists():
        hash_path(p, h)
        return f"{name}#sha256={h.hexdigest()}"
    base, opts = split_spec(name)
    if base in PARALLEL_FILES:  # an embedded corpus: its data file (and, filtered, the filter's code and words)
        hash_path(corpora_dir() / PARALLEL_FILES[base][0], h)
        if opts:
            for path in (Path(_concepts.__file__), *_concepts.LEXICON_FILES):
                hash_path(path, h)
    else:  # a generated corpus: the code that generates it and the lexicon it reads
        for module in (sys.modules[__name__], _concepts, instructions, parallel, clone):
            hash_path(Path(module.__file__), h)
        for path in _concepts.LEXICON_FILES:
            hash_path(path, h)
    return f"{name}#sha256={h.hexdigest()}"
