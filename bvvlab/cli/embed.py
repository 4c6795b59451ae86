"""`bvvlab embed --vocab V --out DIR`: a tokenizer and its frozen glyph matrix
(bvvlab.glyph.embeddings, recipe sections 2-3)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any


def _run(args: argparse.Namespace) -> int:
    from bvvlab.core.errors import CLIError
    from bvvlab.glyph.font import FontError

    try:
        return _embed(args)
    except FontError as exc:  # the font's own message names the file and the fix: one line
        raise CLIError(str(exc)) from None


def _embed(args: argparse.Namespace) -> int:
    from bvvlab.glyph.embeddings import check_out_dir, default_params, prepare_vocabulary

    check_out_dir(args.out, args.overwrite)  # fail before the work, not after
    kind = args.base if args.vocab == "compact" else args.vocab
    params = default_params(kind, args.size)
    if args.layout != params.layout:
        params = dataclasses.replace(params, layout=args.layout)
    if args.dim is not None and not 1 <= args.dim <= params.dim:
        raise ValueError(f"--dim {args.dim} is out of range: pass 1..{params.dim} for --size {params.size}")
    emb = prepare_vocabulary(args.vocab, corpus=args.corpus, dim=args.dim, params=params, base=args.base,
                             cache=not args.no_cache, progress=not args.quiet)
    out = emb.save(args.out, overwrite=args.overwrite)
    t = emb.meta["timings"]
    print(f"wrote {out}: {emb.matrix.shape[0]:,} tokens x {emb.matrix.shape[1]} dims, "
          f"matrix sha256 {emb.matrix_hash[:16]}..., {t['total_s']:.1f} s"
          f"{' (matrix from cache)' if t.get('cache_hit') else ''}")
    return 0


def add_parser(sub: Any, name: str, help: str) -> None:
    from bvvlab.glyph.embeddings import FULL_KINDS

    p = sub.add_parser(name, help=help,
                       description="Write Hugging Face tokenizer files, glyph_matrix.safetensors and meta.json into --out.")
    p.add_argument("--vocab", default="bvv241-2-3",
                   help="bvv241-2-3 (65,536), bvv241-max (131,072), compact, or a tokenizer folder (default: %(default)s)")
    p.add_argument("--corpus", nargs="+", default=None,
                   help="corpus names or files for the n-gram table / compact selection (default: the embedded corpora)")
    p.add_argument("--dim", type=int, default=None, help="keep the first DIM principal components (default: size^2)")
    p.add_argument("--size", type=int, choices=(32, 64), default=None, help="glyph cell in px (default: 32)")
    p.add_argument("--layout", choices=("basic", "raqm"), default="basic",
                   help="Pillow layout engine the glyphs are drawn with: basic (default, the same everywhere) or raqm "
                        "(Pillow's default where libraqm is installed; see docs/recipe.md 10.1)")
    p.add_argument("--base", default="bvv241-2-3", choices=list(FULL_KINDS),
                   help="full vocabulary a compact one is cut from (default: %(default)s)")
    p.add_argument("--out", required=True, help="output folder (must be empty unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace the files of an existing output folder")
    p.add_argument("--no-cache", action="store_true", help="rebuild the matrix even if it is cached")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)
