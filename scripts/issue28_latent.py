"""Issue 28, the latent-language view of trained checkpoints through the logit lens and the tuned
lens side by side (`bvvlab.analysis.probe.latent_views`): per layer the probability of the answer,
of its source-language counterpart and of a control word of the prompt, with 95% bootstrap
intervals over 60 prompts, both directions; one JSON per checkpoint, read by
`issue28_probe.py report`.

    nice -n 10 python scripts/issue28_latent.py runs/i28/unfrozen_s10/checkpoints/step_0000800 --out runs/i28/latent_unfrozen_s10_800.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    from bvvlab.analysis.activations import load_model
    from bvvlab.analysis.probe import latent_views

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    logit, tuned = latent_views(load_model(args.checkpoint), seed=0, tuned=True)
    doc = {"checkpoint": args.checkpoint, "logit": logit, "tuned": tuned, "seconds": round(time.perf_counter() - t0, 1)}
    Path(args.out).write_text(json.dumps(doc, indent=1))
    for lens, views in (("logit", logit), ("tuned", tuned)):
        for d, v in views.items():
            print(lens, d, {k: [round(x, 4) for x in v[k]["mean"]] for k in ("answer", "counterpart", "control")})
    print(f"{doc['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
