"""Merge one benchmark run's results into its JSON file under bench/results (shared by the benches)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from bvvlab.core.atomic import write_json_atomic
from bvvlab.core.runinfo import run_meta


def write_results(out: Path, results: dict[str, Any]) -> None:
    """Earlier parts' results stay; this run's parts replace theirs; `meta` says how it was run."""
    previous = json.loads(out.read_text()) if out.exists() else {}
    previous.update(results)
    previous["meta"] = run_meta(None, command=" ".join(sys.argv), torch_threads=torch.get_num_threads())
    write_json_atomic(out, previous)
    print(f"wrote {out}")
