"""Issue 28 experiments, probing part: words-in-context states of every checkpoint (cached as
.npz beside the run), then every statistic (`bvvlab.analysis.stats.layer_report`), the paired
comparisons, the category probe that transfers en -> ru with its control task, emergence over
steps and the behavioural check, into one JSON and a markdown summary.

    nice -n 10 python scripts/issue28_probe.py states --contexts 8 CKPT [CKPT ...]
    python scripts/issue28_probe.py report --out bench/results/issue28.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def states_file(ckpt: str, k: int) -> Path:
    p = Path(ckpt)
    return p / f"i28_states_k{k}.npz"


def langs_of(ckpt: str) -> tuple[str, str]:
    return ("en", "enx") if "clone" in str(ckpt) else ("en", "ru")


def compute_states(ckpts: list[str], k: int) -> None:
    from bvvlab.analysis import activations, contexts
    from bvvlab.corpus.concepts import suite_holdout

    for ck in ckpts:
        out = states_file(ck, k)
        if out.exists():
            continue
        t0 = time.perf_counter()
        cs = contexts.concept_contexts(suite_holdout(), langs_of(ck), k)
        lm = activations.load_model(ck)
        st, lengths = contexts.context_states(lm, cs, batch_size=128)
        meta = {"items": [[it.text, it.lang, it.pair, it.label, it.heldout] for it in cs.items],
                "lengths": {str(i): v for i, v in lengths.items()}, "n_contexts": len(cs.texts), "notes": cs.notes,
                "seconds": round(time.perf_counter() - t0, 1)}
        tmp = out.with_suffix(".tmp.npz")
        np.savez(tmp, pooled=np.asarray(st.pooled, np.float32), meta=json.dumps(meta))
        tmp.rename(out)
        print(f"{ck}: {len(cs.items)} items, {len(cs.texts)} contexts in {meta['seconds']} s", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=("states",))
    ap.add_argument("checkpoints", nargs="*")
    ap.add_argument("--contexts", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    compute_states(args.checkpoints, args.contexts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
