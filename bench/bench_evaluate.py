"""Speed of multiple-choice scoring (issue 12), against lm-evaluation-harness's `hf` model.

1,000 four-choice questions (the concept suites of data/eval, cycled) on a `small`-preset
model (random weights: speed and agreement, not skill) with the bvv241-2-3 n-grams compacted to
the questions' text. Measured in one run, interleaved (ours, harness, ours, ...) and the best of
`--repeat` taken for each:

  * ours: `bvvlab.eval.scoring.score_choices` (each context once, its KV cache repeated per choice,
    all choices of a batch in one forward), target <= 30 s;
  * harness: `lm_eval.models.huggingface.HFLM(pretrained=CKPT, trust_remote_code=True)`
    `loglikelihood` over the same (context, continuation) requests, target: ours >= 2x faster.

Agreement: lm-evaluation-harness tokenises context + continuation jointly and splits, bvvlab
tokenises them apart (issue 12: an n-gram may straddle the join); the bench reports acc and
acc_norm of both, the number of questions whose tokenisations differ, and the largest
log-likelihood difference on the questions whose tokenisations agree. Both score without a
prefix token here (the harness's hf default).

lm-evaluation-harness is an optional bench dependency (`pip install lm_eval`), not a runtime one;
without it only ours is timed.

    .venv/bin/python bench/bench_evaluate.py                 # writes bench/results/evaluate.json
    .venv/bin/python bench/bench_evaluate.py --questions 200 --repeat 1
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from results_file import write_results  # bench/, beside this script

from bvvlab.eval import metrics as eval_metrics
from bvvlab.eval import scoring, suites
from bvvlab.eval import tasks as eval_tasks
from bvvlab.glyph.tokenizer import (
    bvv241_vocab,
    compact_vocab,
    hf_tokenizer,
    kind_ngrams,
)
from bvvlab.models.checkpoints import save_checkpoint
from bvvlab.models.model import BVVForCausalLM, config_from_preset

OUT = Path(__file__).resolve().parent / "results" / "evaluate.json"


def questions(n: int) -> list[eval_tasks.MCItem]:
    pool = [it for t in suites.offline_suite() if t.kind == "mc" for it in t.items]
    return [it for it, _ in zip(itertools.cycle(pool), range(n))]


def build(items: list[eval_tasks.MCItem], seed: int = 0):
    texts = [it.context + c for it in items for c in it.choices]
    tokens, _ = compact_vocab(bvv241_vocab(65536, kind_ngrams("bvv241-2-3")), texts)
    tok = hf_tokenizer(tokens)
    torch.manual_seed(seed)
    cfg = config_from_preset("small", vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                             bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    g = torch.Generator().manual_seed(seed)
    glyphs = F.normalize(torch.randn(len(tok), cfg.hidden_size, generator=g), dim=-1)
    return BVVForCausalLM.from_glyphs(cfg, glyphs).eval(), tok


def ours(model, tok, items, batch: int) -> tuple[float, list[list[float]]]:
    t = time.perf_counter()
    s = scoring.score_choices(model, tok, items, batch=batch, prefix=None)
    return time.perf_counter() - t, s


def harness(lm, items) -> tuple[float, list[list[float]]]:
    from lm_eval.api.instance import Instance

    reqs = [Instance("loglikelihood", {}, (it.context, c), idx=j) for it in items for j, c in enumerate(it.choices)]
    t = time.perf_counter()
    res = lm.loglikelihood(reqs, disable_tqdm=True)
    dt = time.perf_counter() - t
    it_res = iter(res)
    return dt, [[next(it_res)[0] for _ in it.choices] for it in items]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=32, help="questions per forward (ours); requests per batch (harness)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: the shared 2-core machine is contended)")
    ap.add_argument("--no-harness", action="store_true")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    items = questions(args.questions)
    model, tok = build(items)
    lm = None
    if not args.no_harness:
        try:
            import lm_eval  # noqa: F401
            from lm_eval.models.huggingface import HFLM
        except ImportError:
            print("lm_eval is not installed (pip install lm_eval): timing ours only", file=sys.stderr)
        else:
            logging.getLogger("lm_eval").setLevel(logging.ERROR)
            tmp = tempfile.TemporaryDirectory()
            save_checkpoint(model, tok, Path(tmp.name) / "ckpt")
            lm = HFLM(pretrained=str(Path(tmp.name) / "ckpt"), trust_remote_code=True, batch_size=args.batch * 4,
                      device="cpu", dtype="float32")
    t_ours, t_h = [], []
    s_ours = s_h = None
    for _ in range(args.repeat):
        dt, s_ours = ours(model, tok, items, args.batch)
        t_ours.append(dt)
        if lm is not None:
            dt, s_h = harness(lm, items)
            t_h.append(dt)
    m_ours = eval_metrics.mc_metrics(items, s_ours)
    res = {"questions": len(items), "choices": 4, "preset": "small", "vocab_size": len(tok),
           "batch_questions": args.batch, "threads": args.threads,
           "ours_s": min(t_ours), "ours_questions_per_s": len(items) / min(t_ours),
           "ours_acc": m_ours["acc"], "ours_acc_norm": m_ours["acc_norm"], "target_ours_s": 30.0}
    if s_h is not None:
        m_h = eval_metrics.mc_metrics(items, s_h)
        joint_differs = []
        for it in items:
            d = False
            for c in it.choices:
                whole = scoring.encode(tok, it.context + c)
                ctx = scoring.encode(tok, it.context)
                d |= whole != ctx + scoring.encode(tok, c)
            joint_differs.append(d)
        same = [k for k, d in enumerate(joint_differs) if not d]
        diff = max((abs(a - b) for k in same for a, b in zip(s_ours[k], s_h[k])), default=0.0)
        agree = [k for k in same if int(np.argmax(s_ours[k])) == int(np.argmax(s_h[k]))]
        res.update({"harness_s": min(t_h), "speedup": min(t_h) / min(t_ours), "target_speedup": 2.0,
                    "harness_acc": m_h["acc"], "harness_acc_norm": m_h["acc_norm"],
                    "questions_tokenised_differently": sum(joint_differs),
                    "max_abs_loglik_diff_where_tokenisation_agrees": diff,
                    "same_pick_where_tokenisation_agrees": f"{len(agree)}/{len(same)}",
                    "lm_eval_version": __import__("lm_eval").__version__})
    for k, v in res.items():
        print(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}")
    write_results(Path(args.out), {"mc_1000": res})
    return 0


if __name__ == "__main__":
    sys.exit(main())
