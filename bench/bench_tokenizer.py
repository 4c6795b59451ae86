"""Tokenizer measurements on the embedded corpora (docs/recipe.md section 2).

1. Compression, chars per token, on the validation split per language, for bvv241-2-3 and
   bvv241-max built from the embedded training text (published: 1.74 en / 1.57 ru and
   2.27 / 1.85, on Wikipedia in 32 languages).
2. Encoding speed of the HF tokenizer against a literal Python BPE (the recipe's merge rule,
   as in tests/test_tokenizer.py) on the same texts, as a ratio, plus a check that both give
   the same ids.

    .venv/bin/python bench/bench_tokenizer.py [--split validation] [--speed-docs 300]
"""

from __future__ import annotations

import argparse
import time

from bvvlab.glyph import tokenizer as T


def literal_bpe(text: str, index: dict[str, int], rank: dict[tuple[str, str], int]) -> list[int]:
    parts = list(text)
    while True:
        best = min(((rank[p], j) for j, p in enumerate(zip(parts, parts[1:])) if p in rank), default=None)
        if best is None:
            break
        j = best[1]
        parts[j:j + 2] = [parts[j] + parts[j + 1]]
    out: list[int] = []
    for p in parts:
        out.extend([index[p]] if p in index else [index[T.byte_token(b)] for b in p.encode("utf-8")])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="validation")
    ap.add_argument("--speed-docs", type=int, default=300)
    args = ap.parse_args()

    held_out = T.corpus_texts_by_lang(split=args.split)
    print(f"{args.split} text: " + ", ".join(f"{k} {len(v)} docs / {sum(map(len, v)):,} chars" for k, v in held_out.items()))
    for kind in T.VOCAB_KINDS:
        t0 = time.perf_counter()
        tok = T.build_tokenizer(kind)
        built = time.perf_counter() - t0
        n_grams = len(T.vocab_ngrams(T.tokenizer_vocab(tok)))
        cpt = {lang: T.chars_per_token(tok, texts) for lang, texts in held_out.items()}
        print(f"{kind:11s} {n_grams:6d} n-grams (built in {built:.1f} s)  chars/token: "
              + "  ".join(f"{lang} {v:.3f}" for lang, v in cpt.items()))

    tok = T.build_tokenizer("bvv241-2-3")
    vocab = T.tokenizer_vocab(tok)
    index = {t: i for i, t in enumerate(vocab)}
    rank: dict[tuple[str, str], int] = {}
    for a, b in T.bpe_merges(index, T.vocab_ngrams(vocab)):
        rank.setdefault((a, b), len(rank))
    docs = [t for texts in held_out.values() for t in texts[: args.speed_docs]]
    chars = sum(map(len, docs))
    t0 = time.perf_counter()
    fast = [tok.encode(d) for d in docs]
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    slow = [literal_bpe(d, index, rank) for d in docs]
    t_slow = time.perf_counter() - t0
    print(f"encode {len(docs)} docs ({chars:,} chars): HF tokenizer {chars / t_fast:,.0f} chars/s, "
          f"literal Python BPE {chars / t_slow:,.0f} chars/s, ratio {t_slow / t_fast:.0f}x, "
          f"identical ids: {fast == slow}")


if __name__ == "__main__":
    main()
