"""`bvvlab corpus SOURCE [--split] [--seed] [-n]`: print documents (JSON lines) of a source
(bvvlab.corpus.sources)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def _run(args: argparse.Namespace) -> int:
    from bvvlab.core.errors import CorpusError
    from bvvlab.corpus.sources import iter_documents, take

    if args.n < 0:
        raise CorpusError(f"-n {args.n}: the number of documents must be >= 0")
    for doc in take(iter_documents(args.source, args.split, args.seed), args.n):
        print(json.dumps({"text": doc.text, "lang": doc.lang, "source": doc.source, "meta": doc.meta},
                         ensure_ascii=False))
    return 0


def add_parser(sub: Any, name: str, help: str) -> None:
    from bvvlab.corpus.sources import CORPORA

    p = sub.add_parser(name, help=help)
    p.add_argument("source", help=f"one of {', '.join(CORPORA)}, a .txt/.jsonl path or directory, or hf:<dataset>")
    p.add_argument("--split", default="train", help="train | validation | test (files also: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-n", type=int, default=5, help="how many documents")
    p.set_defaults(func=_run)
