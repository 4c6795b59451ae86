"""Checks every rank of a torchrun job makes together before any work (issue 27).

On several nodes each node runs its own `torchrun ... bvvlab train --config CFG`, with its own
copy of the config and of the corpus. A node whose config differs would train another
experiment under one name, or hang the others at a collective; a node without the corpus would
fail alone while the others wait for it until a timeout. So every rank gathers the same facts
(host, a hash of its config, whether its corpus files exist) and every rank raises the same
one-line error, at once, naming the rank and host at fault.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import socket
from pathlib import Path
from typing import Any

from bvvlab.train import distributed as dist

# what may differ between ranks: display only
_LOCAL_KEYS = ("progress",)


def config_hash(cfg: Any) -> str:
    """sha256 (12 hex digits) of the config's fields, less the display-only ones."""
    d = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _LOCAL_KEYS}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def corpus_problem(corpus: dict[str, float]) -> str | None:
    """The first source of `corpus` that this machine cannot read (a local path that is absent)."""
    from bvvlab.corpus import sources as corpora

    for name in corpus:
        base, _ = corpora.split_spec(name)
        if base in corpora.CORPORA or str(base).startswith("hf:"):
            continue
        if not Path(str(base)).expanduser().exists():
            return f"corpus {name} does not exist"
    return None


def check_ranks(cfg: Any, info: dist.DistInfo) -> None:
    """Raise the same one line on every rank when the ranks disagree on the config or a rank
    lacks the corpus (a collective: every rank must call it; nothing for one process)."""
    if info.world <= 1:
        return
    mine = {"host": socket.gethostname(), "hash": config_hash(cfg),
            "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _LOCAL_KEYS},
            "corpus": corpus_problem(dict(cfg.corpus))}
    facts = dist.gather_objects(mine, info.world)
    for rank, f in enumerate(facts):
        if f["corpus"]:
            raise ValueError(f"rank {rank} (host {f['host']}): {f['corpus']}: copy the corpus to every node at the "
                             "same path, or put it on shared storage")
    ref = facts[0]
    for rank, f in enumerate(facts):
        if f["hash"] != ref["hash"]:
            keys = sorted(k for k in set(f["config"]) | set(ref["config"]) if f["config"].get(k) != ref["config"].get(k))
            raise ValueError(f"node ranks disagree on the config: rank {rank} (host {f['host']}) has config hash "
                             f"{f['hash']}, rank 0 (host {ref['host']}) {ref['hash']} ({', '.join(keys)} differ): "
                             "launch every node with the same config file and key=value arguments")
