"""Notebook parameters -> the commands' typed configs (a notebook's `parameters` cell holds plain
literals, validated through the same typed config as the CLI and the pipeline's `--set`).

papermill injects parsed literals (`-p steps abc` gives the string "abc", `-p steps 1.5` a
float), so every notebook hands its parameters to one function here before anything is computed
from them, and uses the values it returns: a wrong value is one `ValueError` line that names the
parameter ("steps='abc': expected an integer", "folds=1: must be >= 2 ...") instead of a
TypeError from arithmetic on it. The pipeline checks every step's parameters with the same
function before it runs anything (`check_notebook_parameters`), so its `--set` gives the same line.

Parameters a notebook has besides its command's config (the tiny model's `train_steps`, the
probe's `probe_concepts`...) go through `bvvlab.core.config.check_count`: the same coercion,
the same words.
"""

from __future__ import annotations

import os
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
    from bvvlab.train.config import make_config

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


def probe_notebook_config(*, checkpoints: Any, items: Any, limit: Any, heldout: Any, pooling: Any, layers: Any,
                          folds: Any, umap: Any, latent: Any, train_steps: Any, run_dir: Any,
                          trust_remote_code: Any = False, contexts: Any = None, permutations: Any = None,
                          max_tokens: Any = None, anchors: Any = None, tuned_lens: Any = None):
    """(ProbeConfig, train_steps) of notebook 03: the probe run goes to `run_dir/probe` (replaced
    on a re-run); `train_steps` trains the tiny model used when `checkpoints` is empty."""
    from bvvlab.analysis.probe import ProbeConfig
    from bvvlab.core.config import build, check_count, coerce

    run_dir = coerce("run_dir", run_dir, str)
    cfg = build(ProbeConfig, checkpoints=checkpoints or [], items=items, limit=limit, heldout=heldout,
                pooling=pooling, layers=layers, folds=folds, umap=umap, latent=latent,
                out=str(Path(run_dir) / "probe"), overwrite=True, trust_remote_code=trust_remote_code,
                max_tokens=max_tokens,
                **{k: v for k, v in (("contexts", contexts), ("permutations", permutations), ("anchors", anchors),
                                     ("tuned_lens", tuned_lens)) if v is not None})
    return cfg, check_count("train_steps", train_steps, 1, "steps of the tiny model trained when checkpoints is empty")


def eval_notebook_config(*, checkpoint: Any, steps: Any, suite: Any, limit: Any, bpc_chars: Any, runs: Any,
                         protocol_questions: Any, run_dir: Any, out_dir: Any, trust_remote_code: Any = False):
    """(EvalConfig, steps, protocol_questions) of notebook 05: `checkpoint` is a folder, a list
    of them, or None (then a tiny model of `steps` steps is trained in `run_dir`)."""
    from bvvlab.core.config import build, check_count, coerce
    from bvvlab.eval.runner import EvalConfig

    coerce("run_dir", run_dir, str)
    if checkpoint is None:
        checkpoint = []
    elif isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = [os.fspath(checkpoint)]  # one folder (a comma in its name is not a list)
    cfg = build(EvalConfig, checkpoints=checkpoint, suite=suite, limit=limit,
                bpc_chars=bpc_chars, runs=runs, out=out_dir, trust_remote_code=trust_remote_code)
    return (cfg, check_count("steps", steps, 1, "steps of the tiny model trained when checkpoint is None"),
            check_count("protocol_questions", protocol_questions, 1, "questions of the protocol demo"))


def fusion_notebook_config(*, preset: Any, steps: Any, train_chars: Any, seq_len: Any, batch_size: Any, lr: Any,
                           eval_texts: Any, val_chars: Any, seed: Any, run_dir: Any) -> dict[str, Any]:
    """The keyword arguments of `bvvlab.train.fusion.experiment` from notebook 06's parameters:
    the training ones checked by the trainer's TrainConfig, `eval_texts` as a count."""
    from bvvlab.core.config import check_count, coerce
    from bvvlab.train.config import make_config

    cfg = make_config(preset=preset, steps=steps, train_chars=train_chars, seq_len=seq_len, batch_size=batch_size,
                      lr=lr, val_chars=val_chars, seed=seed)
    cfg.validate()
    return dict(out=coerce("run_dir", run_dir, str), preset=cfg.preset, steps=cfg.steps, train_chars=cfg.train_chars,
                seq_len=cfg.seq_len, batch_size=cfg.batch_size, lr=cfg.lr, val_chars=cfg.val_chars, seed=cfg.seed,
                eval_texts=check_count("eval_texts", eval_texts, 1, "validation paragraphs per language"))


def growth_notebook_config(*, preset: Any, stages: Any, steps_per_stage: Any, new_block_init: Any, lora_rank: Any,
                           baseline: Any, baseline_compute: Any, probe_concepts: Any, corpus: Any, train_chars: Any,
                           val_chars: Any, seq_len: Any, batch_size: Any, lr: Any, seed: Any, run_dir: Any):
    """(GrowConfig, base TrainConfig of every stage, probe_concepts) of notebook 07. Logging,
    saving and warmup follow the validated `steps_per_stage`."""
    from bvvlab.core.config import build, check_count, coerce
    from bvvlab.train.config import make_config
    from bvvlab.train.growth import GrowConfig

    coerce("run_dir", run_dir, str)
    grow = build(GrowConfig, stages=stages, steps_per_stage=steps_per_stage, new_block_init=new_block_init,
                 lora_rank=lora_rank, baseline=baseline, baseline_compute=baseline_compute)
    steps = grow.steps_per_stage if grow.steps_per_stage is not None else make_config().steps
    base = make_config(preset=preset, corpus=corpus, train_chars=train_chars, val_chars=val_chars, seq_len=seq_len,
                       batch_size=batch_size, lr=lr, seed=seed, log_every=max(1, steps // 20),
                       eval_every=0, save_every=steps, warmup=max(1, steps // 10), progress=False)
    base.validate()
    return grow, base, check_count("probe_concepts", probe_concepts, 0, "concepts probed per stage; 0: no probing")


def generate_notebook_settings(*, checkpoint: Any, runs_dir: Any, run_dir: Any, train_steps: Any, prompt: Any,
                               trust_remote_code: Any = False, **settings: Any):
    """(GenerationSettings, train_steps) of notebook 04 (the settings check their own values)."""
    from bvvlab.core.config import check_count, coerce
    from bvvlab.models.generation import settings_from

    for name, value in (("checkpoint", checkpoint), ("runs_dir", runs_dir), ("run_dir", run_dir), ("prompt", prompt)):
        coerce(name, value, str)
    coerce("trust_remote_code", trust_remote_code, bool)
    return settings_from(**settings), check_count("train_steps", train_steps, 1, "steps of the tiny model")


def _by_default(params: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Notebook 01 has no command config: each parameter coerced to its default's type."""
    from bvvlab.core.config import coerce

    for name, value in params.items():
        default = defaults.get(name)
        if isinstance(default, (bool, int, float, str)):
            coerce(name, value, type(default))
        elif isinstance(default, list):
            coerce(name, value, list[type(default[0]) if default else str])


def _train_notebook(params: dict[str, Any]) -> None:
    """Notebook 02: its run folder is `run_dir`; `out_dir` (figures) is not a training setting."""
    from bvvlab.core.config import coerce

    coerce("out_dir", params.pop("out_dir", "figures"), str)
    train_notebook_config(params.pop("run_dir"), **params)


def _interfaces_notebook(params: dict[str, Any]) -> None:
    """Notebook 08: its training settings through the trainer's typed config (so `train_chars=None`
    means the whole split, as there), the series' own settings by type."""
    from bvvlab.core.config import check_count, coerce
    from bvvlab.train.config import config_keys, make_config

    make_config(**{k: v for k, v in params.items() if k in config_keys()}).validate()
    for name in ("series", "seeds", "run_dir"):
        coerce(name, params.get(name, ""), str)
    for name in ("suites", "probe"):
        coerce(name, params.get(name, True), bool)
    if params.get("suite_limit") is not None:
        check_count("suite_limit", params["suite_limit"], 1, "questions per suite task; none: all")


# notebook -> the function its parameters cell is checked with (all its parameters, by name)
CHECKS = {"02_train.ipynb": _train_notebook,
          "03_probe_layers.ipynb": lambda p: probe_notebook_config(**p),
          "04_generate.ipynb": lambda p: generate_notebook_settings(**p),
          "05_evaluate.ipynb": lambda p: eval_notebook_config(**p),
          "06_fusion.ipynb": lambda p: fusion_notebook_config(**p),
          "07_growth.ipynb": lambda p: growth_notebook_config(**p),
          "08_interfaces.ipynb": _interfaces_notebook}


def check_notebook_parameters(notebook: str, params: dict[str, Any], defaults: dict[str, Any] | None = None) -> None:
    """Check a notebook's parameters (all of them: its defaults with the overrides over them) as the
    notebook itself will; nothing is read or written. One ValueError line for a wrong value."""
    check = CHECKS.get(notebook)
    if check is None:
        _by_default(params, defaults if defaults is not None else params)
    else:
        check(dict(params))
