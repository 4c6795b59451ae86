#!/usr/bin/env python3
"""Extract the LibreOffice-help parallel corpora committed under data/corpora/ (run by hand).

Why: issue 2 asks for real en-ru (and en-zh, for the fusion issue) parallel text that ships with
the repo, so that nothing downloads at run time. LibreOffice's help (MPL-2.0) is translated
paragraph by paragraph, and each paragraph keeps the same `id` attribute (`par_id...`,
`hd_id...`) in every language's HTML page, so pairs need no sentence aligner
(docs/stack.md section 5a: ~21,400 really translated en-ru pairs, ~1.5 M chars per side).

Steps (each deterministic; the output is byte-identical on every run for the same .debs):
1. `apt-get download` the three help packages and `dpkg -x` them (or reuse `--debs`).
2. For every HTML page present in both languages, collect the text of each `<p>`/`<h1..h6>`
   whose id starts with `par_`/`hd_`, skipping code (class `code*`, `smathcode`, `example`,
   and anything inside a `bascode`/`pycode`/`sqlcode` block); markup is stripped, only the
   default variant of a `switchinline` (per-OS / per-module text) is kept, and whitespace is
   collapsed.
3. Pair by (page, id). Keep a pair only if it is really translated: the target contains
   Cyrillic (ru) or CJK ideographs (zh) and differs from the English. Drop formula/code-like
   pairs (no English word of 2+ letters outside `=FORMULA(...)` tokens and quoted strings).
4. Deduplicate: one pair per English text (the most frequent translation, ties by text order),
   then one per target text.
5. Split by a hash of the English text (SHA-256, first 8 bytes, mod 100: <90 train, <95
   validation, else test), so one English paragraph never crosses splits, and the en-ru and
   en-zh corpora put the same English in the same split.
6. Write `libreoffice-en-<xx>.jsonl.gz` (fields id, en, <xx>, split; gzip mtime 0, sorted by
   id), `manifest.json` (hashes, counts, versions) and the provenance `README.md`.

Usage:  python scripts/extract_libreoffice.py [--debs DIR] [--out data/corpora]
"""

from __future__ import annotations

import argparse
import collections
import gzip
import hashlib
import html.parser
import io
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGES = {"en": "libreoffice-help-en-us", "ru": "libreoffice-help-ru", "zh": "libreoffice-help-zh-cn"}
HELP_DIRS = {"en": "en-US", "ru": "ru", "zh": "zh-CN"}
TARGETS = ("ru", "zh")
SPLIT_BOUNDS = ((90, "train"), (95, "validation"), (100, "test"))  # hash bucket (mod 100) < bound -> split

_ID = re.compile(r"^(par|hd)_")
_TEXT_TAGS = {"p", "h1", "h2", "h3", "h4", "h5", "h6"}
_CODE_CLASSES = {"code", "codeintable", "smathcode", "example"}
_CODE_BLOCKS = {"bascode", "pycode", "sqlcode"}
_VOID = {"br", "img", "input", "meta", "link", "hr", "wbr", "source", "col", "area", "base", "embed"}
CYRILLIC = re.compile(r"[\u0400-\u04FF]")
CJK = re.compile(r"[\u3400-\u4DBF\u4E00-\u9FFF]")
_EN_WORD = re.compile(r"[A-Za-z]{2,}")
_FORMULA = re.compile(r'"[^"]*"|=\S*')  # quoted strings and `=FUNC(...)` tokens


class _Paragraphs(html.parser.HTMLParser):
    """Collect {id: text} for the id-carrying paragraphs and headings of one help page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: dict[str, str] = {}
        self._stack: list[tuple[str, bool, bool]] = []  # (tag, opens a code block, hidden variant)
        self._cur: tuple[str, str, list[str]] | None = None  # (tag, id, text parts)

    def _in_code(self) -> bool:
        return any(code for _, code, _ in self._stack)

    def _hidden(self) -> bool:
        return any(hidden for _, _, hidden in self._stack)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = set((a.get("class") or "").split())
        # `switchinline` spans hold per-OS/per-module variants (`hidden`, id MAC..., WRITER...)
        # next to the `default...` one; keep only the default so the text reads as one sentence
        hidden = "hidden" in a and not (a.get("id") or "").startswith("default")
        if tag not in _VOID:
            self._stack.append((tag, bool(classes & _CODE_BLOCKS), hidden))
        if tag == "br" and self._cur is not None:
            self._cur[2].append(" ")
        if (self._cur is None and tag in _TEXT_TAGS and _ID.match(a.get("id") or "")
                and not classes & _CODE_CLASSES and not self._in_code()):
            self._cur = (tag, a["id"], [])

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            return
        # pop to the matching open tag (help pages are well-formed; this tolerates stray ends)
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i][0] == tag:
                del self._stack[i:]
                break
        if self._cur is not None and tag == self._cur[0]:
            text = clean("".join(self._cur[2]))
            if text and self._cur[1] not in self.out:
                self.out[self._cur[1]] = text
            self._cur = None

    def handle_data(self, data: str) -> None:
        if self._cur is not None and not self._hidden():
            self._cur[2].append(data)


def clean(text: str) -> str:
    """Collapse all whitespace (incl. no-break spaces) to single spaces; strip."""
    return " ".join(text.replace("\u00a0", " ").split())


def page_paragraphs(path: Path) -> dict[str, str]:
    parser = _Paragraphs()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser.out


def split_of(en: str) -> str:
    bucket = int.from_bytes(hashlib.sha256(en.encode("utf-8")).digest()[:8], "big") % 100
    return next(name for bound, name in SPLIT_BOUNDS if bucket < bound)


def is_translated(en: str, tgt: str, lang: str) -> bool:
    script = CYRILLIC if lang == "ru" else CJK
    return tgt != en and bool(script.search(tgt))


def is_code_like(en: str) -> bool:
    """A formula or code line with no English prose around it (`=SUMIF(E2:E11;A13)`, `A`, `%`).

    `=LEN(12345.67) returns 8.` is kept: its prose is translated."""
    return not _EN_WORD.search(_FORMULA.sub(" ", en))


def fetch_debs(workdir: Path) -> Path:
    """apt-get download the three packages into workdir (needs Debian apt sources)."""
    workdir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", *PACKAGES.values()], cwd=workdir, check=True)
    return workdir


def unpack(debs: Path, root: Path) -> dict[str, dict[str, str]]:
    """dpkg -x every package into root; return {package: {version, deb file, deb SHA-256}}."""
    versions = {}
    for pkg in PACKAGES.values():
        found = sorted(debs.glob(f"{pkg}_*.deb"))
        if len(found) != 1:
            sys.exit(f"expected exactly one {pkg}_*.deb in {debs}, found {len(found)}: run apt-get download {pkg}")
        deb = found[0]
        version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], check=True,
                                 capture_output=True, text=True).stdout.strip()
        versions[pkg] = {"version": version, "deb": deb.name, "deb_sha256": hashlib.sha256(deb.read_bytes()).hexdigest()}
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return versions


def extract_pairs(help_root: Path, lang: str) -> tuple[list[dict], dict[str, int]]:
    """Aligned, cleaned, deduplicated, split pairs for en-<lang>, plus the filtering counts."""
    en_root, tgt_root = help_root / HELP_DIRS["en"], help_root / HELP_DIRS[lang]
    stats: collections.Counter[str] = collections.Counter()
    raw: list[tuple[str, str, str]] = []  # (id, en, tgt)
    for en_page in sorted(en_root.rglob("*.html")):
        rel = en_page.relative_to(en_root)
        tgt_page = tgt_root / rel
        if not tgt_page.exists():
            stats["pages_missing_in_target"] += 1
            continue
        stats["pages"] += 1
        en_par, tgt_par = page_paragraphs(en_page), page_paragraphs(tgt_page)
        for pid, en in en_par.items():
            if pid not in tgt_par:
                continue
            stats["aligned"] += 1
            tgt = tgt_par[pid]
            if not is_translated(en, tgt, lang):
                stats["dropped_untranslated"] += 1
            elif is_code_like(en):
                stats["dropped_code_like"] += 1
            else:
                raw.append((f"{rel.as_posix()}#{pid}", en, tgt))
    stats["translated"] = len(raw)
    # one pair per English text: the most frequent translation, ties by first occurrence
    by_en: dict[str, list[tuple[str, str]]] = {}
    for pid, en, tgt in raw:
        by_en.setdefault(en, []).append((pid, tgt))
    chosen: list[tuple[str, str, str]] = []
    for en, items in by_en.items():
        counts = collections.Counter(t for _, t in items)
        best = max(counts.values())
        pid, tgt = next((p, t) for p, t in items if counts[t] == best)
        chosen.append((pid, en, tgt))
    stats["distinct_en"] = len(chosen)
    seen_tgt: set[str] = set()
    rows = []
    for pid, en, tgt in chosen:  # already in (page, id) order of first occurrence
        if tgt in seen_tgt:
            stats["dropped_duplicate_target"] += 1
            continue
        seen_tgt.add(tgt)
        rows.append({"id": pid, "en": en, lang: tgt, "split": split_of(en)})
    rows.sort(key=lambda r: r["id"])
    return rows, dict(stats)


def write_jsonl_gz(rows: list[dict], path: Path) -> None:
    buf = io.BytesIO()
    # mtime=0 and no file name in the header: identical bytes on every run
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        for row in rows:
            gz.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
    path.write_bytes(buf.getvalue())


def summary(rows: list[dict], lang: str) -> dict:
    per = {}
    for split in ("train", "validation", "test"):
        sel = [r for r in rows if r["split"] == split]
        per[split] = {"pairs": len(sel), "chars_en": sum(len(r["en"]) for r in sel),
                      f"chars_{lang}": sum(len(r[lang]) for r in sel)}
    per["total"] = {k: sum(per[s][k] for s in ("train", "validation", "test")) for k in per["train"]}
    return per


README_HEAD = """# Embedded parallel corpora: LibreOffice help (en-ru, en-zh)

Generated by `scripts/extract_libreoffice.py` (do not edit by hand; re-run the script).
Read through `bvvlab.corpus.sources.iter_documents("libreoffice-en-ru", split=...)`, which checks the
SHA-256 below before reading.

Each line of a `.jsonl.gz` file is one paragraph pair: `{{"id": "<page>#<paragraph id>",
"en": ..., "<ru|zh>": ..., "split": "train"|"validation"|"test"}}`.
Pairs are LibreOffice help paragraphs aligned by their shared HTML `id`, kept only when really
translated (target has Cyrillic / CJK ideographs and differs from the English), with markup
stripped, whitespace collapsed, code blocks and formula-like paragraphs dropped, and
deduplicated (one pair per English text, then per target text). The split is fixed by a hash
of the English text (SHA-256 mod 100: 0-89 train, 90-94 validation, 95-99 test), so the same
English paragraph is in the same split in both corpora and never crosses splits.

## Source packages (Debian 12 "bookworm")

| package | version | .deb SHA-256 |
|---|---|---|
{versions}

## Files

| file | SHA-256 | bytes |
|---|---|---|
{files}

## Counts (pairs; characters after cleaning)

| corpus | split | pairs | chars en | chars target |
|---|---|---|---|---|
{counts}

Filtering counts (from aligned paragraphs to kept pairs):

{filters}

## Re-extraction

```
cd /tmp && mkdir lohelp && cd lohelp
apt-get download {pinned}
cd /path/to/bvvlab
python scripts/extract_libreoffice.py --debs /tmp/lohelp --out data/corpora
```
(The script runs `dpkg-deb -x` itself; without `--debs` it runs `apt-get download` into a
temporary folder, taking the current versions. The versions above give byte-identical files;
if the Debian archive no longer carries them, fetch the .debs from snapshot.debian.org and
check their SHA-256 against the table.)

## Licence

The text is LibreOffice help content, MPL-2.0 (see `LICENSE`, the Debian copyright file of
the three help packages, identical in all three, and `MPL-2.0.txt`, the licence text).
"""


def write_readme(out: Path, manifest: dict) -> None:
    versions = "\n".join(f"| `{p}` | `{v['version']}` | `{v['deb_sha256']}` |" for p, v in manifest["packages"].items())
    pinned = " ".join(f"{p}={v['version']}" for p, v in manifest["packages"].items())
    files = "\n".join(f"| `{name}` | `{f['sha256']}` | {f['bytes']:,} |" for name, f in manifest["files"].items())
    counts, filters = [], []
    for name, f in manifest["files"].items():
        lang = f["lang"].split("-")[1]
        for split, c in f["counts"].items():
            counts.append(f"| {name.split('.')[0]} | {split} | {c['pairs']:,} | {c['chars_en']:,} | {c[f'chars_{lang}']:,} |")
        filters.append(f"- `{name}`: " + ", ".join(f"{k} {v:,}" for k, v in f["filtering"].items()))
    text = README_HEAD.format(versions=versions, pinned=pinned, files=files, counts="\n".join(counts), filters="\n".join(filters))
    (out / "README.md").write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--debs", type=Path, help="folder holding the three .deb files (default: apt-get download them)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "data" / "corpora")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lohelp-") as tmp:
        debs = args.debs or fetch_debs(Path(tmp) / "debs")
        root = Path(tmp) / "root"
        versions = unpack(debs, root)
        help_root = root / "usr/share/libreoffice/help"
        copyright_text = (root / "usr/share/doc" / PACKAGES["en"] / "copyright").read_text(encoding="utf-8")
        for lang in TARGETS:
            other = (root / "usr/share/doc" / PACKAGES[lang] / "copyright").read_text(encoding="utf-8")
            if other != copyright_text:
                sys.exit(f"copyright files of {PACKAGES['en']} and {PACKAGES[lang]} differ: keep both")
        args.out.mkdir(parents=True, exist_ok=True)
        manifest: dict = {"packages": versions, "split_rule": "sha256(en)[:8] mod 100: <90 train, <95 validation, else test",
                          "files": {}}
        for lang in TARGETS:
            rows, stats = extract_pairs(help_root, lang)
            name = f"libreoffice-en-{lang}.jsonl.gz"
            write_jsonl_gz(rows, args.out / name)
            data = (args.out / name).read_bytes()
            manifest["files"][name] = {"lang": f"en-{lang}", "sha256": hashlib.sha256(data).hexdigest(),
                                       "bytes": len(data), "counts": summary(rows, lang), "filtering": stats}
            print(name, manifest["files"][name]["counts"]["total"], f"{len(data):,} bytes")
        (args.out / "LICENSE").write_text(copyright_text, encoding="utf-8")
        mpl = Path("/usr/share/common-licenses/MPL-2.0")
        if mpl.exists():
            (args.out / "MPL-2.0.txt").write_text(mpl.read_text(encoding="utf-8"), encoding="utf-8")
        (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        write_readme(args.out, manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
