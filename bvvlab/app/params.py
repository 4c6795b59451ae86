"""Notebook parameters -> the trainer's typed config (a notebook's `parameters` cell
holds plain literals, validated through the same typed config as the CLI).

papermill injects parsed literals (`-p steps abc` gives the string "abc", `-p steps 1.5` a
float), so every parameter goes through `bvvlab.train.loop.make_config` before anything is computed
from it: a wrong value is one `ValueError` line that names the parameter
("steps='abc': expected an integer") instead of a TypeError from arithmetic on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def train_notebook_config(run_dir: str | Path, *, resume: bool = True, overwrite: bool = False,
                          progress: bool = False, extra: dict[str, Any] | None = None, **params: Any):
    """The TrainConfig of notebook 02 from its parameters.

    Like the CLI, an existing run at `run_dir` is never deleted unless asked: `resume=True`
    (the notebook's default) continues it from its last checkpoint (a finished run is left as
    it is, so re-running the notebook is harmless), `resume=False` refuses it in one line (the
    trainer's "already holds a run"), and only `overwrite=True` replaces it (it then wins over
    `resume`, which is documented in the parameters cell). Logging and evaluation intervals are
    derived from the validated `steps`: ~20 train records and 4 periodic evaluations.

    `extra` holds further TrainConfig keys the notebook has no parameter for (`grad_accum`,
    `dtype`, `compile`, `vocab`, `log_every`...); it may not repeat a named parameter.
    """
    from bvvlab.core.errors import BVVError
    from bvvlab.train.loop import make_config

    if not isinstance(extra or {}, dict):
        raise BVVError(f"extra={extra!r}: give a dict of TrainConfig keys, e.g. {{'grad_accum': 4}}")
    extra = dict(extra or {})
    twice = sorted(set(extra) & (set(params) | {"out", "resume", "overwrite", "progress"}))
    if twice:
        raise BVVError(f"extra repeats {', '.join(twice)}: set {'it' if len(twice) == 1 else 'them'} through the "
                       "notebook's own parameter instead")
    derived = {k: extra.pop(k) for k in ("log_every", "eval_every") if k in extra}
    cfg = make_config(**params, **extra)  # every parameter type-checked, with its name, before any arithmetic on it
    flags = make_config(resume=resume, progress=progress)
    resume, progress = flags.resume, flags.progress
    overwrite = make_config(overwrite=overwrite).overwrite
    cfg = make_config(cfg, out=str(run_dir), resume=resume and not overwrite, overwrite=overwrite,
                      log_every=derived.get("log_every", max(1, cfg.steps // 20)),
                      eval_every=derived.get("eval_every", max(1, cfg.steps // 4)), progress=progress)
    cfg.validate()
    return cfg


def notebook_path(path: str | Path, cwd: str | Path | None = None) -> Path:
    """Where a notebook's relative output path goes, absolute: against the checkout's root when
    the kernel runs in the checkout's `notebooks/` folder (JupyterLab starts a kernel in the
    notebook's folder, so `runs/05_evaluate` landed in `notebooks/runs/`, not the checkout's
    `runs/`, issue 24), else against the working directory (papermill and the pipeline set it
    to the run's folder). An absolute path is kept."""
    from bvvlab.core.runinfo import REPO_ROOT

    p = Path(path).expanduser()
    here = Path(cwd if cwd is not None else Path.cwd()).resolve()
    if p.is_absolute():
        return p.resolve()
    if here == (REPO_ROOT / "notebooks").resolve() and (REPO_ROOT / "pyproject.toml").exists():
        here = REPO_ROOT.resolve()
    return (here / p).resolve()
