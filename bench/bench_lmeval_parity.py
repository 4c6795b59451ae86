"""lm-evaluation-harness parity of `tokenisation="joint"` (issue 23), against lm_eval itself.

lm_eval is not a bvvlab dependency: it runs from its own virtual environment (`--lmeval-python`,
made e.g. with `python -m venv /tmp/lmeval-venv && /tmp/lmeval-venv/bin/pip install
torch==2.13.0 lm-eval`), offline, as its CLI (`lm_eval --model hf ... --log_samples`) on a
bvvlab checkpoint (a Hugging Face model with its code: `trust_remote_code=True`) and on local
multiple-choice files written here in its custom-task format (a task yaml per file, `dataset_path:
json`, `data_files` a local jsonl). The same questions go through bvvlab's `score_choices` with
`tokenisation="joint"` and no prefix token (the harness's hf default), and `mc_metrics` with
the harness's acc_norm length (`delimiter=" "`). Compared per question: the log-likelihood of
every choice, and the acc / acc_norm pick. Four question sets:

  * suite: the offline suites' multiple-choice questions ("...\\nAnswer:" + " choice"), with the
    harness's default `target_delimiter: " "`;
  * trailing-space: the same questions with the space moved to the context ("...Answer: " +
    "choice", `target_delimiter: ""`): the harness moves a context's trailing whitespace to the
    continuation (`_encode_pair`), which is where joint and split tokenisation can differ;
  * split_word: the context's last 2 characters moved into every choice ("...\nAnswe" + "r: зима",
    `target_delimiter: ""`), so that an n-gram of the vocabulary can straddle the join (joint
    tokens are then not the two sides' own);
  * split_at_token: the last 3 characters moved ("...\nAnsw" + "er: зима"), a cut at a token
    boundary: the same tokens as the suite's, split at another point.

    .venv/bin/python bench/bench_lmeval_parity.py --checkpoint RUN    # writes bench/results/lmeval_parity.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from results_file import write_results  # bench/, beside this script

from bvvlab.eval import metrics as eval_metrics
from bvvlab.eval import scoring, suites
from bvvlab.eval import tasks as eval_tasks
from bvvlab.models.checkpoints import load_checkpoint

OUT = Path(__file__).resolve().parent / "results" / "lmeval_parity.json"
YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: "{delim}"
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def question_sets(limit: int | None, names: Sequence[str] | None = None) -> dict[str, tuple[str, list[eval_tasks.MCItem]]]:
    """name -> (the harness's target_delimiter, items as bvvlab scores them: context + choice)."""
    base = [it for t in suites.offline_suite() if t.kind == "mc" for it in t.items][:limit]
    trailing = [eval_tasks.MCItem(it.context + " ", [c[1:] for c in it.choices], it.answer) for it in base]
    # the context's last 2 characters moved into every choice ("...Answe" + "r: зима"): the cut falls
    # inside the n-gram "er" where the vocabulary has it
    split_word = [eval_tasks.MCItem(it.context[:-2], [it.context[-2:] + c for c in it.choices], it.answer) for it in base]
    # the last 3 characters moved ("...\nAnsw" + "er: зима"): a cut at a token boundary, so the joint tokens
    # equal the suite's and only the split point differs (what the harness's logits cache groups together)
    split_token = [eval_tasks.MCItem(it.context[:-3], [it.context[-3:] + c for c in it.choices], it.answer) for it in base]
    sets = {"suite": (" ", base), "trailing_space": ("", trailing), "split_word": ("", split_word),
            "split_at_token": ("", split_token)}
    return {k: v for k, v in sets.items() if k in (names or sets)}


def write_tasks(folder: Path, sets: dict) -> None:
    for name, (delim, items) in sets.items():
        data = folder / f"{name}.jsonl"
        with data.open("w", encoding="utf-8") as f:
            for it in items:  # the harness prepends target_delimiter to each choice itself
                cs = [c[len(delim):] if delim and c.startswith(delim) else c for c in it.choices]
                f.write(json.dumps({"context": it.context, "choices": cs, "answer": it.answer}, ensure_ascii=False) + "\n")
        (folder / f"bvvparity_{name}.yaml").write_text(YAML.format(name=f"bvvparity_{name}", path=data, delim=delim),
                                                        encoding="utf-8")


def run_harness(python: str, ckpt: Path, folder: Path, names: list[str], batch: int, tag: str,
                model_args: str = "") -> dict[str, list[dict]]:
    """lm_eval's CLI, offline, one thread, the tasks `names` in ONE call; its per-question samples per task."""
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "HF_DATASETS_CACHE": str(folder / "hf_cache"), "PYTHONPATH": ""}
    cmd = [python, "-m", "lm_eval", "--model", "hf", "--model_args",
           f"pretrained={ckpt},trust_remote_code=True,dtype=float32{model_args}", "--tasks", ",".join(f"bvvparity_{n}" for n in names),
           "--include_path", str(folder), "--device", "cpu", "--batch_size", str(batch), "--log_samples",
           "--output_path", str(folder / tag)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"lm_eval failed (exit {p.returncode}): {p.stderr[-3000:]}")
    out = {}
    for n in names:
        f = sorted((folder / tag).rglob(f"samples_bvvparity_{n}_*.jsonl"))[-1]
        rows = [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
        out[n] = sorted(rows, key=lambda r: r["doc_id"])
    return out


def compare(tok, items, ours: list[list[float]], theirs: list[dict], split: list[list[float]]) -> dict:
    """Per question: the largest |log-likelihood| difference, the picks, and why a pick differs."""
    m = eval_metrics.mc_metrics(items, ours, delimiter=" ")
    ms = eval_metrics.mc_metrics(items, split, delimiter=" ")
    h_ll = [[float(r[0]) for r in row["filtered_resps"]] for row in theirs]
    h_acc = [float(row["acc"]) for row in theirs]
    h_norm = [float(row["acc_norm"]) for row in theirs]
    diff = [max(abs(a - b) for a, b in zip(o, h)) for o, h in zip(ours, h_ll)]
    tokdiff = {d["question"]: sorted({c["why"] for c in d["choices"]}) for d in scoring.tokenisation_differences(tok, items)}
    differ = []
    for k in range(len(items)):
        for metric, ours_k, theirs_k in (("acc", m["per_question"]["acc"][k], h_acc[k]),
                                         ("acc_norm", m["per_question"]["acc_norm"][k], h_norm[k])):
            if ours_k != theirs_k:
                gap = sorted(np.asarray(h_ll[k]))[-2:]
                differ.append({"question": k, "metric": metric, "ours": ours_k, "harness": theirs_k,
                               "max_abs_loglik_diff": diff[k], "harness_top2_margin": float(gap[1] - gap[0]),
                               "tokenisation_differs": tokdiff.get(k, [])})
    return {"questions": len(items), "acc_ours": m["acc"], "acc_harness": float(np.mean(h_acc)),
            "acc_norm_ours": m["acc_norm"], "acc_norm_harness": float(np.mean(h_norm)),
            "acc_split": ms["acc"], "acc_norm_split": ms["acc_norm"],
            "max_abs_loglik_diff": float(max(diff)), "median_abs_loglik_diff": float(np.median(diff)),
            "questions_tokenised_differently_joint_vs_split": len(tokdiff),
            "why_tokenised_differently": {w: sum(w in v for v in tokdiff.values()) for w in ("merge", "whitespace")},
            "split_vs_joint_picks_differ": {k: int(sum(a != b for a, b in zip(m["per_question"][k], ms["per_question"][k])))
                                            for k in ("acc", "acc_norm")},
            "picks_differ_from_harness": differ}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="a bvvlab run or checkpoint folder")
    ap.add_argument("--lmeval-python", default="/tmp/lmeval-venv/bin/python", help="python of a venv with lm-eval")
    ap.add_argument("--limit", type=int, default=None, help="questions per set (default: all 1,224)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--sets", nargs="+", default=None, help="question sets (default: all): suite trailing_space "
                    "split_word split_at_token")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model, tok = load_checkpoint(args.checkpoint)
    model.eval()
    sets = question_sets(args.limit, args.sets)
    version = subprocess.run([args.lmeval_python, "-c", "import lm_eval, transformers; print(lm_eval.__version__, "
                              "transformers.__version__)"], capture_output=True, text=True).stdout.split()
    res: dict = {"checkpoint": str(args.checkpoint), "interface": model.config.interface, "vocab_size": len(tok),
                 "lm_eval_version": version[0] if version else None,
                 "harness_transformers_version": version[1] if len(version) > 1 else None,
                 "bvvlab_side": "score_choices(prefix=None, tokenisation='joint'); mc_metrics(delimiter=' ')",
                 "command": "python bench/bench_lmeval_parity.py " + " ".join(argv or sys.argv[1:])}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_tasks(folder, sets)
        ckpt = Path(args.checkpoint).resolve()
        t = time.perf_counter()  # each set in its own lm_eval call, the harness's defaults
        theirs = {n: run_harness(args.lmeval_python, ckpt, folder, [n], args.batch, f"alone_{n}")[n] for n in sets}
        res["harness_s"] = time.perf_counter() - t
        # all sets in one call: the logits cache (on by default) groups requests across tasks
        together = run_harness(args.lmeval_python, ckpt, folder, list(sets), args.batch, "together")
        for name, (_, items) in sets.items():
            ours = scoring.score_choices(model, tok, items, prefix=None, tokenisation="joint")
            split = scoring.score_choices(model, tok, items, prefix=None, tokenisation="split")
            res[name] = compare(tok, items, ours, theirs[name], split)
            tog = compare(tok, items, ours, together[name], split)
            res[name]["one_call_all_sets"] = {k: tog[k] for k in ("acc_harness", "acc_norm_harness", "max_abs_loglik_diff",
                                                                  "median_abs_loglik_diff")}
            res[name]["one_call_all_sets"]["picks_differ_from_harness"] = len(tog["picks_differ_from_harness"])
            r = res[name]
            print(f"{name}: {r['questions']} questions; acc {r['acc_ours']:.4f} vs harness {r['acc_harness']:.4f}, "
                  f"acc_norm {r['acc_norm_ours']:.4f} vs {r['acc_norm_harness']:.4f}; max |dll| "
                  f"{r['max_abs_loglik_diff']:.2e}; picks differing: {len(r['picks_differ_from_harness'])}; "
                  f"joint vs split tokens differ on {r['questions_tokenised_differently_joint_vs_split']}; all sets in one "
                  f"call: max |dll| {r['one_call_all_sets']['max_abs_loglik_diff']:.2e}, picks differing "
                  f"{r['one_call_all_sets']['picks_differ_from_harness']}")
    write_results(Path(args.out), {"parity": res})
    return 0


if __name__ == "__main__":
    sys.exit(main())
