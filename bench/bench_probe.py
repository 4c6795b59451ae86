"""Probing speed (issue 11, "Speed"): every metric of `bvvlab.analysis.probe` for a 6-layer `small`-shaped
model (d 256) over 500 concept items (250 concepts x en/ru), and the UMAP map of every layer.

  (a) all metrics but UMAP: hidden states of 7 layers (batched, left-padded), retrieval both
      ways (centred, raw, language direction removed; trained / held-out subsets), category and
      language probes (5-fold GroupKFold) + the language probe after removal, silhouettes, the
      logit lens, the latent-language view (2 x 60 prompts), CKA layer x layer, then PCA maps and
      every figure written to HTML. Target <= 10 s. Measured twice over: the first call in a fresh
      process (what `bvvlab probe` costs; it includes plotly's first template load, about 0.7 s)
      and `--repeat` warm calls after it (a notebook's second run), each from loading the model.
  (b) UMAP on every layer: the first UMAP call of the process (numba compiles umap's kernels;
      stated separately as the first-run cost), then the 7 maps. Target <= 60 s after compilation.

The model is untrained (speed does not depend on the weights). Timings are wall-clock. By default
torch and BLAS keep their own thread counts, as for a user; `--threads N` pins them. The per-layer
metrics run in `--jobs` worker processes (default bvvlab's: the usable cores, at most 4).

The peer, in the same run (before and after, averaged): 50 fp32 512x256x1024 GEMMs at the same
threads. `ratio_to_peer` = seconds / peer seconds, steadier than seconds on a shared, noisy host.

    .venv/bin/python bench/bench_probe.py              # writes bench/results/probe.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "probe.json"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=0,
                    help="torch/BLAS threads; 0 (default): what a user gets, torch's and OpenBLAS's own defaults")
    ap.add_argument("--items", type=int, default=500, help="items (half English, half Russian)")
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--jobs", type=int, default=None,
                    help="worker processes for the probes' fits (default: bvvlab's, the usable cores up to 4)")
    ap.add_argument("--repeat", type=int, default=2, help="warm calls after the first one")
    ap.add_argument("--checkpoint", default=None,
                    help="probe this checkpoint instead of the untrained model (the fits' iterations depend on the "
                         "states; compare with --layers of its depth)")
    ap.add_argument("--no-umap", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.threads:
        for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            os.environ[k] = str(args.threads)
    t_import = time.perf_counter()
    import numpy as np
    import sklearn.linear_model  # noqa: F401  (import cost reported on its own)
    import torch
    import torch.nn.functional as F

    from bvvlab.analysis import activations, latent, maps, probe, workers
    from bvvlab.analysis import items as probe_items
    from bvvlab.core.runinfo import device_info, git_commit, write_json_atomic
    from bvvlab.glyph.tokenizer import bvv241_vocab, compact_vocab, hf_tokenizer
    from bvvlab.models.checkpoints import save_checkpoint
    from bvvlab.models.model import BVVForCausalLM, config_from_preset

    if args.threads:
        torch.set_num_threads(args.threads)
    import_s = time.perf_counter() - t_import

    items = probe_items.concept_items(heldout=["cat", "dog", "red", "bread", "mother"])[:args.items]
    texts = [it.text for it in items] + [p["prompt"] + p["answer"] for d in ("en2ru", "ru2en")
                                         for p in latent.translation_prompts(d)]
    tokens, _ = compact_vocab(bvv241_vocab(65536, []), texts)
    tok = hf_tokenizer(tokens, [])
    cfg = config_from_preset("small", vocab_size=len(tok), num_hidden_layers=args.layers)
    glyphs = F.normalize(torch.randn(len(tok), cfg.hidden_size, generator=torch.Generator().manual_seed(0)), dim=-1)
    torch.manual_seed(0)
    model = BVVForCausalLM.from_glyphs(cfg, glyphs).eval()
    result = {"items": len(items), "layers": args.layers, "hidden_size": cfg.hidden_size, "vocab": len(tok),
              "threads": torch.get_num_threads(), "jobs": args.jobs if args.jobs is not None else workers.default_jobs(),
              "import_s": round(import_s, 3), "device": device_info(), "git_commit": git_commit(),
              "load_average_before": list(os.getloadavg())}
    a, b = torch.randn(512, 256), torch.randn(256, 1024)

    def peer() -> float:  # this machine's fp32 GEMM speed at the probe's width, right now
        t = time.perf_counter()
        for _ in range(50):
            a @ b
        return time.perf_counter() - t

    peer_s = [peer()]

    def all_but_umap(ckpt: Path, out: Path) -> tuple[dict[str, float], dict, dict]:
        t0 = time.perf_counter()
        lm = activations.load_model(ckpt)
        t1 = time.perf_counter()
        metrics, states, _ = probe.probe_models([str(ckpt)], items, lms=[lm], jobs=args.jobs)
        t2 = time.perf_counter()
        probe.write_run(out, metrics, states, items, umap=False)
        t3 = time.perf_counter()
        return ({"load_s": round(t1 - t0, 3), "metrics_s": round(t2 - t1, 3), "pca_figures_s": round(t3 - t2, 3),
                 "all_but_umap_s": round(t3 - t0, 3)}, metrics, states)

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(args.checkpoint) if args.checkpoint else save_checkpoint(model, tok, Path(tmp) / "small6")
        if args.checkpoint:
            result.update(checkpoint=str(ckpt), layers=activations.load_model(ckpt).n_layers, vocab=None)
        first, metrics, states = all_but_umap(ckpt, Path(tmp) / "pca")
        warm = [all_but_umap(ckpt, Path(tmp) / f"pca{r}")[0] for r in range(args.repeat)]
        peer_s.append(peer())
        p_s = sum(peer_s) / len(peer_s)
        result.update(first, target_all_but_umap_s=10.0, peer_s=round(p_s, 4),
                      gemm_gflops=round(50 * 2 * 512 * 256 * 1024 / p_s / 1e9, 2),
                      ratio_to_peer=round(first["all_but_umap_s"] / p_s, 1), warm=warm)
        if warm:
            result["all_but_umap_warm_median_s"] = float(np.median([w["all_but_umap_s"] for w in warm]))
        m = next(iter(metrics["models"].values()))
        result["check"] = {"top1_layer0": m["retrieval"][0]["top1"], "chance_top1": m["retrieval"][0]["chance_top1"]}
        print(f"peer, fp32 GEMM 512x256x1024 at {result['threads']} threads: {result['gemm_gflops']} GFLOP/s")
        print(f"all metrics but UMAP, {len(items)} items, {result['layers'] + 1} hidden states, {result['jobs']} worker "
              f"processes: first call {first['all_but_umap_s']:.2f} s (load {first['load_s']:.2f}, metrics "
              f"{first['metrics_s']:.2f}, PCA maps + figures {first['pca_figures_s']:.2f}; {result['ratio_to_peer']} "
              f"peers; imports before: {import_s:.2f} s)")
        if warm:
            print("  warm calls: " + ", ".join(f"{w['all_but_umap_s']:.2f}" for w in warm) + " s")
        if not args.no_umap:
            st = next(iter(states.values()))
            t4 = time.perf_counter()
            maps.coords_2d(np.asarray(st.pooled[0][:40]), "umap", 0)  # numba's compilation, on a small input
            t5 = time.perf_counter()
            maps.layer_maps(st, "umap", 0)
            t6 = time.perf_counter()
            maps.layer_maps(st, "aligned-umap", 0)
            t7 = time.perf_counter()
            result.update(umap_first_call_s=round(t5 - t4, 3), umap_all_layers_s=round(t6 - t5, 3),
                          aligned_umap_all_layers_s=round(t7 - t6, 3), target_umap_all_layers_s=60.0)
            print(f"UMAP: first call (numba compilation) {t5 - t4:.2f} s, then {args.layers + 1} layers {t6 - t5:.2f} s; "
                  f"AlignedUMAP over all layers {t7 - t6:.2f} s (its own first compilation included)")
    result["load_average_after"] = list(os.getloadavg())
    write_json_atomic(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
