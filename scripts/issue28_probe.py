"""Issue 28 experiments, probing part: words-in-context states of every checkpoint (cached as
.npz beside the run), then every statistic (`bvvlab.analysis.stats.layer_report`), the paired
comparisons, the category probe that transfers en -> ru with its control task, emergence over
steps and the behavioural check, into one JSON and a markdown summary.

    nice -n 10 python scripts/issue28_probe.py states --contexts 8 CKPT [CKPT ...]
    nice -n 10 python scripts/issue28_probe.py behaviour CKPT --out runs/i28/behaviour_NAME.json
    python scripts/issue28_probe.py report --out bench/results/issue28.json

Second session (the runs of the first were gone; the clone's entries are carried over from the
results file): twins at 160 steps for seeds 0-2 and one unfrozen run of 800 steps (seed 10) for
the behavioural check, in this order (runs/i28/go1.sh, go2.sh of that session):

    nice -n 10 python scripts/issue28_train.py --out runs/i28 --part frozen|unfrozen --seed S --steps 160 --save-every 40
    nice -n 10 python scripts/issue28_train.py --out runs/i28 --part untrained --seed S
    nice -n 10 python scripts/issue28_train.py --out runs/i28 --part unfrozen --seed 10 --steps 800 --save-every 200
    nice -n 10 python scripts/issue28_probe.py states --contexts 8 runs/i28/*/checkpoints/step_* runs/i28/untrained_s*
    nice -n 10 python scripts/issue28_probe.py behaviour runs/i28/unfrozen_s10/checkpoints/step_0000800 \
        --out runs/i28/behaviour_unfrozen_s10_800.json
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


def behaviour(ckpt: str, out: Path, k: int, n_perm: int) -> None:
    """Per concept, the probe's reciprocal rank (both directions averaged) for concepts the model
    translates greedily (`cat — ` -> `кошка`) minus those it does not, per layer, with a 95%
    bootstrap interval (concepts resampled within each group)."""
    from bvvlab.analysis import stats

    pooled, items, lengths, _ = load_states(states_file(ckpt, k))
    ia, ib, pairs = stats.paired_index(items)
    hits = translation_hits(ckpt, pairs)
    yes = np.array([hits[p] for p in pairs])
    rng = np.random.default_rng(0)
    rows = []
    for layer in range(pooled.shape[0]):
        rr = stats.per_pair(stats.centred_cosine(pooled[layer][ia], pooled[layer][ib]))["rr"]
        a, b = rr[yes], rr[~yes]
        if len(a) < 2 or len(b) < 2:
            rows.append(None)
            continue
        boots = [rng.choice(a, len(a)).mean() - rng.choice(b, len(b)).mean() for _ in range(2000)]
        rows.append({"layer": layer, "diff": float(a.mean() - b.mean()), "low": float(np.percentile(boots, 2.5)),
                     "high": float(np.percentile(boots, 97.5)), "mrr_translated": float(a.mean()),
                     "mrr_not": float(b.mean())})
    doc = {"checkpoint": ckpt, "translated": int(yes.sum()), "concepts": len(pairs),
           "translated_ids": sorted(p for p in pairs if hits[p]), "layers": rows}
    out.write_text(json.dumps(doc, indent=1))
    print(json.dumps(doc, indent=1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=("states", "report", "behaviour"))
    ap.add_argument("--out", default="bench/results/issue28.json")
    ap.add_argument("--permutations", type=int, default=1000)
    ap.add_argument("checkpoints", nargs="*")
    ap.add_argument("--contexts", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_intermixed_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.part == "states":
        compute_states(args.checkpoints, args.contexts)
    elif args.part == "report":
        report(Path(args.out), args.permutations, args.contexts)
    else:
        behaviour(args.checkpoints[0], Path(args.out), args.contexts, args.permutations)
    return 0



# ============================================================================ the report


def load_states(path: Path):
    from bvvlab.analysis.items import Item

    z = np.load(path)
    meta = json.loads(str(z["meta"]))
    items = [Item(t, lang, pair, label, pair, bool(h), "contexts") for t, lang, pair, label, h in meta["items"]]
    lengths = {int(k): tuple(v) for k, v in meta["lengths"].items()}
    return np.asarray(z["pooled"]), items, lengths, meta


def val_bpc(ckpt: Path) -> float | None:
    """The run's validation bits/char at this checkpoint's step (metrics.jsonl)."""
    if not ckpt.name.startswith("step_"):
        return None
    step = int(ckpt.name.split("_")[1])
    run = ckpt.parent.parent
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("kind") == "eval" and r.get("step") == step:
            return r.get("val_bpc")
    return None


def translation_hits(ckpt: str, ids: list[str]) -> dict[str, bool]:
    """Greedy word translation en -> ru in the word-line format (`cat — `): exactly the lemma."""
    import torch

    from bvvlab.corpus import concepts as C
    from bvvlab.models.checkpoints import load_checkpoint

    model, tok = load_checkpoint(ckpt)
    model.eval()
    out = {}
    with torch.no_grad():
        for cid in ids:
            c = C.LEXICON[cid]
            en, ru = C.word_line(c)
            x = tok(f"{en} — ", return_tensors="pt", add_special_tokens=False).input_ids
            y = model.generate(x, max_new_tokens=10, do_sample=False)
            out[cid] = tok.decode(y[0, x.shape[1]:], skip_special_tokens=True).split("\n")[0].strip() == ru
    return out


def summarise(name: str, path: Path, n_perm: int, seed: int = 0) -> dict:
    from bvvlab.analysis import stats, transfer

    pooled, items, lengths, meta = load_states(path)
    langs = tuple(sorted({it.lang for it in items}, key=lambda x: x != "en"))
    ia, ib, pairs = stats.paired_index(items, langs)
    keys = stats.pair_keys(items, ia, ib, word_lengths=lengths)
    rep = stats.layer_report(pooled, items, n_perm, seed, langs, keys)
    held = [i for i, it in enumerate(items) if it.heldout]
    sub = None
    if len(held) >= 16:
        hk = [keys[j] for j, p in enumerate(pairs) if items[ia[j]].heldout]
        sub = stats.layer_report(pooled[:, held], [items[i] for i in held], n_perm, seed, langs, hk, min_stratum=4)
    layers = []
    for k, L in enumerate(rep["layers"]):
        c = L["cosine"]
        tr = transfer.transfer_probe(pooled[k], items, langs[0], langs[1], seed)
        row = {"layer": k, "mrr": c["mrr"], "top1": c["top1"], "median_rank": c["median_rank"], "auc": c["auc"],
               "csls_mrr": L["csls"]["mrr"], "gain_vs_layer0": L["gain_mrr_vs_layer0"], "cka": L["cka"],
               "rsa": L["rsa"], "transfer_category": tr}
        if sub:
            row["heldout_mrr"] = sub["layers"][k]["cosine"]["mrr"]
        layers.append(row)
    ck = path.parent
    return {"name": name, "checkpoint": str(ck), "val_bpc": val_bpc(ck), "langs": list(langs), "n_pairs": rep["n_pairs"],
            "n_heldout_pairs": sub["n_pairs"] if sub else 0, "n_contexts": meta["n_contexts"],
            "permutations": n_perm, "strata": rep["strata"], "layers": layers, "_report": rep}


def report(out: Path, n_perm: int, k: int) -> None:
    from bvvlab.analysis import stats

    root = Path("runs/i28")
    found = sorted(root.glob(f"**/i28_states_k{k}.npz"))
    res = {}
    for f in found:
        ck = f.parent
        name = ck.name if not ck.name.startswith("step_") else f"{ck.parent.parent.name}@{int(ck.name[5:])}"
        cache = f.with_name(f"i28_summary_k{k}_p{n_perm}.json")
        if cache.is_file() and cache.stat().st_mtime >= f.stat().st_mtime:
            res[name] = json.loads(cache.read_text())
            continue
        t0 = time.perf_counter()
        res[name] = summarise(name, f, n_perm)
        rep = res[name]["_report"]
        res[name]["_report"] = {"pairs": rep["pairs"], "per_pair_rr": rep["per_pair_rr"]}
        cache.write_text(json.dumps(res[name]))
        print(f"{name}: {time.perf_counter() - t0:.1f} s", flush=True)
    carried = carry_over(out, res)  # the clone runs of the first session (their checkpoints are gone)
    comps = {}
    pairs = [(f"{x}_s{s}@160", f"untrained_s{s}") for s in range(3) for x in ("frozen", "unfrozen")] + \
            [(f"frozen_s{s}@160", f"unfrozen_s{s}@160") for s in range(3)] + matched_pairs(res)
    for a, b in pairs:
        if a in res and b in res:
            comps[f"{a} - {b}"] = stats.compare(res[a]["_report"], res[b]["_report"])
    seeds = seed_summary(res)
    for r in res.values():
        r.pop("_report")
    emergence = {}
    for run in ("frozen_s0", "unfrozen_s0", "unfrozen_s10"):
        steps = sorted((int(n.split("@")[1]), n) for n in res if n.startswith(run + "@"))
        base = {"clone_s0": "clone_untrained_s0", "frozen_s0": "untrained_s0"}.get(run)  # same embedding, fresh blocks
        if base in res:
            steps = [(0, base)] + steps
        if steps:
            emergence[run] = {"steps": [s for s, _ in steps], "val_bpc": [res[n]["val_bpc"] for _, n in steps],
                              "mrr": [[L["mrr"]["value"] for L in res[n]["layers"]] for _, n in steps],
                              "p_fwe": [[L["mrr"]["p_fwe"] for L in res[n]["layers"]] for _, n in steps]}
    out.parent.mkdir(parents=True, exist_ok=True)
    for key in ("models", "comparisons", "emergence"):
        for name, v in carried.get(key, {}).items():
            {"models": res, "comparisons": comps, "emergence": emergence}[key].setdefault(name, v)
    behaviour = {f.stem: json.loads(f.read_text()) for f in sorted(root.glob("behaviour_*.json"))}
    latent = {f.stem: json.loads(f.read_text()) for f in sorted(root.glob("latent_*.json"))}
    doc = {"contexts_per_concept": k, "permutations": n_perm, "models": res, "comparisons": comps,
           "emergence": emergence, "seeds": seeds, "behaviour": behaviour, "latent": latent,
           "carried_over": sorted(carried.get("models", {}))}
    from bvvlab.core.atomic import write_json_atomic

    write_json_atomic(out, doc)
    out.with_suffix(".md").write_text(markdown(doc), encoding="utf-8")
    print(markdown(doc))
    print(f"wrote {out} and {out.with_suffix('.md')}")


def carry_over(out: Path, res: dict) -> dict:
    """Entries of the earlier results file for models no longer on disk (the clone runs of the
    first session), so a re-run of the report keeps them; they are listed under `carried_over`."""
    if not out.is_file():
        return {}
    old = json.loads(out.read_text())
    keep = {n for n in old.get("models", {}) if n.startswith("clone") and n not in res}
    return {"models": {n: old["models"][n] for n in keep},
            "comparisons": {n: v for n, v in old.get("comparisons", {}).items() if n.split(" - ")[0] in keep},
            "emergence": {n: v for n, v in old.get("emergence", {}).items() if n.startswith("clone")}}


def matched_pairs(res: dict) -> list[tuple[str, str]]:
    """Per seed, the frozen twin's last checkpoint against the unfrozen checkpoint whose
    validation bits/char is closest (the twins at matched loss, not matched steps)."""
    out = []
    for s in range(3):
        a = f"frozen_s{s}@160"
        cands = [(abs(res[n]["val_bpc"] - res[a]["val_bpc"]), n) for n in res
                 if n.startswith(f"unfrozen_s{s}@") and res[n]["val_bpc"] is not None] if a in res else []
        if cands:
            out.append((a, min(cands)[1]))
    return out


def seed_summary(res: dict) -> dict:
    """Twin minus untrained twin per layer over the three seeds: each seed's mean difference, and
    the seed-averaged per-concept difference with its 95% bootstrap interval over concepts."""
    from bvvlab.analysis import stats

    out = {}
    for twin in ("frozen", "unfrozen"):
        names = [(f"{twin}_s{s}@160", f"untrained_s{s}") for s in range(3)]
        names = [(a, b) for a, b in names if a in res and b in res]
        if len(names) < 2:
            continue
        if any(res[n]["_report"]["pairs"] != res[names[0][0]]["_report"]["pairs"] for ab in names for n in ab):
            raise SystemExit("the seeds were probed on different concept pairs: recompute their states alike")
        L = len(res[names[0][0]]["_report"]["per_pair_rr"])
        rows = []
        for k in range(L):
            d = [np.asarray(res[a]["_report"]["per_pair_rr"][k]) - np.asarray(res[b]["_report"]["per_pair_rr"][k])
                 for a, b in names]
            pb = stats.paired_bootstrap(np.mean(d, 0), np.zeros(len(d[0])))
            rows.append({"layer": k, "per_seed": [float(x.mean()) for x in d], "mean": pb["diff"], "low": pb["low"],
                         "high": pb["high"], "p": pb["p"],
                         "mrr_per_seed": [res[a]["layers"][k]["mrr"]["value"] for a, _ in names],
                         "p_fwe_per_seed": [res[a]["layers"][k]["mrr"]["p_fwe"] for a, _ in names]})
        out[twin] = {"seeds": [a for a, _ in names], "val_bpc": [res[a]["val_bpc"] for a, _ in names], "layers": rows}
    return out


def markdown(doc: dict) -> str:
    """The results page: per model and layer, MRR with its interval, the null's 95th percentile,
    family-wise p, CSLS MRR, CKA/RSA (p), transfer probe and selectivity; comparisons; emergence."""
    f = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731
    out = [f"Words in context: {doc['contexts_per_concept']} contexts per concept and language; "
           f"{doc['permutations']} stratified re-pairings per null (CKA/RSA: 200).\n"]
    for name, m in doc["models"].items():
        out.append(f"#### {name} (val bits/char {m['val_bpc']}; {m['n_pairs']} pairs, {m['n_heldout_pairs']} held out; "
                   f"{m['n_contexts']} contexts; {m['strata']['count']} strata)\n")
        out.append("| layer | MRR [95% CI] | null mean / 95th | p / p_fwe | held-out MRR [CI] | CSLS MRR | CKA (p) | "
                   "RSA (p) | transfer en->other (control, chance) |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for L in m["layers"]:
            r, h, t = L["mrr"], L.get("heldout_mrr"), L["transfer_category"]
            ho = f"{f(h['value'])} [{f(h['low'])}, {f(h['high'])}] (null {f(h['null_high'])})" if h else ""
            tr = (f"{t['accuracy']:.3f} ({t['control_accuracy']:.3f}, {t['chance']:.3f})" if t.get("available") else "")
            out.append(f"| {L['layer']} | {f(r['value'])} [{f(r['low'])}, {f(r['high'])}] | {f(r['null_mean'])} / "
                       f"{f(r['null_high'])} | {r['p']:.3g} / {r['p_fwe']:.3g} | {ho} | {f(L['csls_mrr']['value'])} | "
                       f"{L['cka']['value']:.3f} ({L['cka']['p']:.3g}) | {L['rsa']['value']:.3f} ({L['rsa']['p']:.3g}) | {tr} |")
        out.append("")
    if doc["comparisons"]:
        out.append("#### Paired comparisons (MRR difference per layer, 95% CI over shared concepts)\n")
        for name, rows in doc["comparisons"].items():
            out.append(f"- {name}: " + "; ".join(f"L{k} {r['diff']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}]"
                                                for k, r in enumerate(rows)))
        out.append("")
    for twin, sm in doc.get("seeds", {}).items():
        out.append(f"#### {twin} twin minus untrained twin over seeds {', '.join(sm['seeds'])} (val bits/char "
                   f"{', '.join(f'{b:.3f}' for b in sm['val_bpc'])}): MRR difference per seed; seed-averaged per-concept "
                   "difference [95% CI over concepts]\n")
        out.append("| layer | per seed | mean [95% CI] | twin MRR per seed (p_fwe) |")
        out.append("|---|---|---|---|")
        for r in sm["layers"]:
            out.append(f"| {r['layer']} | {', '.join(f'{x:+.4f}' for x in r['per_seed'])} | {r['mean']:+.4f} "
                       f"[{r['low']:+.4f}, {r['high']:+.4f}] | "
                       f"{', '.join(f'{m:.4f} ({p:.2g})' for m, p in zip(r['mrr_per_seed'], r['p_fwe_per_seed']))} |")
        out.append("")
    for name, b in doc.get("behaviour", {}).items():
        out.append(f"#### Behavioural check {name}: {b['translated']} of {b['concepts']} concepts translated greedily "
                   "(`word — `); MRR of translated minus untranslated concepts [95% CI]\n")
        for r in b["layers"]:
            out.append(f"- L{r['layer']}: {r['diff']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}] (translated "
                       f"{r['mrr_translated']:.4f}, not {r['mrr_not']:.4f})" if r else "- (too few in one group)")
        out.append("")
    for name, v in doc.get("latent", {}).items():
        out.append(f"#### Latent language {name} ({v['checkpoint']}): mean probability by layer of the answer / its "
                   "source-language counterpart / a control word of the prompt, logit lens and tuned lens (60 prompts; "
                   "intervals in the JSON)\n")
        for lens in ("logit", "tuned"):
            for d, r in v[lens].items():
                if r.get("available"):
                    out.append(f"- {lens} {d}: " + "; ".join(
                        f"{k} " + " ".join(f"{x:.4f}" for x in r[k]["mean"]) for k in ("answer", "counterpart", "control")))
        out.append("")
    for run, e in doc["emergence"].items():
        out.append(f"#### Emergence: {run} (MRR; * family-wise p < 0.01; step 0 = the untrained twin, where there is "
                   "one)\n")
        n_layers = len(e["mrr"][0])
        out.append("| step | val bits/char | " + " | ".join(f"L{k}" for k in range(n_layers)) + " |")
        out.append("|---|---|" + "---|" * n_layers)
        for s, b, row, ps in zip(e["steps"], e["val_bpc"], e["mrr"], e["p_fwe"]):
            out.append(f"| {s} | {b if b is None else round(b, 3)} | " +
                       " | ".join(f"{v:.4f}{'*' if p < 0.01 else ''}" for v, p in zip(row, ps)) + " |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
