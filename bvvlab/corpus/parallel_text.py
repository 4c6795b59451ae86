"""The embedded parallel corpora (LibreOffice help en-ru, en-zh): files, manifest, splits.

Their rows are read from `data/corpora/` (or `BVVLAB_DATA`), hash-checked against the manifest
written by `scripts/extract_libreoffice.py`. `sources` (documents of every source) and
`instructions` (instruction infusion over their training pairs) both read them from here.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import random
import zlib
from pathlib import Path
from typing import Iterator

from bvvlab.core.errors import CorpusError
from bvvlab.core.runinfo import data_dir
from bvvlab.corpus.documents import Document

SPLITS: tuple[str, ...] = ("train", "validation", "test")
PARALLEL_FILES = {"libreoffice-en-ru": ("libreoffice-en-ru.jsonl.gz", "ru"),
                  "libreoffice-en-zh": ("libreoffice-en-zh.jsonl.gz", "zh")}
_EXTRACT = "python scripts/extract_libreoffice.py"
GENERATOR_VERSION = 1  # bump when concept/instruction generation or file parsing rules change


def _corpora_version() -> str:
    """GENERATOR_VERSION + the manifest's hash: names a named corpus's content for caches (data.py)."""
    try:
        digest = hashlib.sha256((data_dir() / "corpora" / "manifest.json").read_bytes()).hexdigest()[:12]
    except OSError:
        digest = "no-manifest"
    return f"{GENERATOR_VERSION}+{digest}"



# ----------------------------------------------------------------------------- embedded files


def corpora_dir() -> Path:
    """`corpora/` of the package data (`data/`, or `BVVLAB_DATA`)."""
    return data_dir() / "corpora"


def _restore_hint(name: str) -> str:
    return f"restore it with `git checkout -- data/corpora/{name}` or re-run `{_EXTRACT}`"


def _manifest() -> dict:
    path = corpora_dir() / "manifest.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CorpusError(f"{path} is missing: {_restore_hint('manifest.json')}") from None
    except (ValueError, UnicodeDecodeError):
        raise CorpusError(f"{path} is corrupt (not JSON): {_restore_hint('manifest.json')}") from None


@functools.lru_cache(maxsize=8)
def _load_parallel(path_str: str, size: int, mtime_ns: int, expected_sha: str) -> tuple[dict, ...]:
    """Rows of a committed pair file, after the hash check (cached per file state)."""
    path = Path(path_str)
    data = path.read_bytes()
    got = hashlib.sha256(data).hexdigest()
    if got != expected_sha:
        raise CorpusError(f"{path} is corrupt or altered (SHA-256 {got[:12]}..., manifest says {expected_sha[:12]}...): "
                          f"{_restore_hint(path.name)}")
    try:
        lines = gzip.decompress(data).decode("utf-8").splitlines()
        return tuple(json.loads(line) for line in lines)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, ValueError) as exc:
        raise CorpusError(f"{path} is not valid gzipped JSON lines ({type(exc).__name__}): {_restore_hint(path.name)}") from None


def parallel_pairs(name: str, split: str = "train") -> list[dict]:
    """The pairs (dicts with id, en, ru|zh, split) of one embedded corpus; split may be "all"."""
    if name not in PARALLEL_FILES:
        raise CorpusError(f"unknown parallel corpus {name!r}: use one of {', '.join(PARALLEL_FILES)}")
    check_split(split, name, allow_all=True)
    fname, _ = PARALLEL_FILES[name]
    entry = _manifest().get("files", {}).get(fname)
    path = corpora_dir() / fname
    if entry is None:
        raise CorpusError(f"{path.parent / 'manifest.json'} has no entry for {fname}: {_restore_hint('manifest.json')}")
    try:
        st = path.stat()
    except FileNotFoundError:
        raise CorpusError(f"{path} is missing: {_restore_hint(fname)}") from None
    rows = _load_parallel(str(path), st.st_size, st.st_mtime_ns, entry["sha256"])
    return [r for r in rows if split == "all" or r["split"] == split]


def without_concepts(rows: list[dict], name: str, holdout) -> list[dict]:
    """The pairs that mention none of the concepts `holdout` (any word form, either side, whole
    words; `concepts.mention_pattern`)."""
    from bvvlab.corpus.concepts import mention_pattern

    pat = mention_pattern(holdout)
    tgt = PARALLEL_FILES[name][1]
    return rows if pat is None else [r for r in rows if not pat.search(r["en"]) and not pat.search(r[tgt])]


def parallel_documents(name: str, split: str, seed: int, holdout_concepts=()) -> Iterator[Document]:
    """The embedded corpus `name`'s pairs of `split` as documents ("English\ntarget", lang "en-ru"
    or "en-zh", the row as meta), in an order shuffled by `seed`; in "train", without the pairs
    that mention a held-out concept."""
    rows = parallel_pairs(name, split)
    if split == "train":  # the held-out concepts never reach training; evaluation text is left whole
        rows = without_concepts(rows, name, holdout_concepts)
    tgt = PARALLEL_FILES[name][1]
    random.Random(seed).shuffle(rows)
    for r in rows:
        yield Document(f"{r['en']}\n{r[tgt]}", f"en-{tgt}", name, dict(r))


def check_split(split: str, source: str, allow_all: bool = False) -> None:
    """One line naming the splits there are when `split` is none of them ("all": a file's every
    line, where `allow_all`)."""
    ok = SPLITS + (("all",) if allow_all else ())
    if split not in ok:
        raise CorpusError(f"unknown split {split!r} for {source}: use one of {', '.join(ok)}")



CORPORA_VERSION = _corpora_version()
