"""Notebook 02's parameters go through the trainer's typed config (a bad one is one line naming
it), and the notebook never deletes an existing run: it resumes it, or refuses, like the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from bvvlab.app.params import train_notebook_config
from bvvlab.core.runinfo import REPO_ROOT

NB02 = Path(__file__).resolve().parents[1] / "notebooks" / "02_train.ipynb"
PARAMS = dict(preset="tiny", frozen=True, steps=30, corpus="libreoffice-en-ru", train_chars=100000, seq_len=64,
              batch_size=8, lr=0.002, seed=0)


def test_defaults_resume_and_never_overwrite(tmp_path):
    cfg = train_notebook_config(tmp_path / "run", **PARAMS)
    assert cfg.resume is True and cfg.overwrite is False and cfg.out == str(tmp_path / "run")
    assert (cfg.log_every, cfg.eval_every, cfg.steps) == (1, 7, 30)
    cfg = train_notebook_config(tmp_path / "run", overwrite=True, **PARAMS)  # overwrite wins over resume
    assert cfg.resume is False and cfg.overwrite is True
    cfg = train_notebook_config(tmp_path / "run", resume=False, **PARAMS)
    assert cfg.resume is False and cfg.overwrite is False


@pytest.mark.parametrize("key, value, message", [
    ("steps", "abc", "steps='abc': expected an integer"),  # papermill -p steps abc
    ("steps", 1.5, "steps=1.5: expected an integer"),  # papermill -p steps 1.5 (a parsed float)
    ("steps", [3], r"steps=\[3\]: expected an integer"),
    ("steps", 0, "steps=0: steps must be > 0"),
    ("lr", "fast", "lr='fast': expected a number"),
    ("frozen", "maybe", "frozen='maybe': expected true or false"),
    ("resume", "yes please", "resume='yes please': expected true or false"),
    ("overwrite", 2, "overwrite=2: expected true or false"),
])
def test_a_bad_parameter_is_one_line_naming_it(tmp_path, key, value, message):
    kwargs = {**PARAMS, key: value} if key in PARAMS else {**PARAMS, key: value}
    with pytest.raises(ValueError, match=message) as exc:
        train_notebook_config(tmp_path / "run", **kwargs)
    assert "\n" not in str(exc.value)


def _papermill(tmp_path: Path, **params):
    import papermill

    out = tmp_path / "executed.ipynb"
    params = {"steps": 2, "train_chars": 20000, "run_dir": str(tmp_path / "run"), "out_dir": str(tmp_path / "fig"),
              **params}
    papermill.execute_notebook(str(NB02), str(out), parameters=params, kernel_name="python3", progress_bar=False,
                               cwd=str(tmp_path))
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("value, shown", [("abc", "steps='abc': expected an integer"),
                                          (1.5, "steps=1.5: expected an integer")])
def test_papermill_bad_steps_names_steps(tmp_path, value, shown):
    """`papermill -p steps abc` used to die in `steps // 20` with a TypeError that named nothing."""
    from papermill.exceptions import PapermillExecutionError

    with pytest.raises(PapermillExecutionError) as exc:
        _papermill(tmp_path, steps=value)
    assert exc.value.ename == "ValueError" and exc.value.evalue == shown
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_notebook_resumes_or_refuses_an_existing_run_and_never_deletes_it(tmp_path):
    """Run 02, then run it again (default resume=True: the finished run is kept, not retrained),
    then with resume=False (refused in one line): the first run's checkpoint survives both."""
    from papermill.exceptions import PapermillExecutionError

    _papermill(tmp_path)
    run = tmp_path / "run"
    ckpts = sorted(p for p in (run / "checkpoints").iterdir() if p.is_dir())
    assert ckpts
    weights = next(ckpts[-1].glob("*.safetensors"))
    stamp = (weights.stat().st_mtime_ns, weights.read_bytes())
    metrics = (run / "metrics.jsonl").read_text()

    executed = _papermill(tmp_path)  # resume=True: continues (here: already finished) the same run
    assert (weights.stat().st_mtime_ns, weights.read_bytes()) == stamp
    assert (run / "metrics.jsonl").read_text() == metrics
    printed = "".join("".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    assert "checkpoint:" in printed

    with pytest.raises(PapermillExecutionError) as exc:
        _papermill(tmp_path, resume=False)
    assert exc.value.ename == "FileExistsError" and "already holds a run" in exc.value.evalue
    assert "\n" not in exc.value.evalue
    assert (weights.stat().st_mtime_ns, weights.read_bytes()) == stamp


def test_notebook_outputs_go_under_the_checkouts_runs_whatever_the_kernels_folder(tmp_path):
    """JupyterLab starts the kernel in notebooks/: `runs/x` landed in notebooks/runs/x (issue 24).
    From the checkout's notebooks/ folder it goes to the checkout's runs/; elsewhere (papermill,
    the pipeline) relative to the working directory; an absolute path is kept."""
    from bvvlab.app.params import notebook_path
    from bvvlab.core.runinfo import REPO_ROOT

    assert notebook_path("runs/05_evaluate", cwd=REPO_ROOT / "notebooks") == REPO_ROOT.resolve() / "runs" / "05_evaluate"
    assert notebook_path("runs/05_evaluate", cwd=REPO_ROOT) == REPO_ROOT.resolve() / "runs" / "05_evaluate"
    assert notebook_path("steps/fusion", cwd=tmp_path) == tmp_path.resolve() / "steps" / "fusion"
    assert notebook_path(tmp_path / "a", cwd=REPO_ROOT / "notebooks") == tmp_path.resolve() / "a"


def test_notebooks_resolve_their_outputs_through_notebook_path():
    """Every notebook this issue touched resolves its output folders with `notebook_path` (not
    `Path(...).resolve()`, which followed the kernel's folder) and prints where they are."""
    for name in ("01_embeddings", "02_train", "04_generate", "05_evaluate", "06_fusion", "07_growth"):
        nb = nbformat.read(REPO_ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        assert "notebook_path(" in code and not re.search(r"Path\((run|out|runs)_dir\)\.resolve\(\)", code), name
