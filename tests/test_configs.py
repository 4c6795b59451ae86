"""One typed config per command and one coercion path (issue 22): the same wrong value gives the
same one-line message from the command line, a notebook's parameters and the pipeline's `--set`;
and the validation gaps of issue 26 (items 15, 18-21, 27), each refused before anything runs."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from bvvlab import cli
from bvvlab.app import params as NP
from bvvlab.app import pipeline as PL
from bvvlab.core import config as K

FAST = ["preset=tiny", "train_chars=20000", "val_chars=4000", "seq_len=32", "batch_size=4", "progress=false"]


def _cli_line(capsys, argv: list[str]) -> str:
    """The message of a refused command: exit 2, one line, nothing but `bvvlab CMD: error: ` before it."""
    rc = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    prefix = f"bvvlab {argv[0]}: error: "
    assert err.startswith(prefix), err
    return err[len(prefix):]


def _notebook_line(notebook: str, **overrides) -> str:
    """The message of a notebook's own parameter check (its defaults, `overrides` over them)."""
    nb = PL.notebooks_dir() / notebook
    params = {**PL.notebook_parameters(nb), **overrides}
    with pytest.raises(ValueError) as exc:
        NP.check_notebook_parameters(notebook, params)
    assert "\n" not in str(exc.value)
    return str(exc.value)


def _set_line(capsys, tmp_path, step: str, sets: list[str]) -> str:
    """The message of `bvvlab pipeline --set ...`: nothing written, `step NAME: ` before it."""
    out = tmp_path / "pipe"
    line = _cli_line(capsys, ["pipeline", "--out", str(out), *[f"--set={s}" for s in sets]])
    assert not out.exists()
    assert line.startswith(f"step {step}: "), line
    return line[len(f"step {step}: "):]


# (CLI argv, notebook and its overrides, pipeline step and --set, the one message)
SURFACES = {
    "probe folds": (["probe", "ckpt", "--out", "{out}", "--folds", "1"], ("03_probe_layers.ipynb", {"folds": 1}),
                    ("probe", ["probe.folds=1"]), "folds=1: must be >= 2 (cross-validation folds of the probes)"),
    "probe folds type": (["probe", "ckpt", "--out", "{out}", "--folds", "five"],
                         ("03_probe_layers.ipynb", {"folds": "five"}), ("probe", ["probe.folds=five"]),
                         "folds='five': expected an integer"),
    "probe limit": (["probe", "ckpt", "--out", "{out}", "--limit", "0"], ("03_probe_layers.ipynb", {"limit": 0}),
                    ("probe", ["probe.limit=0"]), "limit=0: must be >= 1 (pairs to probe; none: all)"),
    "eval limit": (["eval", "ckpt", "--out", "{out}", "--limit", "-1"], ("05_evaluate.ipynb", {"limit": -1}),
                   ("evaluate", ["evaluate.limit=-1"]), "limit=-1: must be >= 1 (questions per task; none: all)"),
    "eval runs": (["eval", "ckpt", "--out", "{out}", "--runs", "0"], ("05_evaluate.ipynb", {"runs": 0}),
                  ("evaluate", ["evaluate.runs=0"]), "runs=0: must be >= 1 (protocol runs of every question)"),
    "eval bpc type": (["eval", "ckpt", "--out", "{out}", "--bpc-chars", "lots"],
                      ("05_evaluate.ipynb", {"bpc_chars": "lots"}), ("evaluate", ["evaluate.bpc_chars=lots"]),
                      "bpc_chars='lots': expected an integer"),
    "grow steps per stage": (["grow", "--stages", "1", "--out", "{out}", "--steps-per-stage", "0", *FAST],
                             ("07_growth.ipynb", {"steps_per_stage": 0}), ("growth", ["growth.steps_per_stage=0"]),
                             "steps_per_stage=0: must be >= 1 (optimizer steps per stage)"),
    "grow stages": (["grow", "--stages", "1,x", "--out", "{out}", *FAST], ("07_growth.ipynb", {"stages": "1,x"}),
                    ("growth", ["growth.stages=\"1,x\""]),
                    "stages='1,x': give blocks per stage as integers, e.g. --stages 1,1,1"),
    "train negative": (["train", "--out", "{out}", *FAST, "steps=-1"], ("02_train.ipynb", {"steps": -1}),
                       ("train-frozen", ["train.steps=-1"]), "steps=-1: steps must be > 0"),
    "train type": (["train", "--out", "{out}", *FAST, "steps=abc"], ("02_train.ipynb", {"steps": "abc"}),
                   ("train-frozen", ["train.steps=abc"]), "steps='abc': expected an integer"),
    "train unknown key": (["train", "--out", "{out}", *FAST, "stepz=3"], ("02_train.ipynb", {"extra": {"stepz": 3}}),
                          ("train-frozen", ['train.extra={"stepz": 3}']), "unknown config key 'stepz'; valid keys: "),
}


@pytest.mark.parametrize("case", SURFACES, ids=list(SURFACES))
def test_the_same_wrong_value_gives_the_same_line_on_every_surface(case, tmp_path, capsys):
    argv, (notebook, overrides), (step, sets), message = SURFACES[case]
    out = tmp_path / "out"
    on_cli = _cli_line(capsys, [a.replace("{out}", str(out)) for a in argv])
    in_notebook = _notebook_line(notebook, **overrides)
    by_set = _set_line(capsys, tmp_path, step, sets)
    assert on_cli == in_notebook == by_set, (on_cli, in_notebook, by_set)
    assert on_cli.startswith(message), on_cli
    assert not out.exists()  # refused before anything was written


@pytest.mark.parametrize("argv, message", [
    (["eval", "ckpt", "--batch", "0"], "batch=0: must be >= 1 (questions per forward pass)"),  # issue 26, item 15
    (["probe", "ckpt", "--batch-size", "0"], "batch_size=0: must be >= 1 (items per forward pass)"),  # item 15
    (["probe", "ckpt", "--folds", "0"], "folds=0: must be >= 2 (cross-validation folds of the probes)"),  # item 18
    (["eval", "ckpt", "--runs", "0"], "runs=0: must be >= 1"),  # item 19: names runs
    (["eval", "ckpt", "--limit", "-1"], "limit=-1: must be >= 1"),  # item 20: no silently dropped question
])
def test_counts_below_their_range_are_refused_in_one_line(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert _cli_line(capsys, [*argv, "--out", str(out)]).startswith(message)
    assert not out.exists()


def test_grow_refuses_zero_steps_per_stage_instead_of_training_the_default(tmp_path, capsys):
    """Issue 26, item 20: `--steps-per-stage 0` fell back to steps= (`0 or cfg.steps`) and trained."""
    out = tmp_path / "g"
    line = _cli_line(capsys, ["grow", "--stages", "1", "--steps-per-stage", "0", "--out", str(out), *FAST, "steps=1"])
    assert line == "steps_per_stage=0: must be >= 1 (optimizer steps per stage)"
    assert not out.exists()


def test_one_concept_or_too_few_for_the_folds_gets_a_fix_that_differs_from_what_was_given():
    """Issue 26, item 18: with one concept the line suggested "(--folds 2)" although 2 was given."""
    from bvvlab.analysis import items as I
    from bvvlab.analysis import probe

    one = [I.Item("cat", "en", "cat", "animals"), I.Item("кошка", "ru", "cat", "animals")]
    with pytest.raises(ValueError) as exc:
        probe.probe_models(["not-loaded"], one, folds=2)
    assert str(exc.value) == ("1 group (concepts): the probes' cross-validation needs at least 2 concepts; give more "
                              "items (a larger limit, or none for all)")
    three = I.concept_items()[:6]
    with pytest.raises(ValueError, match=r"3 groups \(concepts\) but 5 cross-validation folds: .* \(--folds 3\)"):
        probe.probe_models(["not-loaded"], three, folds=5)
    with pytest.raises(ValueError, match=r"^folds=1: must be >= 2"):
        probe.probe_models(["not-loaded"], three, folds=1)  # not sklearn's words, nor a singular matrix


def test_pipeline_only_comma_names_no_step_and_runs_nothing(tmp_path, capsys):
    """Issue 26, item 27: `--only ,` split into nothing, which meant every step."""
    out = tmp_path / "run"
    line = _cli_line(capsys, ["pipeline", "--out", str(out), "--only", ","])
    assert line.startswith("--only names no step: give comma-separated steps, e.g. --only probe; steps are embeddings")
    assert not out.exists()
    with pytest.raises(PL.PipelineError, match="--only names no step"):
        PL.plan("smoke", only=[])


# ---------------------------------------------------------------------------------------------
# key=value anywhere (issue 26, item 21)


def test_key_value_after_an_option_is_an_override_of_train_and_grow():
    args = cli.parse(["train", "steps=3", "--out", "x", "lr=0.01", "--resume", "seed=2"])
    assert args.overrides == ["steps=3", "lr=0.01", "seed=2"] and args.out == "x" and args.resume
    args = cli.parse(["grow", "--stages", "1", "seed=1", "--out", "y", "vocab=compact", "--steps-per-stage", "2"])
    assert args.overrides == ["seed=1", "vocab=compact"] and args.steps_per_stage == "2"
    from bvvlab.cli.train import config_from_args

    cfg = config_from_args(args)
    assert (cfg.seed, cfg.vocab, cfg.out) == (1, "compact", "y")


def test_a_late_key_value_reaches_the_config_and_other_strays_stay_refused(tmp_path, capsys):
    out = tmp_path / "r"
    line = _cli_line(capsys, ["train", "--out", str(out), *FAST, "--steps", "1", "grad_clip=-1"])
    assert line.startswith("grad_clip=-1.0: must be >= 0")  # not "unrecognized arguments: grad_clip=-1"
    assert not out.exists()
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--out", str(out), "steps=1", "--resume", "--no-such-flag"])
    assert exc.value.code == 2 and "unrecognized arguments: --no-such-flag" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["probe", "ckpt", "--out", str(out), "folds=3"])  # probe takes no key=value
    assert "unrecognized arguments: folds=3" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# the coercion path itself


def test_coerce_takes_each_surface_s_spelling_of_a_value():
    assert K.coerce("n", "12", int) == K.coerce("n", 12, int) == K.coerce("n", 12.0, int) == K.coerce("n", "1.2e1", int)
    assert K.coerce("f", "false", bool) is False and K.coerce("f", True, bool) is True
    assert K.coerce("x", "none", int | None) is None and K.coerce("x", None, int | None) is None
    assert K.coerce("l", "0,2, 4", list[int]) == K.coerce("l", [0, 2, 4], list[int]) == K.coerce("l", "[0,2,4]", list[int]) \
        == [0, 2, 4]
    assert K.coerce("u", "false", bool | str) is False and K.coerce("u", "aligned-umap", bool | str) == "aligned-umap"
    assert K.coerce("p", Path("a/b"), str) == "a/b"
    for value, hint, line in ((True, int, "n=True: expected an integer"), (1.5, int, "n=1.5: expected an integer"),
                              ("maybe", bool, "n='maybe': expected true or false"), (3, str, "n=3: expected a string"),
                              ("0,x", list[int], "n='0,x': expected a comma-separated list of integers"),
                              (None, int, "n=None: n needs a value")):
        with pytest.raises(ValueError) as exc:
            K.coerce("n", value, hint)
        assert str(exc.value) == line


def test_build_refuses_an_unknown_key_and_validates():
    from bvvlab.eval.runner import EvalConfig

    cfg = K.build(EvalConfig, limit="5", sample="true", checkpoints="a,b")
    assert (cfg.limit, cfg.sample, cfg.checkpoints, cfg.batch) == (5, True, ["a", "b"], 32)
    with pytest.raises(ValueError, match="^unknown config key 'limt'; valid keys: checkpoints, suite, out, limit"):
        K.build(EvalConfig, limt=5)
    with pytest.raises(ValueError, match="^batch=0: must be >= 1"):
        K.build(EvalConfig, cfg, batch=0)  # over a config as base too


def test_every_command_config_has_a_default_and_a_comment_per_field():
    import inspect

    from bvvlab.analysis.probe import ProbeConfig
    from bvvlab.eval.runner import EvalConfig
    from bvvlab.train.config import TrainConfig
    from bvvlab.train.fusion import FuseConfig
    from bvvlab.train.growth import GrowConfig

    for cls in (TrainConfig, ProbeConfig, EvalConfig, FuseConfig, GrowConfig, PL.PipelineConfig):
        if cls is TrainConfig:  # the defaults are valid
            cls().validate()
        else:
            K.build(cls)
        source = inspect.getsource(cls)
        for f in dataclasses.fields(cls):
            assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING, (cls, f.name)
            line = next(ln for ln in source.splitlines() if ln.strip().startswith(f"{f.name}:"))
            assert "  # " in line, (cls.__name__, f.name)


def test_replace_keeps_the_explicit_keys_that_dataclasses_replace_drops():
    """A resume applies only the keys given explicitly: `compare` and `grow` derive configs with
    replace and once had to put `_explicit` back by hand."""
    from bvvlab.train.config import make_config

    cfg = make_config(steps=5, lr=0.01)
    assert cfg._explicit == {"steps", "lr"}
    assert dataclasses.replace(cfg, frozen=False)._explicit is None  # why the helper exists
    twin = K.replace(cfg, frozen=False, out="x")
    assert twin._explicit == {"steps", "lr", "frozen", "out"} and (twin.frozen, twin.out, twin.steps) == (False, "x", 5)
    assert K.replace(dataclasses.replace(cfg), seed=1)._explicit is None  # unknown stays unknown (= every key)


# ---------------------------------------------------------------------------------------------
# the command line apart from the library


def test_help_imports_no_command_module_and_no_torch():
    """`bvvlab --help` lists the commands from bvvlab.cli's table: nothing else is imported."""
    code = ("import contextlib, io, sys\n"
            "from bvvlab import cli\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
            "    cli.main(['--help'])\n"
            "assert 'grow' in out.getvalue() and 'model-params' in out.getvalue()\n"
            "print(sorted(m for m in sys.modules if m.startswith('bvvlab') or m in ('torch', 'transformers')))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['bvvlab', 'bvvlab.cli', 'bvvlab.core', 'bvvlab.core.errors']"
