"""Words in context and the probes' statistics (issue 28, "Speed"): a 6-layer `small`-shaped
model (d 256, untrained: speed does not depend on the weights), 300 concepts x 24 contexts per
language, the span-pooled states of every layer, then every statistic of `analysis.stats`
(retrieval with a 1,000-re-pairing stratified null both ways, cosine and CSLS, bootstrap
intervals, gain over layer 0, cross-lingual debiased CKA and RSA with their nulls). Target:
<= 60 s on the 2-core machine, the null included. The contexts come from the disk cache (their
one-time sampling is timed apart, `contexts_build_s`, when the cache is cold).

The peer, in the same run (before and after, averaged): 50 fp32 512x256x1024 GEMMs.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_probe_stats.py   # writes bench/results/probe_stats.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "probe_stats.json"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concepts", type=int, default=300)
    ap.add_argument("--contexts", type=int, default=24)
    ap.add_argument("--permutations", type=int, default=1000)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    import numpy as np
    import torch
    import torch.nn.functional as F

    from bvvlab.analysis import activations, contexts, stats
    from bvvlab.core.runinfo import device_info, git_commit, write_json_atomic
    from bvvlab.glyph.tokenizer import bvv241_vocab, compact_vocab, hf_tokenizer
    from bvvlab.models.checkpoints import save_checkpoint
    from bvvlab.models.model import BVVForCausalLM, config_from_preset

    if args.threads:
        torch.set_num_threads(args.threads)
    t = time.perf_counter()
    contexts.concept_contexts([], k=24)  # the disk cache (built here if cold)
    build_s = time.perf_counter() - t
    cs = contexts.concept_contexts([], k=args.contexts, limit=args.concepts)
    tokens, _ = compact_vocab(bvv241_vocab(65536, []), cs.texts)
    tok = hf_tokenizer(tokens, [])
    cfg = config_from_preset("small", vocab_size=len(tok), num_hidden_layers=args.layers)
    glyphs = F.normalize(torch.randn(len(tok), cfg.hidden_size, generator=torch.Generator().manual_seed(0)), dim=-1)
    torch.manual_seed(0)
    model = BVVForCausalLM.from_glyphs(cfg, glyphs).eval()
    a, b = torch.randn(512, 256), torch.randn(256, 1024)

    def peer() -> float:
        t0 = time.perf_counter()
        for _ in range(50):
            a @ b
        return time.perf_counter() - t0

    peers = [peer()]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_checkpoint(model, tok, Path(tmp) / "m")
        t0, c0 = time.perf_counter(), time.process_time()
        lm = activations.load_model(ckpt)
        t1 = time.perf_counter()
        st, lengths = contexts.context_states(lm, cs, batch_size=args.batch_size)
        t2, c2 = time.perf_counter(), time.process_time()
        ia, ib, _ = stats.paired_index(cs.items)
        rep = stats.layer_report(np.asarray(st.pooled), cs.items, args.permutations,
                                 keys=stats.pair_keys(cs.items, ia, ib, word_lengths=lengths))
        t3, c3 = time.perf_counter(), time.process_time()
    peers.append(peer())
    p_s = sum(peers) / len(peers)
    total = t3 - t0
    result = {"concepts": len({it.pair for it in cs.items}), "contexts": len(cs.texts), "layers": args.layers,
              "permutations": args.permutations, "load_s": round(t1 - t0, 2), "states_s": round(t2 - t1, 2),
              "stats_s": round(t3 - t2, 2), "total_s": round(total, 2), "target_s": 60.0,
              "cpu_s": {"load_and_states": round(c2 - c0, 2), "stats": round(c3 - c2, 2)},
              "contexts_build_s": round(build_s, 2), "peer_s": round(p_s, 4),
              "gemm_gflops": round(50 * 2 * 512 * 256 * 1024 / p_s / 1e9, 2), "ratio_to_peer": round(total / p_s, 1),
              "threads": torch.get_num_threads(), "load_average": list(os.getloadavg()), "device": device_info(),
              "git_commit": git_commit(), "check_mrr_layer0": rep["layers"][0]["cosine"]["mrr"]["value"]}
    print(result)
    write_json_atomic(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
