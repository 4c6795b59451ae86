"""Issue 28, the positive control: a `small` model trained on English + its glyph-disjoint clone
(`clone-en`), with a vocabulary that holds the clones of the English n-grams (trap (a)).

    python scripts/issue28_clone.py vocab --out runs/i28/clone_vocab     # tokenizer + glyph matrix
    nice -n 10 python scripts/issue28_clone.py train --out runs/i28 --vocab runs/i28/clone_vocab --steps 400
    python scripts/issue28_clone.py untrained --out runs/i28

`vocab` prints how often an English test paragraph and its clone tokenise to the same number of
tokens (trap (a): with compact n-grams of English only, the clone got single characters).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

from issue28_train import train_small, untrained_twin  # the sibling script (run from scripts/)

CORPUS = "clone-en?holdout=suite"


def build_vocab(out: Path, chars: int = 2_000_000) -> dict:
    from bvvlab.corpus.clone import CLONE_LANG, CloneCorpus, clone_ngrams, clone_text
    from bvvlab.corpus.parallel_text import parallel_pairs
    from bvvlab.corpus.sources import iter_documents
    from bvvlab.glyph import embeddings as E
    from bvvlab.glyph import tokenizer as tk

    mapping = CloneCorpus().mapping
    english = tk.sort_ngrams(g for g in tk.kind_ngrams("bvv241-2-3") if g.isascii() and g.isalpha())
    grams = english + clone_ngrams(english, mapping)
    # merges in mirrored order (each English n-gram, then its clone): the layout order sorts the
    # clone by its own code points, and BPE breaks ties by merge order, so the clone would split
    # differently from English (606 of 1,066 test paragraphs matched that way, measured)
    order = [x for g in english for x in (g, clone_text(g, mapping))]
    full = tk.hf_tokenizer(tk.bvv241_vocab(65536, grams), ngrams=order)
    texts, n = [], 0
    for d in iter_documents(CORPUS, "train"):
        texts.append(d.text)
        n += len(d.text)
        if n > chars:
            break
    texts += [d.text for d in itertools.islice(iter_documents(CORPUS, "validation"), 2000)]
    tokens, _ = tk.compact_vocab(full, texts)
    kept = set(tokens)
    tok = tk.hf_tokenizer(tokens, ngrams=[g for g in order if g in kept])
    test = [r["en"] for r in parallel_pairs("libreoffice-en-ru", "test")]
    same = sum(len(tok(t, add_special_tokens=False)["input_ids"]) ==
               len(tok(clone_text(t, mapping), add_special_tokens=False)["input_ids"]) for t in test)
    tdir = out.parent / (out.name + "_tokenizer")
    tok.save_pretrained(tdir)
    emb = E.prepare_vocabulary(str(tdir), dim=256, progress=False)
    emb.save(out, overwrite=True)
    info = {"english_ngrams": len(english), "clone_ngrams": len(grams) - len(english), "compact_vocab": len(tok),
            "test_paragraphs_same_token_count": same, "test_paragraphs": len(test), "clone_lang": CLONE_LANG}
    (out / "clone_info.json").write_text(json.dumps(info, indent=1))
    return info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=("vocab", "train", "untrained"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--vocab", default="runs/i28/clone_vocab")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--save-every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=3e-3)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    if args.part == "vocab":
        print(build_vocab(Path(args.out)))
        return 0
    out = Path(args.out) / f"clone_s{args.seed}"
    if args.part == "untrained":
        print(untrained_twin(out, Path(args.out) / f"clone_untrained_s{args.seed}", args.seed,
                             {"purpose": "untrained clone twin (issue 28)"}))
        return 0
    train_small(out, frozen=True, corpus=f"{CORPUS}:1.0", vocab=args.vocab, train_chars=2_000_000,
                steps=args.steps, lr=args.lr, seed=args.seed, save_every=args.save_every, log_every=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
