"""`bvvlab pipeline`: every notebook in order through papermill, a report, skips, failures, Ctrl-C."""

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_browser import browser  # noqa: F401  (the headless chromium fixture, with its skip rule)

from bvvlab.app import dryrun as DR
from bvvlab.app import pipeline as PL
from bvvlab.cli import main


def _one_line_error(capsys) -> str:
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert len(err) == 1, err
    return err[0]


# ---------------------------------------------------------------------------------------------
# the plan and bad input (no notebook runs)


def test_plan_wires_the_twins_into_the_later_steps():
    steps = {s.name: s for s in PL.plan("smoke")}
    assert list(steps) == ["embeddings", "train-frozen", "train-unfrozen", "evaluate", "probe", "fusion", "growth",
                           "interfaces", "generate"]
    assert steps["train-frozen"].params["frozen"] is True and steps["train-unfrozen"].params["frozen"] is False
    twins = ["steps/train-frozen/frozen", "steps/train-unfrozen/unfrozen"]
    assert steps["probe"].params["checkpoints"] == twins and steps["evaluate"].params["checkpoint"] == twins
    # every parameter a profile sets exists in its notebook (the plan refuses unknown ones)
    for profile in PL.PROFILES:
        for s in PL.plan(profile):
            assert set(s.params) <= set(PL.notebook_parameters(PL.notebooks_dir() / s.notebook)), (profile, s.name)


def test_every_profile_evaluates_suites_that_exist():
    from bvvlab.eval import runner as R

    for profile in PL.PROFILES:
        ev = {s.name: s for s in PL.plan(profile)}["evaluate"]
        suite = ev.params.get("suite") or PL.notebook_parameters(PL.notebooks_dir() / ev.notebook)["suite"]
        tasks, _ = R.resolve_suite(suite, limit=ev.params.get("limit"))
        assert any(t.kind == "mc" for t in tasks), profile  # notebook 05's protocol demo needs one


def test_set_reaches_a_group_and_only_brings_what_a_step_needs():
    steps = PL.plan("smoke", {"train.steps": 3, "probe.umap": True, "train.extra": {"grad_accum": 2}})
    # extra is merged over the profile's own TrainConfig keys
    assert steps[1].params["extra"] == {**PL.PROFILES["smoke"]["train"]["extra"], "grad_accum": 2}
    assert [s.params["steps"] for s in steps if s.group == "train"] == [3, 3]
    assert {s.name: s for s in steps}["probe"].params["umap"] is True
    assert [s.name for s in PL.plan("smoke", only=["probe"])] == ["train-frozen", "train-unfrozen", "probe"]
    assert [s.name for s in PL.plan("smoke", only=["generate"])] == ["train-frozen", "generate"]
    assert [s.name for s in PL.plan("smoke", only=["train"])] == ["train-frozen", "train-unfrozen"]


def test_seeds_train_the_twins_once_per_seed_and_only_the_first_pair_feeds_later_steps():
    """`--seeds 0,1,2` (issue 24): the frozen-vs-trainable gap gets an interval over seeds.
    Without it the plan is unchanged (no `seed` parameter: earlier runs' keys stay valid)."""
    steps = {s.name: s for s in PL.plan("smoke", seeds=[3, 1, 2])}
    assert [n for n in steps if n.startswith("train")] == [
        "train-frozen", "train-unfrozen", "train-frozen-seed1", "train-unfrozen-seed1", "train-frozen-seed2",
        "train-unfrozen-seed2"]
    assert [steps[n].params["seed"] for n in steps if n.startswith("train")] == [3, 3, 1, 1, 2, 2]
    assert steps["train-unfrozen-seed2"].params["run_dir"] == "steps/train-unfrozen-seed2/unfrozen"
    assert steps["train-unfrozen-seed2"].params["frozen"] is False and steps["train-unfrozen-seed2"].group == "train"
    assert steps["evaluate"].params["checkpoint"] == ["steps/train-frozen/frozen", "steps/train-unfrozen/unfrozen"]
    assert "seed" not in {s.name: s for s in PL.plan("smoke")}["train-frozen"].params
    assert len(PL.plan("smoke", only=["train"], seeds=[0, 1])) == 4
    keys_one = PL.step_key(PL.plan("smoke")[1], PL.notebooks_dir(), {})
    assert keys_one == PL.step_key(PL.plan("smoke")[1], PL.notebooks_dir(), {})


@pytest.mark.parametrize("argv, needle", [
    (["--seeds", "0,0"], "--seeds 0,0: give distinct seeds >= 0"),
    (["--seeds", "x"], "seeds='x'"),
    (["--seeds", "0,1", "--set", "train.seed=4"], "--set train.seed: the pipeline sets seed of step train-frozen"),
])
def test_bad_seeds_are_one_line(tmp_path, capsys, argv, needle):
    out = tmp_path / "run"
    assert main(["pipeline", "--out", str(out), *argv]) == 2
    line = _one_line_error(capsys)
    assert needle in line, line
    assert not out.exists()


def test_step_key_changes_with_parameters_and_upstream():
    nb = PL.notebooks_dir()
    a, b = PL.plan("smoke"), PL.plan("smoke", {"train.steps": 5})

    def keys(steps):
        k = {}
        for s in steps:
            k[s.name] = PL.step_key(s, nb, k)
        return k

    ka, kb = keys(a), keys(b)
    assert ka == keys(PL.plan("smoke"))  # deterministic
    assert ka["embeddings"] == kb["embeddings"] and ka["fusion"] == kb["fusion"]
    for name in ("train-frozen", "train-unfrozen", "evaluate", "probe", "generate"):  # downstream of train
        assert ka[name] != kb[name], name


@pytest.mark.parametrize("argv, needle", [
    (["--profile", "huge"], "unknown profile 'huge': choose one of smoke, demo, paper"),
    (["--set", "train.stepz=3"], "step train-frozen (02_train.ipynb) has no parameter stepz: its parameters are"),
    (["--set", "nosuch.steps=3"], "--set nosuch.steps=...: name a step and a parameter as STEP.PARAM"),
    (["--set", "train.steps"], "--set train.steps: write STEP.PARAM=VALUE"),
    (["--only", "probe,lunch"], "--only lunch: unknown step"),
    (["--gpus", "0"], "--gpus 0: give 1 or more"),
    (["--gpus", "0", "--dry-run"], "--gpus 0: give 1 or more"),
    (["--set", "train.steps=abc"], "step train-frozen: steps='abc': expected an integer"),
    (["--set", "probe.umap=False"], "--set probe.umap=False: values are JSON, write false"),
    # a value the notebook would refuse is refused before any step runs, in the notebook's words
    (["--set", "probe.pooling=middle"], "step probe: pooling='middle': use one of last, mean"),
    (["--set", "train.run_dir=elsewhere"], "--set train.run_dir: the pipeline sets run_dir of step train-frozen itself"),
    (["--set", "evaluate.checkpoint=x"], "--set evaluate.checkpoint: the pipeline sets checkpoint of step evaluate"),
    (["--profile", "paper", "--gpus", "3", "--dry-run"], "batch_size=64 is not divisible by grad_accum=4 x 3"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, argv, needle):
    out = tmp_path / "run"
    assert main(["pipeline", "--out", str(out), *argv]) == 2
    line = _one_line_error(capsys)
    assert needle in line, line
    assert not out.exists()


def test_a_folder_that_holds_something_else_is_refused_and_untouched(tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("keep me")
    assert main(["pipeline", "--out", str(tmp_path)]) == 2
    assert "already holds something other than a pipeline run" in _one_line_error(capsys)
    assert [p.name for p in tmp_path.iterdir()] == ["precious.txt"]
    # a pipeline run of another profile is not continued under this one either
    other = tmp_path / "other"
    other.mkdir()
    (other / "pipeline.json").write_text(json.dumps({"profile": "demo", "steps": {}}))
    assert main(["pipeline", "--profile", "smoke", "--out", str(other)]) == 2
    assert "holds a 'demo' pipeline run" in _one_line_error(capsys)
    for bad in ("{not json", "[]", '{"profile": "smoke"}', '{"profile": "smoke", "steps": {"probe": 3}}'):
        (other / "pipeline.json").write_text(bad)
        assert main(["pipeline", "--profile", "smoke", "--out", str(other)]) == 2
        assert "is not a readable pipeline record: pass another --out" in _one_line_error(capsys)
        assert (other / "pipeline.json").read_text() == bad
    # --out naming a file
    assert main(["pipeline", "--out", str(tmp_path / "precious.txt")]) == 2
    assert "is a file: pass a folder" in _one_line_error(capsys)
    # a pipeline already running in the folder: another process holds its lock (bvvlab.core.locks)
    (other / "pipeline.json").write_text(json.dumps({"profile": "smoke", "steps": {}}))
    hold = ("import sys, time\nfrom bvvlab.core.locks import folder_lock\nwith folder_lock(sys.argv[1], 'pipeline'):\n"
            "    print('held', flush=True)\n    time.sleep(600)\n")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(other)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(PL.notebooks_dir().parent)})
    try:
        assert holder.stdout.readline().strip() == "held"
        before = sorted(p.name for p in other.iterdir())
        assert main(["pipeline", "--profile", "smoke", "--out", str(other), "--only", "embeddings"]) == 2
        assert f"another bvvlab pipeline (pid {holder.pid}) is writing to {other}" in _one_line_error(capsys)
        assert sorted(p.name for p in other.iterdir()) == before
    finally:
        holder.kill()
        holder.wait()


def test_paper_dry_run_prints_the_plan_counts_and_the_torchrun_launch(tmp_path, capsys):
    out = tmp_path / "paper"
    assert main(["pipeline", "--profile", "paper", "--out", str(out), "--gpus", "8", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert not out.exists()
    # best_bvv_ru over the 131,072-token bvv241-max vocabulary: the recipe's 469,795,840 parameters, 134M frozen
    assert "469,795,840 parameters (335,578,112 trainable, 134,217,728 frozen)" in text
    # 20,000 steps x 1024 tokens x 64 windows (the batch counts every rank and accumulation step):
    # one micro-batch is 64 / (4 x 8) = 2 windows
    assert f"{20000 * 1024 * 64:,} training tokens (micro-batch 2)" in text
    assert "--nproc_per_node=8 -m bvvlab train --config steps/train-frozen/train_config.json" in text
    assert text.count("memory per GPU") == 8  # every step but the embedding
    for step in ("embeddings", "evaluate", "probe", "fusion", "growth", "interfaces", "generate"):
        assert step in text


def test_memory_estimate_follows_its_formula():
    e = DR.estimate("tiny", "compact", True, seq_len=32, batch_size=8, steps=10)
    c, m = e["parameters"], e["memory_per_gpu"]
    gib = 1024 ** 3
    assert m["weights_gb"] == round(4 * c["total"] / gib, 2)
    assert m["grads_and_adam_gb"] == round(12 * c["trainable"] / gib, 2)
    assert e["tokens"] == 10 * 32 * 8
    big = DR.estimate("best_bvv_ru", "bvv241-max", True, seq_len=1024, batch_size=64, grad_accum=4, gpus=2)
    # activations of one micro-batch (64 / (4 x 2) = 8 windows): s*b*h*34 per layer + the chunk of logits
    assert big["micro_batch"] == 8
    assert big["memory_per_gpu"]["activations_gb"] == round((1024 * 8 * 1024 * 34 * 16 + 256 * 131072 * 4) / gib, 2)


def test_notebook_extra_keys_reach_the_config_and_may_not_repeat_a_parameter(tmp_path):
    from bvvlab.app.params import train_notebook_config

    cfg = train_notebook_config(tmp_path / "r", preset="tiny", steps=8, extra={"grad_accum": 2, "val_chars": 999,
                                                                                "log_every": 3})
    assert (cfg.grad_accum, cfg.val_chars, cfg.log_every, cfg.eval_every) == (2, 999, 3, 2)
    with pytest.raises(ValueError, match="extra repeats steps: set it through the notebook's own parameter"):
        train_notebook_config(tmp_path / "r", preset="tiny", steps=8, extra={"steps": 9})
    with pytest.raises(ValueError, match="extra=.*give a dict"):
        train_notebook_config(tmp_path / "r", steps=8, extra=[1])
    with pytest.raises(ValueError, match="grad_accum"):
        train_notebook_config(tmp_path / "r", steps=8, extra={"grad_accum": "two"})


def test_without_a_terminal_each_step_says_when_it_starts_and_ends(tmp_path, capsys, monkeypatch):
    """`make demo > log` showed nothing for minutes: without a bar, one stderr line per step
    started and finished (the notebook itself is stubbed: this is about the lines)."""
    def fake(s, out, nb_dir, nb_out, rec, gpus, progress, kernel):
        (out / s.metrics).write_text("{}")
        rec.update(status="done", seconds=1.5)

    monkeypatch.setattr(PL, "_execute", fake)
    monkeypatch.setattr("bvvlab.app.report.write", lambda *a, **k: None)
    out = tmp_path / "run"
    PL.run("smoke", out, only=["embeddings"], progress=False)
    lines = [line.split(" ", 1)[1] for line in capsys.readouterr().err.splitlines() if " pipeline " in line]
    assert lines == ["pipeline 1/1 embeddings: started (01_embeddings.ipynb)", "pipeline 1/1 embeddings: done in 1.5 s"]
    PL.run("smoke", out, only=["embeddings"], progress=False)
    assert "pipeline 1/1 embeddings: unchanged since the last run (cached)" in capsys.readouterr().err
    PL.run("smoke", out, only=["embeddings"], progress=True)  # a bar instead of lines
    assert " pipeline 1/1" not in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# whole runs


FIGURES = ("training_curves", "evaluation", "evaluation_bpc", "probe_curves", "probe_layer_map", "fusion",
           "growth_curves", "growth_probe", "interfaces_gap")  # the smoke report's figures, in page order


def _status(out: Path) -> dict[str, str]:
    return {k: v["status"] for k, v in json.loads((out / "pipeline.json").read_text())["steps"].items()}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """The smoke profile, run once with the probe step made to fail (an items file that is not
    there: a valid parameter, so the failure comes from the running notebook), then again with
    the failure fixed: the second run must run the probe step alone."""
    out = tmp_path_factory.mktemp("pipe") / "smoke"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["pipeline", "--profile", "smoke", "--out", str(out), "--set", "probe.items=nosuch.jsonl"])
    first = json.loads((out / "pipeline.json").read_text())
    first["rc"], first["stderr"] = rc, err.getvalue()
    keys = {k: v["key"] for k, v in first["steps"].items()}
    executed = {n: (out / v["executed"]).stat().st_mtime_ns for n, v in first["steps"].items() if v.get("executed")}
    report_first = (out / "report.md").read_text()
    second = PL.run("smoke", out)
    return out, first, second, keys, executed, report_first


@pytest.mark.slow
def test_a_failed_step_names_its_cell_and_the_others_still_run(smoke_run):
    out, first, _, _, _, report_first = smoke_run
    st = {k: v["status"] for k, v in first["steps"].items()}
    assert st == {"embeddings": "done", "train-frozen": "done", "train-unfrozen": "done", "evaluate": "done",
                  "probe": "failed", "fusion": "done", "growth": "done", "interfaces": "done", "generate": "done"}
    probe = first["steps"]["probe"]
    assert probe["cell"] is not None and "nosuch.jsonl: no such file" in probe["error"]
    assert first["rc"] == 1
    lines = [l for l in first["stderr"].splitlines() if l.startswith("bvvlab")]
    assert lines == [f"bvvlab pipeline: error: step probe failed in 03_probe_layers.ipynb cell In [{probe['cell']}]: "
                     f"{probe['error']}; its notebook is {out / probe['executed']}; earlier steps are kept; fix it and "
                     f"run again: bvvlab pipeline --profile smoke --out {out} --set=probe.items=nosuch.jsonl"]
    # the failed run's notebook and folder were moved aside by the re-run (nothing is deleted)
    (moved,) = (out / "superseded").iterdir()
    cells = json.loads((moved / Path(probe["executed"]).name).read_text())["cells"]
    failing = [c for c in cells if c.get("execution_count") == probe["cell"]]  # In [N], as the notebook shows it
    assert len(failing) == 1 and any(o["output_type"] == "error" for o in failing[0]["outputs"])
    assert "| probe | 03_probe_layers.ipynb | failed |" in report_first and "_Not available: step probe (failed)._" in report_first


@pytest.mark.slow
def test_a_rerun_runs_only_what_changed_and_the_report_has_every_finding(smoke_run):
    out, first, second, keys, executed, _ = smoke_run
    st = {k: v["status"] for k, v in second["steps"].items()}
    assert st == {**{k: "cached" for k in st}, "probe": "done"}
    for name, mtime in executed.items():  # nothing but the probe notebook was executed again
        if name != "probe":
            assert (out / second["steps"][name]["executed"]).stat().st_mtime_ns == mtime, name
    assert second["steps"]["probe"]["key"] != keys["probe"]
    assert len(list((out / "superseded").iterdir())) == 1  # the failed probe folder, moved aside, not deleted
    md = (out / "report.md").read_text()
    for heading in ("## Steps", "## Frozen vs unfrozen embedding", "## Evaluation", "## Where meaning emerges",
                    "## Fusion of experts", "## Layer-wise growth", "## What the frozen vectors must contain",
                    "## Sample generation",
                    "## Configuration of every step"):
        assert heading in md, heading
    assert "Not available" not in md and "could not be built" not in md
    # findings first (issue 24): every step that ran is named, and each claim carries its interval
    assert md.index("## Findings") < md.index("## Steps")
    claims = {l.split("**")[1]: l for l in md[md.index("## Findings"):md.index("## Steps")].splitlines()
              if l.startswith("- **")}
    for name in st:
        assert f"{name} (" in claims["Steps."], name
    assert "not available" not in "".join(claims.values())
    assert re.search(r"95% interval \[[-+]\d+\.\d%, [-+]\d+\.\d%\] over \d+ validation windows",
                     claims["Frozen vs trainable embedding."])
    assert "at this budget (profile smoke: 12 steps of the tiny preset)" in claims["Frozen vs trainable embedding."]
    assert re.search(r"\[95% interval [-+]\d", claims["Fusion of two experts."])
    assert re.search(r"baseline: [-+]\d+\.\d% \[95% interval [-+]\d", claims["Layer-wise growth."])
    assert "family-wise" in claims["Cross-lingual alignment (probing)."]
    # the executed notebooks are linked as offline HTML pages, not as .ipynb (JSON in a browser)
    for name, rec in second["steps"].items():
        assert rec["html"].endswith(".html") and (out / rec["html"]).exists(), name
        assert f"]({rec['html']})" in md and f"]({rec['executed']})" not in md
    # the twins' numbers are the runs' own
    for name in ("train-frozen", "train-unfrozen"):
        final = json.loads((out / "steps" / name / name[6:] / "meta.json").read_text())["final"]
        assert f"{final['val_bpc']:.4f}" in md
    for fig in FIGURES:
        assert f"(figures/{fig}.html)" in md and (out / "figures" / f"{fig}.html").exists()
    page = (out / "report.html").read_text()
    assert not re.search(r"<script[^>]*\ssrc=|<link[^>]*\shref=", page)  # offline: plotly.js inline, nothing fetched
    assert page.count('class="figure"') == len(FIGURES)
    # models are labelled by their twin, in evaluation and probing alike
    assert "| frozen | concepts-category/trained | acc |" in md and re.search(r"^#### frozen$", md, re.M)
    gen = json.loads((out / "steps" / "generate" / "metrics.json").read_text())
    assert gen["sample"] and gen["sample"].strip().splitlines()[0][:20] in page


@pytest.mark.slow
@pytest.mark.browser
def test_the_report_draws_every_figure_in_chromium(smoke_run, browser, tmp_path):
    out = smoke_run[0]
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((out / "report.html").resolve().as_uri())
    page.wait_for_function("document.querySelectorAll('.figure .main-svg').length >= 8", timeout=60_000)
    drawn = page.evaluate("""() => [...document.querySelectorAll('.figure')].map(f => {
        const r = f.querySelector('.main-svg').getBoundingClientRect();
        return {id: f.id, w: r.width, h: r.height,
                marks: f.querySelectorAll('.scatterlayer .trace path, .barlayer .point path, .trace.bars path, .heatmaplayer image, .hm').length,
                slider: f.querySelectorAll('.slider-container').length};
    })""")
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert not errors, errors
    assert [d["id"] for d in drawn] == [f"fig-{f}" for f in FIGURES]
    for d in drawn:
        assert d["w"] > 200 and d["h"] > 200 and d["marks"] > 0, d  # drawn, not blank
    assert next(d for d in drawn if d["id"] == "fig-probe_layer_map")["slider"] == 1
    # the findings open the page and name every step that ran
    found = page.evaluate("""() => { const h = [...document.querySelectorAll('h2')];
        const f = h.find(e => e.textContent === 'Findings');
        let ul = f && f.nextElementSibling; while (ul && ul.tagName !== 'UL') ul = ul.nextElementSibling;
        return {first: h[0] && h[0].textContent, claims: ul ? [...ul.querySelectorAll('li')].map(l => l.innerText) : []}; }""")
    assert found["first"] == "Findings" and len(found["claims"]) == 6, found
    ran = json.loads((out / "pipeline.json").read_text())["steps"]
    for name in ran:
        assert f"{name} (" in found["claims"][0], name


@pytest.mark.slow
@pytest.mark.browser
def test_the_executed_notebooks_open_offline_as_html_with_their_figures(smoke_run, browser, tmp_path):
    """Issue 24: the report linked raw .ipynb over file:// (JSON in a browser). Each executed
    notebook is rendered to HTML; with every network request refused, its figures still draw."""
    out = smoke_run[0]
    page = browser.new_page()
    remote = []
    page.route(lambda url: not url.startswith("file:"), lambda route: (remote.append(route.request.url), route.abort()))
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    for name in ("05_evaluate", "06_fusion"):
        page.goto((out / "notebooks" / f"{name}.html").resolve().as_uri())
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 1", timeout=60_000)
        marks = page.evaluate("() => [...document.querySelectorAll('.js-plotly-plot')].map(gd => gd.querySelectorAll("
                              "'.barlayer .point path, .scatterlayer .point, .scatterlayer .js-line').length)")
        page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
        assert marks and all(m > 0 for m in marks), (name, marks)
    assert not remote and not errors, (remote, errors)


@pytest.mark.slow
def test_ctrl_c_stops_with_one_line_and_the_same_command_continues(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "bvvlab", "pipeline", "--profile", "smoke", "--out", str(out), "--only", "train-frozen",
           "--set", "train.steps=150", "--set", 'train.extra={"val_chars": 2000, "save_every": 5}']
    # Ctrl-C as in a terminal: SIGINT at its default (a test runner started in the background, as
    # CI may be, passes SIGINT on ignored, and an ignored SIGINT reaches no Python handler)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    ckpts = out / "steps" / "train-frozen" / "frozen" / "checkpoints"
    deadline = time.time() + 300
    while not (ckpts.is_dir() and any(p.name.startswith("step_") for p in ckpts.iterdir())):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 130
    lines = [l for l in err.splitlines() if l.startswith("bvvlab")]
    # the printed command is the one that was run (same --set and --only): it continues, never restarts
    assert lines == [f"bvvlab pipeline: interrupted; finished steps are kept in {out}; continue with: "
                     f"bvvlab pipeline --profile smoke --out {out} --set=train.steps=150 "
                     f"'--set=train.extra={{\"val_chars\": 2000, \"save_every\": 5}}' --only=train-frozen"]
    assert _status(out) == {"train-frozen": "interrupted"}
    saved = sorted(p.name for p in ckpts.iterdir() if p.name.startswith("step_"))
    assert saved
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _status(out) == {"train-frozen": "done"}
    meta = json.loads((out / "steps" / "train-frozen" / "frozen" / "meta.json").read_text())
    assert meta["final"]["step"] == 150
    # the same command continued from the newest checkpoint there was when it stopped (the
    # interrupted kernel's trainer saves one as it stops), not from scratch
    (resume,) = meta["resumes"]
    assert 0 < resume["at_step"] < 150 and f"step_{resume['at_step']:07d}" == saved[-1]


def test_a_second_signal_while_the_interrupted_pipeline_writes_its_report_is_ignored(tmp_path, monkeypatch):
    """Seen in CI under load: SIGTERM, then an impatient SIGINT that landed inside report.write;
    it escaped as a bare KeyboardInterrupt (the CLI said "nothing was saved", exit 130, not 143)."""
    from bvvlab.app import report
    from bvvlab.core.errors import Interrupted

    def first_signal(*a, **k):
        os.kill(os.getpid(), signal.SIGTERM)  # the pipeline's handler turns it into its stop
        time.sleep(1.0)

    def report_then_second_signal(*a, **k):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)  # delivered here, inside the report's writing

    monkeypatch.setattr(PL, "_run_step", first_signal)
    monkeypatch.setattr(report, "write", report_then_second_signal)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as info:
        PL.run("smoke", out=tmp_path / "run", only=["embeddings"], progress=False)
    assert info.value.exit_code == 143 and "SIGTERM" in str(info.value)
    assert json.loads((tmp_path / "run" / "pipeline.json").read_text())["interrupted"]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before  # handlers put back


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_sigint_and_sigterm_make_the_training_notebook_save_then_the_same_command_continues(tmp_path, sig):
    """As `bvvlab train` does: the running trainer saves a checkpoint as it stops (no periodic
    save could have: save_every is past the end), also when the signal comes twice, the step is
    recorded interrupted (SIGTERM left it "running"), exit 130/143 with the continue line; the
    same command resumes from that save."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "bvvlab", "pipeline", "--profile", "smoke", "--out", str(out), "--only", "train-frozen",
           "--set", "train.steps=400", "--set", 'train.extra={"val_chars": 2000, "save_every": 1000, "log_every": 1}']
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    run = out / "steps" / "train-frozen" / "frozen"
    deadline = time.time() + 600
    while not ((run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text().count('"train"') >= 3):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(getattr(signal, sig))
    time.sleep(0.5)
    proc.send_signal(getattr(signal, sig))  # an impatient second one does not cut the save short
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == {"SIGINT": 130, "SIGTERM": 143}[sig], err[-2000:]
    assert [l for l in err.splitlines() if l.startswith("bvvlab")] == [
        f"bvvlab pipeline: interrupted; finished steps are kept in {out}; continue with: bvvlab pipeline --profile smoke "
        f"--out {out} --set=train.steps=400 '--set=train.extra={{\"val_chars\": 2000, \"save_every\": 1000, "
        f"\"log_every\": 1}}' --only=train-frozen"]
    assert _status(out) == {"train-frozen": "interrupted"}
    meta = json.loads((run / "meta.json").read_text())
    (saved,) = [p for p in (run / "checkpoints").iterdir() if p.name.startswith("step_")]
    assert meta["interrupted"]["signal"] == sig and Path(meta["interrupted"]["checkpoint"]).name == saved.name
    at = meta["interrupted"]["step"]
    assert 0 < at < 400 and saved.name == f"step_{at:07d}"
    if sig == "SIGTERM":  # the same command continues from the checkpoint the signal made
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-2000:]
        meta = json.loads((run / "meta.json").read_text())
        assert meta["final"]["step"] == 400 and [r["at_step"] for r in meta["resumes"]] == [at]


@pytest.mark.slow
def test_sigterm_in_a_notebook_that_does_not_train_stops_at_once(tmp_path):
    """SIGTERM ends a kernel that has no handler for it; the pipeline used to wait 3 minutes on
    the dead kernel before it stopped."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "bvvlab", "pipeline", "--profile", "smoke", "--out", str(out),
                             "--only", "embeddings"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while not list((out / "notebooks").glob("*.ipynb")) if (out / "notebooks").is_dir() else True:
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.2)
    time.sleep(3)  # inside the notebook
    proc.send_signal(signal.SIGTERM)
    t0 = time.time()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143 and time.time() - t0 < 60, (time.time() - t0, err[-2000:])
    assert _status(out) == {"embeddings": "interrupted"}


@pytest.mark.slow
def test_gpus_above_one_launch_torchrun_then_the_notebook_reports_the_run(tmp_path):
    # CPU stand-in for a multi-GPU node: torchrun with 2 gloo ranks, then notebook 02 finds the finished run
    out = tmp_path / "ddp"
    assert main(["pipeline", "--profile", "smoke", "--out", str(out), "--only", "train-frozen", "--gpus", "2",
                 "--set", "train.steps=4"]) == 0
    meta = json.loads((out / "steps" / "train-frozen" / "frozen" / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["final"]["step"] == 4
    m = json.loads((out / "steps" / "train-frozen" / "metrics.json").read_text())
    assert m["val_bits_per_char"] == meta["final"]["val_bpc"]
    assert json.loads((out / "steps" / "train-frozen" / "train_config.json").read_text())["steps"] == 4


@pytest.mark.slow
def test_two_seeds_at_a_tiny_shape_give_the_twins_gap_an_interval_over_seeds(tmp_path):
    """`--seeds 0,1 --only train` at the smoke shape: four twin runs, each with its windows, and
    the findings' frozen-vs-trainable claim averaged over the two seeds with a t-interval."""
    out = tmp_path / "seeds"
    state = PL.run("smoke", out, only=["train"], seeds=[0, 1], progress=False)
    assert {k: v["status"] for k, v in state["steps"].items()} == {
        "train-frozen": "done", "train-unfrozen": "done", "train-frozen-seed1": "done", "train-unfrozen-seed1": "done"}
    m = {n: json.loads((out / "steps" / n / "metrics.json").read_text()) for n in state["steps"]}
    assert (m["train-frozen"]["seed"], m["train-frozen-seed1"]["seed"]) == (0, 1)
    assert m["train-frozen"]["val_bits_per_char"] != m["train-frozen-seed1"]["val_bits_per_char"]
    # within a seed the twins score the same validation windows (the seed also draws the split)
    assert m["train-frozen-seed1"]["val_window_chars"] == m["train-unfrozen-seed1"]["val_window_chars"]
    md = (out / "report.md").read_text()
    claim = next(l for l in md.splitlines() if l.startswith("- **Frozen vs trainable"))
    assert re.search(r"Over 2 seeds \(0, 1\): mean gap [-+]\d+\.\d%, 95% t-interval \[", claim), claim
    assert "| frozen seed1 | 1 | tiny |" in md
