"""`bvvlab pipeline`: the notebooks in order, through papermill, into one run folder and a report.

A profile (`smoke`, `demo`, `paper`) fixes every notebook's parameters. The steps are
embeddings (01) -> the frozen and the unfrozen twin (02, twice) -> evaluation (05) ->
probing (03) -> fusion (06) -> growth (07) -> generation (04, headless). Each step runs its
notebook with papermill in the run folder (paths relative to it) and writes:

    OUT/pipeline.json            the plan, every step's status, parameters, key and timing
    OUT/notebooks/NN_step.ipynb  the executed notebook (also when it failed: it shows the cell)
    OUT/steps/<step>/            the step's run folder, with its metrics.json
    OUT/report.html, report.md   the findings (bvvlab.app.report), rewritten after every step

A step's *key* hashes its notebook, its parameters and the keys of the steps it reads from.
Re-running the same command skips the steps whose key is unchanged and whose outputs are
complete; a changed step (and every step downstream of it) runs again, its earlier folder
moved to `OUT/superseded/` (nothing finished is deleted). A failed step names the notebook,
the cell and the error; the steps that do not depend on it still run. Ctrl-C stops between
or inside a step; the same command continues (the training notebooks resume their
checkpoints).

With `gpus > 1` a training step first launches `torchrun` on `bvvlab train` with exactly the
config the notebook builds (bvvlab.app.params), then runs the notebook, which finds the
finished run and only reports it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as _dt
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bvvlab.app.params import check_notebook_parameters
from bvvlab.core.atomic import ensure_dir, write_json_atomic
from bvvlab.core.errors import BVVError, Interrupted
from bvvlab.core.locks import folder_lock
from bvvlab.core.runinfo import run_meta


class PipelineError(BVVError):
    """Bad pipeline input (unknown profile, step or parameter; a folder that holds something else)."""


@dataclasses.dataclass
class PipelineConfig:
    """What `bvvlab pipeline` takes (built through `bvvlab.core.config.build`)."""

    profile: str = "smoke"  # one of PROFILES: smoke, demo, paper
    out: str | None = None  # run folder (None: runs/<profile>-<time>); the same out continues a run
    set: list[str] = dataclasses.field(default_factory=list)  # STEP.PARAM=VALUE notebook parameters (JSON values)
    only: list[str] | None = None  # steps to run, with the steps they read from (None: every step)
    gpus: int = 1  # GPUs for the training steps (> 1: torchrun); per node
    nnodes: int = 1  # nodes for the training steps (> 1: write the configs, print each node's torchrun line)
    dry_run: bool = False  # print the plan, parameter counts, tokens and memory; run nothing
    notebooks: str | None = None  # folder of the notebooks (None: the checkout's notebooks/)
    progress: bool | None = None  # progress bars (None: when stderr is a terminal)
    seeds: list[int] | None = None  # train the twins once per seed (None: once, the notebook's seed)

    def validate(self) -> None:
        parse_sets(self.set)
        check_seeds(self.seeds)
        if self.gpus < 1:
            raise PipelineError(f"--gpus {self.gpus}: give 1 or more")
        if self.nnodes < 1:
            raise PipelineError(f"--nnodes {self.nnodes}: give 1 or more")
        if self.only is not None and not self.only:
            check_only([], [])


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """`--set STEP.PARAM=VALUE` items -> {"STEP.PARAM": JSON value}."""
    sets = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq:
            raise PipelineError(f"--set {item}: write STEP.PARAM=VALUE, e.g. --set train.steps=50")
        sets[key.strip()] = parse_value(value)
    return sets


def check_seeds(seeds: list[int] | None) -> None:
    """`seeds` name distinct seeds >= 0, at least one (None: the notebook's own seed, once)."""
    if seeds is None:
        return
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise PipelineError(f"--seeds {','.join(map(str, seeds))}: give distinct seeds >= 0, e.g. --seeds 0,1,2")


def check_only(only: list[str], steps: list[Step]) -> None:
    """`only` must name steps (or groups) of the plan; an empty list (`--only ,`) names none."""
    names = [s.name for s in steps or _steps()]
    if not only:
        raise PipelineError(f"--only names no step: give comma-separated steps, e.g. --only probe; steps are "
                            f"{', '.join(names)}")
    targets = set(names) | {s.group for s in steps}
    bad = [n for n in only if n not in targets]
    if bad:
        raise PipelineError(f"--only {','.join(bad)}: unknown step; steps are {', '.join(names)}")


# ---------------------------------------------------------------------------------------------
# the plan


@dataclasses.dataclass
class Step:
    """One notebook run. `params` are papermill parameters (paths relative to the run folder);
    `needs` the steps whose outputs it reads; `metrics` where its metrics.json lands."""

    name: str
    notebook: str
    params: dict[str, Any]
    metrics: str
    needs: tuple[str, ...] = ()
    group: str = ""  # `--set GROUP.param=v` reaches every step of the group (both twins: "train")
    train_run: str | None = None  # the training run folder, for torchrun when gpus > 1

    @property
    def folder(self) -> str:
        return f"steps/{self.name}"


def _twin_steps(seeds: list[int] | None) -> list[Step]:
    """The frozen and the trainable twin, once per seed. The first seed's twins are
    `train-frozen` and `train-unfrozen` (what evaluation, probing and generation read); every
    further seed adds `train-frozen-seedN` and `train-unfrozen-seedN`, which only the report's
    frozen-vs-trainable finding reads (its interval over seeds). Without `seeds` the pipeline
    leaves `seed` to the notebook (so earlier runs' keys stay the same)."""
    steps = []
    for k, seed in enumerate(seeds or [None]):
        for frozen, kind in ((True, "frozen"), (False, "unfrozen")):
            name = f"train-{kind}" + (f"-seed{seed}" if k else "")
            run = f"steps/{name}/{kind}"  # folders named frozen/ and unfrozen/: later steps label models by folder
            params = {"frozen": frozen, "run_dir": run, "out_dir": f"steps/{name}", "resume": True, "overwrite": False}
            if seed is not None:
                params["seed"] = seed
            steps.append(Step(name, "02_train.ipynb", params, f"steps/{name}/metrics.json", group="train",
                              train_run=run))
    return steps


def _steps(seeds: list[int] | None = None) -> list[Step]:
    """The pipeline's steps with the parameters every profile shares (paths, wiring)."""
    twins = ["steps/train-frozen/frozen", "steps/train-unfrozen/unfrozen"]
    steps = [Step("embeddings", "01_embeddings.ipynb", {"out_dir": "steps/embeddings"}, "steps/embeddings/metrics.json")]
    steps += _twin_steps(seeds)
    steps += [
        Step("evaluate", "05_evaluate.ipynb", {"checkpoint": twins, "run_dir": "steps/evaluate",
                                                "out_dir": "steps/evaluate"},
             "steps/evaluate/metrics.json", needs=("train-frozen", "train-unfrozen")),
        Step("probe", "03_probe_layers.ipynb", {"checkpoints": twins, "run_dir": "steps/probe"},
             "steps/probe/probe/metrics.json", needs=("train-frozen", "train-unfrozen")),
        Step("fusion", "06_fusion.ipynb", {"run_dir": "steps/fusion"}, "steps/fusion/metrics.json"),
        Step("growth", "07_growth.ipynb", {"run_dir": "steps/growth"}, "steps/growth/metrics.json"),
        Step("interfaces", "08_interfaces.ipynb", {"run_dir": "steps/interfaces"}, "steps/interfaces/summary.json"),
        Step("generate", "04_generate.ipynb", {"checkpoint": twins[0], "runs_dir": "steps",
                                                "run_dir": "steps/generate"},
             "steps/generate/metrics.json", needs=("train-frozen",)),
    ]
    for s in steps:
        s.group = s.group or s.name
    return steps


# the suite's held-out concepts (about 10%) never reach training, so the evaluation's and the
# probe's "heldout" rows measure concepts the twins never saw
_DEMO_CORPUS = "libreoffice-en-ru?holdout=suite:0.6,concepts?holdout=suite:0.3,instructions?holdout=suite:0.1"

# per-profile parameters by step group (on top of the notebooks' own defaults and the wiring above)
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    # what the tests run: every notebook at about its nbval size
    "smoke": {
        "embeddings": {"max_points": 600},
        "train": {"preset": "tiny", "steps": 12, "train_chars": 30000, "seq_len": 32, "batch_size": 8,
                  "corpus": "libreoffice-en-ru?holdout=suite:0.5,concepts?holdout=suite:0.5", "extra": {"val_chars": 6000}},
        "evaluate": {"limit": 10, "bpc_chars": 600, "runs": 2, "protocol_questions": 4},
        "probe": {"limit": 30, "folds": 3, "umap": False, "latent": False},
        "fusion": {"steps": 6, "train_chars": 12000, "eval_texts": 3, "val_chars": 2000},
        "growth": {"stages": "1,1", "steps_per_stage": 6, "train_chars": 15000, "val_chars": 4000, "probe_concepts": 12},
        "interfaces": {"series": "glyph,id-bits", "steps": 6, "eval_every": 2, "eval_batches": 2, "batch_size": 4,
                       "seq_len": 32, "train_chars": 15000, "val_chars": 3000, "suites": False, "probe": False},
        "generate": {"max_new_tokens": 24},
    },
    # `make demo`: the README's main job, minutes on a 2-core laptop CPU
    "demo": {
        "embeddings": {},
        "train": {"preset": "tiny", "steps": 200, "train_chars": 400_000, "seq_len": 64, "batch_size": 16,
                  "lr": 0.003, "corpus": _DEMO_CORPUS, "extra": {"val_chars": 60000}},
        "evaluate": {"limit": 60, "bpc_chars": 4000, "runs": 3, "protocol_questions": 16,
                     "suite": "concepts-category/trained,concepts-category/heldout,concepts-word-en-ru/trained,"
                              "concepts-word-en-ru/heldout,bpc"},
        "probe": {"limit": 120, "folds": 5, "umap": True, "latent": True},
        "fusion": {"steps": 120, "train_chars": 200_000, "seq_len": 64, "batch_size": 16, "lr": 0.003,
                   "eval_texts": 20, "val_chars": 20000},
        "growth": {"stages": "1,1,1", "steps_per_stage": 60, "train_chars": 200_000, "val_chars": 20000,
                   "seq_len": 64, "batch_size": 16, "lr": 0.003},
        "interfaces": {"steps": 60, "eval_every": 10, "train_chars": 200_000, "val_chars": 20000, "suite_limit": 30},
        "generate": {"max_new_tokens": 64, "prompt": "The "},
    },
    # the best_bvv_ru shape (recipe section 4) for GPUs: check with --dry-run; not run in CI
    "paper": {
        "embeddings": {"vocab": "bvv241-max", "max_points": 8000},
        "train": {"preset": "best_bvv_ru", "steps": 20000, "train_chars": None, "seq_len": 1024, "batch_size": 64,
                  "lr": 0.0003, "corpus": "libreoffice-en-ru",
                  "extra": {"vocab": "bvv241-max", "grad_accum": 4, "warmup": 500, "min_lr": 0.00003,
                            "device": "cuda", "dtype": "auto", "compile": True, "eval_batches": 16,
                            "save_every": 1000, "keep_last": 3}},
        "evaluate": {"limit": None, "bpc_chars": 100_000, "runs": 10, "protocol_questions": 200, "suite": "offline"},
        "probe": {"limit": None, "folds": 5, "umap": True, "latent": True},
        "fusion": {"preset": "small", "steps": 3000, "train_chars": None, "seq_len": 256, "batch_size": 32,
                   "lr": 0.001, "eval_texts": 200, "val_chars": 200_000},
        "growth": {"preset": "small", "stages": "1,1,1,1,1,1", "steps_per_stage": 2000, "train_chars": 5_000_000,
                   "val_chars": 200_000, "seq_len": 256, "batch_size": 32, "lr": 0.001},
        "interfaces": {"preset": "small", "steps": 2000, "eval_every": 200, "train_chars": None, "val_chars": 200_000,
                       "seq_len": 256, "batch_size": 32, "lr": 0.001, "suite_limit": None},
        "generate": {"max_new_tokens": 128},
    },
}


def notebooks_dir() -> Path:
    """The checkout's notebooks/ (they are inputs, read only; outputs go to the run folder)."""
    return Path(__file__).resolve().parents[2] / "notebooks"


def notebook_parameters(path: Path) -> dict[str, Any]:
    """The names and defaults of a notebook's `parameters` cell (its top-level assignments).

    Parsed with `ast` rather than papermill's line parser, which misreads a comment holding `=`."""
    import ast

    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    cell = next((c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if cell is None:
        raise PipelineError(f"{path} has no cell tagged 'parameters'")
    params = {}
    for node in ast.parse("".join(cell["source"])).body:
        if isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    try:
                        params[t.id] = ast.literal_eval(node.value)
                    except ValueError:
                        params[t.id] = ast.unparse(node.value)
    return params


def parse_value(text: str) -> Any:
    """`--set` values: JSON literals (12, 0.5, true, null, "x", [..]), else the plain string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def plan(profile: str, overrides: dict[str, Any] | None = None, nb_dir: str | Path | None = None,
         only: list[str] | None = None, seeds: list[int] | None = None) -> list[Step]:
    """The steps of `profile` with `overrides` ({"group.param": value} or {"step.param": value})
    applied, the twins trained once per seed of `seeds`; unknown profiles, steps and parameters
    are refused with the valid names."""
    if profile not in PROFILES:
        raise PipelineError(f"unknown profile {profile!r}: choose one of {', '.join(PROFILES)}")
    check_seeds(seeds)
    nb_dir = Path(nb_dir) if nb_dir else notebooks_dir()
    steps = _steps(seeds)
    by_group = PROFILES[profile]
    for s in steps:
        s.params = {**copy.deepcopy(by_group.get(s.group, {})), **s.params}
    wiring = {s.name: set(s.params) for s in _steps(seeds)}  # paths, twin flags and seeds the pipeline sets
    targets = {s.name for s in steps} | {s.group for s in steps}
    for key, value in (overrides or {}).items():
        target, _, param = key.partition(".")
        if target not in targets or not param:
            raise PipelineError(f"--set {key}=...: name a step and a parameter as STEP.PARAM, with STEP one of "
                                f"{', '.join(sorted(targets))}")
        if value in ("True", "False", "None"):
            raise PipelineError(f"--set {key}={value}: values are JSON, write {value.lower() if value != 'None' else 'null'}")
        for s in steps:
            if target in (s.name, s.group):
                if param in wiring[s.name]:
                    raise PipelineError(f"--set {key}: the pipeline sets {param} of step {s.name} itself (its run "
                                        "folders, the twins' wiring and --seeds); choose another --out or "
                                        "--seeds instead")
                if param == "extra" and isinstance(value, dict):  # more TrainConfig keys on top of the profile's
                    value = {**(s.params.get("extra") or {}), **value}
                s.params[param] = value
    for s in steps:
        path = nb_dir / s.notebook
        if not path.exists():
            raise PipelineError(f"notebook {path} not found: run from a bvvlab checkout, or pass --notebooks DIR")
        known = notebook_parameters(path)
        unknown = sorted(set(s.params) - set(known))
        if unknown:
            raise PipelineError(f"step {s.name} ({s.notebook}) has no parameter {', '.join(unknown)}: "
                                f"its parameters are {', '.join(known)}")
        try:  # the notebook's own check of its parameters (bvvlab.app.params): the same line as there
            check_notebook_parameters(s.notebook, {**known, **s.params}, known)
        except ValueError as exc:
            raise PipelineError(f"step {s.name}: {exc}") from None
    if only is not None:
        check_only(only, steps)
        wanted = {s.name for s in steps if s.name in only or s.group in only}
        while True:  # a chosen step brings the steps it reads from
            more = {n for s in steps if s.name in wanted for n in s.needs} - wanted
            if not more:
                break
            wanted |= more
        steps = [s for s in steps if s.name in wanted]
    return steps


def step_key(step: Step, nb_dir: Path, keys: dict[str, str], gpus: int = 1) -> str:
    """Hash of what the step's result depends on: notebook bytes, parameters, upstream keys."""
    h = hashlib.sha256((nb_dir / step.notebook).read_bytes())
    h.update(json.dumps({"params": step.params, "needs": [keys.get(n) for n in step.needs],
                         "gpus": gpus if step.train_run else 1}, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# a training step's config and its torchrun line (the --dry-run plan is bvvlab.app.dryrun)


def train_config(step: Step, out: Path):
    """The TrainConfig a training step's notebook builds (what torchrun runs, and what --dry-run counts)."""
    from bvvlab.app.params import train_notebook_config

    p = step.params
    return train_notebook_config(out / step.train_run, preset=p.get("preset", "tiny"), frozen=p["frozen"],
                                 steps=p.get("steps", 30), corpus=p.get("corpus", "libreoffice-en-ru"),
                                 train_chars=p.get("train_chars", 100000), seq_len=p.get("seq_len", 64),
                                 batch_size=p.get("batch_size", 8), lr=p.get("lr", 0.002), seed=p.get("seed", 0),
                                 resume=p.get("resume", True), overwrite=p.get("overwrite", False),
                                 extra=p.get("extra") or {})


def torchrun_cmd(config: Path, gpus: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
            "-m", "bvvlab", "train", "--config", str(config)]


# ---------------------------------------------------------------------------------------------
# running


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def default_out(profile: str) -> Path:
    return Path("runs") / f"{profile}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _open_run(out: Path, profile: str) -> dict[str, Any]:
    """The run record in `out` (new, or the earlier run of the same profile); anything else is refused."""
    from bvvlab.core.atomic import output_error

    record = out / "pipeline.json"
    try:
        if out.exists() and not out.is_dir():
            raise PipelineError(f"--out {out} is a file: pass a folder (new, or an earlier run of this profile)")
        if record.exists():
            try:
                state = json.loads(record.read_text(encoding="utf-8"))
            except ValueError:
                state = None
            if not (isinstance(state, dict) and isinstance(state.get("steps"), dict)
                    and all(isinstance(v, dict) for v in state["steps"].values())):
                raise PipelineError(f"{record} is not a readable pipeline record: pass another --out (the folder is "
                                    "left as it is)")
            if state.get("profile") != profile:
                raise PipelineError(f"{out} holds a {state.get('profile')!r} pipeline run: pass another --out, or "
                                    f"--profile {state.get('profile')} to continue it")
            return state
        if out.exists() and any(out.iterdir()):
            raise PipelineError(f"{out} already holds something other than a pipeline run: pass another --out "
                                "(nothing there was touched)")
    except OSError as exc:
        raise output_error(exc, out) from None
    return {"profile": profile, "created": _now(), "steps": {}}


def _failed_cell(nb_path: Path) -> int | None:
    """The execution count (`In [N]`) of the cell that failed or was running in an executed notebook."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        cells = json.loads(nb_path.read_text(encoding="utf-8"))["cells"]
        for c in cells:
            if c.get("metadata", {}).get("papermill", {}).get("status") in ("failed", "running"):
                return c.get("execution_count")
    return None


def _supersede(out: Path, step: Step, executed: Path) -> None:
    """Move a step's earlier folder and executed notebook (other parameters, or an unfinished
    run that cannot resume) aside into `superseded/<step>-<time>/`: nothing is deleted."""
    folder = out / step.folder
    if not (folder.exists() or executed.exists()):
        return
    dest = ensure_dir(out / "superseded") / f"{step.name}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S-%f')}"
    if folder.exists():
        os.replace(folder, dest)
    if executed.exists():
        os.replace(executed, ensure_dir(dest) / executed.name)


RESUMABLE = ("train",)  # groups whose unfinished folder is continued (their notebooks resume), not moved aside


def _launch_torchrun(step: Step, out: Path, gpus: int) -> None:
    from bvvlab.core.atomic import to_jsonable

    cfg = train_config(step, Path())  # out= relative to the run folder, where torchrun runs
    cfg.validate(world_size=gpus)
    config = out / step.folder / "train_config.json"
    write_json_atomic(config, {k: v for k, v in to_jsonable(dataclasses.asdict(cfg)).items()})
    proc = subprocess.Popen(torchrun_cmd(config.relative_to(out), gpus), cwd=out)
    try:
        proc.wait()
    except KeyboardInterrupt as exc:  # let the ranks save their checkpoint before the pipeline stops
        proc.send_signal(getattr(exc, "signum", signal.SIGINT))
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=120)
        raise
    if proc.returncode:
        raise RuntimeError(f"torchrun exited with {proc.returncode} (its output is above)")


def _papermill(nb_in: Path, nb_out: Path, params: dict[str, Any], cwd: Path, kernel: str, progress: Any) -> None:
    """papermill.execute_notebook in a worker thread, with a kernel manager of our own.

    nbclient, run in the main thread, takes over SIGINT to shut its kernel down and then carries
    on as if nothing happened (a Ctrl-C could end in exit status 0). From a worker thread it
    leaves signals alone: Ctrl-C (or SIGTERM, see `_signals_stop`) stays a KeyboardInterrupt
    here, which passes the same signal to the kernel (the trainer saves a checkpoint and stops, as
    `bvvlab train` does), waits for the cell to end, and is re-raised. The wait is on an Event,
    not `Thread.join`: a join interrupted by a signal marks a live thread as finished (CPython
    3.11, `_wait_for_tstate_lock`), so the kernel was shut down before the trainer could save."""
    import threading

    import papermill as pm
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name=kernel)
    failure: list[BaseException] = []
    done = threading.Event()

    def work() -> None:
        try:
            pm.execute_notebook(str(nb_in), str(nb_out), parameters=params, cwd=str(cwd), kernel_name=kernel, km=km,
                                log_output=False, progress_bar=progress,
                                # the kernel's start-up chatter (ipykernel's TCP notice) is not the user's
                                extra_arguments=["--IPKernelApp.log_level=ERROR"])
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            failure.append(exc)
        finally:
            done.set()

    worker = threading.Thread(target=work, name=f"papermill {nb_in.name}", daemon=True)
    worker.start()
    try:
        while not done.wait(0.2):
            pass
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        with contextlib.suppress(Exception), _signals_ignored():  # a second signal here skipped the wait below
            if km.has_kernel:  # the running cell stops (the trainer saves first); SIGTERM as SIGTERM
                km.interrupt_kernel() if signum == signal.SIGINT else km.signal_kernel(signum)
        # until the cell has ended (at most 3 minutes), or the kernel is gone (SIGTERM ends a kernel that is
        # not training, and nbclient would wait on it). A second Ctrl-C does not cut the trainer's save
        # short, as in `bvvlab train` (SIGKILL does)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if done.wait(0.5) or not _kernel_alive(km):
                    break
            except KeyboardInterrupt:
                continue
        raise exc
    finally:
        with contextlib.suppress(Exception):
            if km.has_kernel:
                km.shutdown_kernel(now=True)
    if failure:
        raise failure[0]


def _kernel_alive(km: Any) -> bool:
    try:
        return bool(km.is_alive())
    except Exception:  # noqa: BLE001 - a manager that cannot tell: treat as gone
        return False


def _execute(s: Step, out: Path, nb_dir: Path, nb_out: Path, rec: dict[str, Any], gpus: int, progress: bool,
             kernel: str) -> None:
    """Run one step's notebook (after torchrun, for a training step on several GPUs) and record
    its outcome in `rec`; a Ctrl-C is recorded and re-raised."""
    import papermill as pm

    t0, started = time.perf_counter(), False
    try:
        if s.train_run and gpus > 1:
            _launch_torchrun(s, out, gpus)
        started = True
        _papermill(nb_dir / s.notebook, nb_out, s.params, out, kernel,
                   {"desc": f"  {s.notebook}", "leave": False, "position": 1} if progress else False)
        rec.update(status="done" if (out / s.metrics).exists() else "failed")
        if rec["status"] == "failed":
            rec["error"] = f"the notebook ran but wrote no {s.metrics}"
    except pm.PapermillExecutionError as exc:
        # the cell as the executed notebook shows it: In [exec_count]
        rec.update(status="failed", cell=exc.exec_count, error=f"{exc.ename}: {exc.evalue}".strip())
    except KeyboardInterrupt:
        rec.update(status="interrupted", cell=_failed_cell(nb_out) if started else None)
        raise
    except Exception as exc:  # noqa: BLE001 - the kernel died, torchrun failed...: reported per step
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        rec.update(status="failed", cell=_failed_cell(nb_out) if started else None, error=f"{type(exc).__name__}: {last}")
    finally:
        rec.update(seconds=round(time.perf_counter() - t0, 1), finished=_now())


@contextlib.contextmanager
def _handling(handler: Any, keep_ignored: bool = False):
    """SIGINT and SIGTERM go to `handler` inside the block (main thread only; the handlers in force
    before are put back after). `keep_ignored`: a signal this process was started to ignore (a
    job started with `nohup`) stays ignored."""
    import threading

    old = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            if not (keep_ignored and signal.getsignal(sig) is signal.SIG_IGN):
                old[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def _signals_ignored():
    """SIGINT and SIGTERM ignored while an interrupted pipeline stops its kernel and writes its
    record and report. An impatient second signal used to land inside `report.write` and escape
    as a bare KeyboardInterrupt: the CLI then said "nothing was saved" and exited 130 for a
    SIGTERM (seen under load in CI)."""
    return _handling(signal.SIG_IGN)


class _Stop(KeyboardInterrupt):
    """SIGINT or SIGTERM in the pipeline's main thread; `signum` says which."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _signals_stop():
    """SIGINT and SIGTERM raise `_Stop` in the main thread while the pipeline runs, so both stop it
    as Ctrl-C does (the step recorded "interrupted", the kernel's trainer saving first); SIGTERM's
    default would end the process at once, the status left "running" and the kernel orphaned.
    A signal this process was started to ignore (a job started with `nohup`) stays ignored."""

    def stop(signum: int, frame: Any) -> None:
        raise _Stop(signum)

    return _handling(stop, keep_ignored=True)


def _say(progress: bool, i: int, n: int, s: Step, what: str) -> None:
    """One line per step started and finished on stderr when there is no progress bar (a log, a
    pipe, `make demo > log`): a long run shows where it is."""
    if not progress:
        print(f"{time.strftime('%H:%M:%S')} pipeline {i}/{n} {s.name}: {what}", file=sys.stderr, flush=True)


def _outcome(rec: dict[str, Any]) -> str:
    where = f" (cell In [{rec['cell']}])" if rec.get("cell") is not None else ""
    err = f": {rec['error']}" if rec.get("error") else ""
    return f"{rec['status']} in {rec.get('seconds')} s{where}{err}"


def _render(nb_out: Path, out: Path, rec: dict[str, Any]) -> None:
    """The executed notebook as offline HTML beside it (also a failed one: it shows the cell); a
    rendering that fails leaves the .ipynb as the step's record and never fails the step."""
    from bvvlab.app.report import notebook_html

    rec.pop("html", None)
    if nb_out.exists():
        with contextlib.suppress(Exception):
            rec["html"] = str(notebook_html(nb_out).relative_to(out))


def _run_step(s: Step, i: int, n: int, state: dict[str, Any], keys: dict[str, str], out: Path, nb_dir: Path,
              gpus: int, progress: bool, kernel: str) -> None:
    """One step: skipped when unchanged and complete, not run when a step it reads from did not
    finish, else run (its earlier folder moved aside first when it cannot continue)."""
    keys[s.name] = key = step_key(s, nb_dir, keys, gpus)
    rec = state["steps"].get(s.name, {})
    nb_out = out / "notebooks" / f"{s.notebook[:3]}{s.name}.ipynb"
    blocked = [m for m in s.needs if state["steps"].get(m, {}).get("status") not in ("done", "cached")]
    if rec.get("key") == key and rec.get("status") in ("done", "cached") and (out / s.metrics).exists():
        state["steps"][s.name] = {**rec, "status": "cached"}
        _say(progress, i, n, s, "unchanged since the last run (cached)")
        return
    if blocked:
        state["steps"][s.name] = {"status": "not run", "key": key, "notebook": s.notebook, "params": s.params,
                                  "error": f"needs {', '.join(blocked)}, which did not finish"}
        _say(progress, i, n, s, f"not run: needs {', '.join(blocked)}, which did not finish")
        return
    if rec and (rec.get("key") != key or s.group not in RESUMABLE):
        _supersede(out, s, nb_out)
    state["steps"][s.name] = rec = {"status": "running", "key": key, "notebook": s.notebook,
                                    "executed": str(nb_out.relative_to(out)), "params": s.params, "started": _now()}
    write_json_atomic(out / "pipeline.json", state)
    ensure_dir(out / s.folder)
    _say(progress, i, n, s, f"started ({s.notebook})")
    try:
        _execute(s, out, nb_dir, nb_out, rec, gpus, progress, kernel)
    finally:
        write_json_atomic(out / "pipeline.json", state)  # the outcome first: a second Ctrl-C must not lose it
        if rec.get("status") != "interrupted":  # an interrupted run exits at once; its re-run renders
            _render(nb_out, out, rec)
            write_json_atomic(out / "pipeline.json", state)
        _say(progress, i, n, s, _outcome(rec))


def run(profile: str = "smoke", out: str | Path | None = None, overrides: dict[str, Any] | None = None,
        only: list[str] | None = None, gpus: int = 1, progress: bool | None = None,
        nb_dir: str | Path | None = None, kernel: str = "python3", seeds: list[int] | None = None) -> dict[str, Any]:
    """Run the pipeline; returns the run record (also in OUT/pipeline.json). Progress: a tqdm bar
    on a terminal, else one line per step on stderr. SIGINT and SIGTERM stop it as `bvvlab
    train` stops (the running training notebook saves a checkpoint): `Interrupted`, 130 / 143."""
    import logging

    from tqdm.auto import tqdm

    from bvvlab.app import report

    nb_dir = Path(nb_dir) if nb_dir else notebooks_dir()
    if gpus < 1:
        raise PipelineError(f"--gpus {gpus}: give 1 or more")
    every = plan(profile, overrides, nb_dir, seeds=seeds)  # the report lists every step, also those --only leaves out
    steps = plan(profile, overrides, nb_dir, only, seeds) if only is not None else every
    out = Path(out) if out is not None else default_out(profile)
    with folder_lock(out, "pipeline"), _signals_stop():  # one pipeline per run folder (bvvlab.core.locks)
        state = _open_run(out, profile)
        ensure_dir(out / "notebooks")
        state.update(profile=profile, overrides=overrides or {}, gpus=gpus, seeds=seeds, started=_now(), finished=None,
                     meta=run_meta(None, out=str(out)), order=[s.name for s in every])
        write_json_atomic(out / "pipeline.json", state)
        keys: dict[str, str] = {}
        # parameters are checked above (plan); papermill's own line parser would only warn falsely
        logging.getLogger("papermill").setLevel(logging.ERROR)
        progress = sys.stderr.isatty() if progress is None else progress
        bar = tqdm(total=len(steps), unit="step", disable=not progress, desc=profile)
        t_all = time.perf_counter()
        try:
            for i, s in enumerate(steps, 1):
                bar.set_description(f"{profile}: {s.name} ({s.notebook})")
                _run_step(s, i, len(steps), state, keys, out, nb_dir, gpus, progress, kernel)
                report.write(out, state, every)
                bar.update(1)
        except KeyboardInterrupt as exc:
            with _signals_ignored():  # a second Ctrl-C/SIGTERM must not cut the record or the report short
                state["interrupted"] = _now()
                write_json_atomic(out / "pipeline.json", state)
                with contextlib.suppress(Exception):
                    report.write(out, state, every)
            sigterm = getattr(exc, "signum", signal.SIGINT) == signal.SIGTERM
            raise Interrupted(f"pipeline interrupted ({'SIGTERM' if sigterm else 'SIGINT'})",
                              143 if sigterm else 130) from None
        finally:
            bar.close()
        state.update(finished=_now(), seconds=round(time.perf_counter() - t_all, 1))
        state.pop("interrupted", None)
        write_json_atomic(out / "pipeline.json", state)
        report.write(out, state, every)
    state["out"] = str(out)
    return state
