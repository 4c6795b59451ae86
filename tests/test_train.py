"""The training loop (issue 5): bits per character, the smoke run, config parsing, bad input,
the frozen-matrix guard, non-finite loss, frozen-vs-unfrozen twins."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bvvlab import cli
from bvvlab.cli.train import config_from_args
from bvvlab.app import compare as P
from bvvlab.core.runinfo import REPO_ROOT
from bvvlab.glyph import tokenizer as T
from bvvlab.models import checkpoints as C
from bvvlab.models.model import BVVForCausalLM, config_from_preset
from bvvlab.train import loop as TR
from bvvlab.train import shards as D

# a few seconds of training text: tiny model, short windows
FAST = dict(preset="tiny", train_chars=20_000, val_chars=4_000, seq_len=32, batch_size=4, log_every=1,
            eval_every=2, eval_batches=2, progress=False)


def _cfg(out: Path, **kw) -> TR.TrainConfig:
    return TR.make_config(**{**FAST, "out": str(out), **kw})


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _dir_digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): _sha(p) for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A finished 4-step run (save_every=2: two checkpoints)."""
    out = tmp_path_factory.mktemp("run") / "tiny"
    TR.train(_cfg(out, steps=4, save_every=2, tensorboard=True))
    return out


# ---------------------------------------------------------------------------------------------
# bits per character


def _byte_tokenizer():
    """ASCII + bytes only: every Cyrillic letter is two byte tokens covering one character."""
    vocab = ["<pad>", "<s>", "</s>", "<unk>"] + list(T.BYTE_TOKENS) + [chr(c) for c in range(128)]
    return T.hf_tokenizer(vocab, [])


def _memory_shard(tok, texts) -> D.TokenShard:
    ids, chars = [], []
    for i, c, _, _ in D.encode_texts(tok, texts):
        ids.append(i)
        chars.append(c)
    ids, chars = np.concatenate(ids), np.concatenate(chars)
    return D.TokenShard(None, ids.astype(np.uint16), chars.astype(np.uint16), {"n_chars": sum(map(len, texts))})


def _model(vocab_size: int) -> BVVForCausalLM:
    torch.manual_seed(0)
    config = config_from_preset("tiny", vocab_size=vocab_size)
    return BVVForCausalLM.from_glyphs(config, torch.nn.functional.normalize(torch.randn(vocab_size, 64), dim=1))


def test_bits_per_char_hand_computed():
    """A uniform model (zero head) pays log2(V) bits per target token. "hello" + EOS + "мир" +
    EOS is 13 tokens ("мир" is 6 byte tokens); 12 are targets and they cover 7 characters
    (all but the first "h"), so bits/char = 12 * log2(V) / 7."""
    tok = _byte_tokenizer()
    shard = _memory_shard(tok, ["hello", "мир"])
    assert len(shard) == 13
    model = _model(len(tok))
    with torch.no_grad():
        model.lm_head.weight.zero_()
    ev = TR.evaluate_bpc(model, shard, seq_len=32, n_windows=10, batch=4, device=torch.device("cpu"))
    V = len(tok)
    assert ev["val_tokens"] == 12 and ev["val_chars"] == 7
    assert ev["val_loss"] == pytest.approx(math.log(V), rel=1e-6)
    assert ev["val_bpc"] == pytest.approx(12 * math.log2(V) / 7, rel=1e-6)


def test_bits_per_char_matches_full_logits_reference():
    """Several short windows (sharing one token each) give the same NLL sum as one pass of the
    full sequence through plain softmax, divided by the characters after the first token."""
    tok = _byte_tokenizer()
    texts = ["hello world", "мир труд май", "zebra 42"]
    shard = _memory_shard(tok, texts)
    model = _model(len(tok)).eval()
    ids = torch.from_numpy(np.asarray(shard.tokens, dtype=np.int64))[None]
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits.double(), -1)[0, :-1]
        nll = -logp.gather(1, ids[0, 1:, None]).sum().item()
    chars = sum(map(len, texts)) - int(shard.chars[0])
    ev = TR.evaluate_bpc(model, shard, seq_len=len(shard), n_windows=1, batch=1, device=torch.device("cpu"))
    assert ev["val_bpc"] == pytest.approx(nll / math.log(2) / chars, rel=1e-5)
    # windows of 8 tokens see less context, so their NLL differs; but tokens and chars add up the same
    ev8 = TR.evaluate_bpc(model, shard, seq_len=8, n_windows=100, batch=3, device=torch.device("cpu"))
    assert ev8["val_tokens"] == len(shard) - 1 and ev8["val_chars"] == chars


def test_per_window_scores_add_up_to_the_batched_figure_and_bracket_it():
    """The final evaluation scores each window alone (issue 24: bits/char with an interval over
    windows): the windows' bits and characters sum to the batched figure, and the bootstrap
    interval holds it."""
    tok = _byte_tokenizer()
    shard = _memory_shard(tok, ["hello world", "мир труд май", "zebra 42", "the cat sat on the mat", "дом"])
    model = _model(len(tok)).eval()
    kw = dict(seq_len=8, n_windows=None, batch=3, device=torch.device("cpu"))
    ev = TR.evaluate_bpc(model, shard, **kw)
    pw = TR.evaluate_bpc(model, shard, per_window=True, **kw)
    assert "val_window_bits" not in ev and "val_bpc_low" not in ev
    assert pw["val_bpc"] == pytest.approx(ev["val_bpc"], rel=1e-6)  # float32 sums in another order
    assert pw["val_windows"] == len(pw["val_window_bits"]) == len(pw["val_window_chars"]) > 3
    assert sum(pw["val_window_chars"]) == ev["val_chars"]
    assert sum(pw["val_window_bits"]) / sum(pw["val_window_chars"]) == pytest.approx(ev["val_bpc"], rel=1e-6)
    assert pw["val_bpc_low"] < pw["val_bpc"] < pw["val_bpc_high"]


# ---------------------------------------------------------------------------------------------
# the smoke run and what a run directory holds


@pytest.mark.slow
def test_smoke_cli_run_loads_in_hugging_face(tmp_path):
    out = tmp_path / "smoke"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "bvvlab", "train", "--preset", "tiny", "--steps", "20", "--out",
                           str(out), "progress=false"], capture_output=True, text=True, env=env, cwd=REPO_ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ckpt = Path(proc.stdout.strip().splitlines()[-1])
    assert ckpt == out / "checkpoints" / "step_0000020"
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(ckpt, trust_remote_code=True)
    tok = AutoTokenizer.from_pretrained(ckpt)
    saved = load_file(ckpt / "model.safetensors")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    assert len(tok) == model.config.vocab_size
    meta = json.loads((out / "meta.json").read_text())
    assert meta["config"]["steps"] == 20 and meta["seed"] == 0 and "git_commit" in meta
    assert meta["data"]["train"]["n_tokens"] > 0 and meta["final"]["step"] == 20
    assert math.isfinite(meta["final"]["val_bpc"])
    records = TR.read_metrics(out)
    assert [r["step"] for r in records if r["kind"] == "train"] == [10, 20]
    assert [r["step"] for r in records if r["kind"] == "eval"] == [0, 20]


def test_run_dir_keeps_last_checkpoints_and_meta(tiny_run):
    ckpts = [p.name for p in C.list_checkpoints(tiny_run)]
    assert ckpts == ["step_0000002", "step_0000004"]
    state = C.read_trainer_state(tiny_run / "checkpoints" / "step_0000004")
    assert state["step"] == 4 and set(state["rng"]) >= {"python", "numpy", "torch"}
    assert "rng" in state["sampler"] and state["sampler"]["batches_drawn"] == 4
    meta = json.loads((tiny_run / "meta.json").read_text())
    # one name for the matrix's identity (issue 9): meta.json matrix_hash = config.json embedding_hash
    assert meta["matrix_hash"] == meta["model"]["config"]["embedding_hash"] and "frozen_hash" not in meta
    # periodic evals sample eval_batches x batch_size windows; the final one covers the whole
    # validation shard (every token after the first is a target) and says how many characters
    from bvvlab.core.runinfo import cache_dir

    val = D.open_shard(cache_dir() / "shards" / meta["data"]["validation"]["key"])
    whole = int(np.asarray(val.chars[1:], dtype=np.int64).sum())
    evals = [r for r in TR.read_metrics(tiny_run) if r["kind"] == "eval"]
    assert [(r["step"], r["val_full"]) for r in evals] == [(0, False), (2, False), (4, True)]
    assert evals[-1]["val_chars"] == meta["final"]["val_chars"] == whole
    assert evals[-1]["val_tokens"] == len(val) - 1
    assert 0 < evals[0]["val_chars"] == evals[1]["val_chars"] < whole
    # the embedding's provenance, in the run and in every checkpoint
    assert meta["embedding"]["matrix_hash"] == meta["matrix_hash"]
    assert {"font_sha256", "recipe", "dim", "glyph_text", "full_matrix_hash"} <= set(meta["embedding"])
    ckpt_meta = json.loads((tiny_run / "checkpoints" / "step_0000004" / "meta.json").read_text())
    assert ckpt_meta["embedding"] == meta["embedding"]
    # the recorded model config holds the token ids config.json holds
    saved = json.loads((tiny_run / "checkpoints" / "step_0000004" / "config.json").read_text())
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        assert meta["model"]["config"][name] == saved[name] is not None
    events = list((tiny_run / "tb").glob("events.out.tfevents.*"))
    assert events and b"val_bpc" in events[0].read_bytes()  # TensorBoard got the same scalars


# ---------------------------------------------------------------------------------------------
# config: file + key=value


def test_config_file_and_overrides(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('preset = "small"\nsteps = 7\n[model]\nnum_hidden_layers = 3\n[corpus]\n"libreoffice-en-ru" = 2.0\n')
    args = cli.build_parser().parse_args(["train", "--config", str(f), "--steps", "9", "lr=3e-4", "frozen=false",
                                          "corpus=a:0.25,b:0.75", "model.rope_theta=500000", "dim=none"])
    cfg = config_from_args(args)
    assert (cfg.preset, cfg.steps, cfg.lr, cfg.frozen, cfg.dim) == ("small", 9, 3e-4, False, None)
    assert cfg.corpus == {"a": 0.25, "b": 0.75}
    assert cfg.model == {"num_hidden_layers": 3, "rope_theta": 500000}


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO_ROOT / "configs").glob("*.json")))
def test_example_configs_are_valid(name):
    cfg = TR.make_config(TR.load_config_file(REPO_ROOT / "configs" / name))
    cfg.validate()
    from bvvlab.models.model import PRESETS

    assert cfg.preset in PRESETS


def test_mfu_only_for_known_gpus(monkeypatch):
    assert TR.peak_flops(torch.device("cpu")) is None
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda dev=None: "NVIDIA H200")
    assert TR.peak_flops(torch.device("cuda:0")) == 989e12
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda dev=None: "NVIDIA H100 80GB HBM3")
    assert TR.peak_flops(torch.device("cuda:0")) == 989e12
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda dev=None: "NVIDIA H100 PCIe")
    assert TR.peak_flops(torch.device("cuda:0")) == 756e12  # the longest matching name wins (not "H100")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda dev=None: "Some Future Accelerator")
    assert TR.peak_flops(torch.device("cuda:0")) is None


def test_flops_per_token_counts_matmul_parameters_and_attention():
    model = _model(300)  # frozen: the glyph matrix is a buffer, not a parameter
    n = sum(p.numel() for p in model.parameters())
    c = model.config
    assert TR.flops_per_token(model, 32) == 6 * n + 12 * c.num_hidden_layers * c.hidden_size * 32
    torch.manual_seed(0)
    unfrozen = BVVForCausalLM(config_from_preset("tiny", vocab_size=300, frozen_embedding=False))
    # a trainable embedding is a lookup, not a matmul: the same FLOPs
    assert TR.flops_per_token(unfrozen, 32) == TR.flops_per_token(model, 32)


def test_lr_schedule_warmup_then_cosine():
    cfg = TR.make_config(steps=100, warmup=10, lr=1.0, min_lr=0.1)
    assert TR.lr_at(0, cfg) == pytest.approx(0.1)
    assert TR.lr_at(9, cfg) == pytest.approx(1.0)
    assert TR.lr_at(55, cfg) == pytest.approx(0.55)  # cosine midpoint
    assert TR.lr_at(100, cfg) == pytest.approx(0.1)


# ---------------------------------------------------------------------------------------------
# bad input: one line, exit 2, nothing saved lost


def _cli_error(capsys, *argv) -> str:
    rc = cli.main(["train", *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_bad_steps_batch_and_keys(tmp_path, capsys):
    out = str(tmp_path / "x")
    assert "steps" in _cli_error(capsys, "--out", out, "steps=0")
    err = _cli_error(capsys, "--out", out, "batch_size=10", "grad_accum=3")
    assert "batch_size=10" in err and "grad_accum=3" in err
    err = _cli_error(capsys, "--out", out, "stepz=3")
    assert "stepz" in err and "valid keys" in err and "seq_len" in err
    assert "expected an integer" in _cli_error(capsys, "--out", out, "seq_len=long")
    assert not Path(out).exists()


def test_model_key_typo_and_width_conflicts(tmp_path, capsys):
    out = str(tmp_path / "x")
    err = _cli_error(capsys, "--out", out, "model.hiden_size=3")
    assert "model.hiden_size" in err and "did you mean model.hidden_size" in err
    err = _cli_error(capsys, "--out", out, "dim=64", "model.hidden_size=128")
    assert "dim=64" in err and "model.hidden_size=128" in err
    assert not Path(out).exists()


def test_width_other_than_a_saved_embedding_is_refused(tmp_path, monkeypatch):
    """With vocab=<embedding dir> the matrix decides the width: an explicit other dim or
    model.hidden_size is an error, not silently ignored."""
    from types import SimpleNamespace

    from bvvlab.glyph import embeddings as E

    saved = tmp_path / "emb"
    saved.mkdir()
    (saved / "glyph_matrix.safetensors").write_bytes(b"")  # what marks an embedding dir
    fake = SimpleNamespace(matrix=torch.zeros(10, 64), tokenizer=None)
    monkeypatch.setattr(E, "load_embedded", lambda p: fake)
    for kw in ({"dim": 128}, {"model": {"hidden_size": 32}}):
        with pytest.raises(ValueError, match="is 64 wide"):
            TR.prepare_embedded(TR.make_config(vocab=str(saved), **kw), None)
    assert TR.prepare_embedded(TR.make_config(vocab=str(saved), dim=64), None) is fake


def test_batch_not_divisible_by_world_size():
    with pytest.raises(ValueError, match="2 process"):
        TR.make_config(batch_size=6, grad_accum=2).validate(world_size=2)


def test_out_dir_with_another_run_is_refused(tiny_run, capsys):
    before = _dir_digest(tiny_run)
    err = _cli_error(capsys, "--out", str(tiny_run), "--steps", "4")
    assert "already holds a run" in err and "resume=true" in err and "overwrite=true" in err
    assert _dir_digest(tiny_run) == before


def test_resume_with_another_model_config_is_refused(tiny_run, capsys):
    before = _dir_digest(tiny_run)
    err = _cli_error(capsys, "--out", str(tiny_run), "--steps", "6", "--resume", "preset=tiny",
                     "model.num_hidden_layers=3", *[f"{k}={v}" for k, v in FAST.items() if k != "preset"])
    assert "different model config" in err and "num_hidden_layers" in err
    assert _dir_digest(tiny_run) == before


def test_resume_starts_from_the_saved_config(tiny_run, capsys):
    """`--resume steps=6` continues with the run's own settings (seq_len=32, not the default 128);
    changing data or schedule settings is refused, naming the keys; harmless keys may change."""
    def resumed(*argv):
        return TR.resume_config(config_from_args(cli.build_parser().parse_args(["train", *argv])))

    saved = TR.saved_config(tiny_run)
    cfg = resumed("--out", str(tiny_run), "--resume", "steps=6", "log_every=3", "progress=false")
    expected = {**saved, "steps": 6, "log_every": 3, "progress": False, "out": str(tiny_run), "resume": True}
    assert TR.dataclasses.asdict(cfg) == expected and cfg.seq_len == 32
    before = _dir_digest(tiny_run)
    err = _cli_error(capsys, "--out", str(tiny_run), "--resume", "steps=6", "lr=0.01", "seq_len=64")
    assert "different config" in err and "lr (saved 0.001)" in err and "seq_len (saved 32)" in err
    assert "steps=" not in err.split("differ")[0]  # steps may change: not named
    assert _dir_digest(tiny_run) == before


def test_resume_without_checkpoint_starts_fresh_and_says_so(tmp_path, capsys):
    out = tmp_path / "preempted"
    TR.train(_cfg(out, steps=1, eval_every=0, resume=True))
    said = capsys.readouterr()
    # information on stdout: a notebook draws stderr as a pink box (a successful run looked failed, issue 24)
    assert "no checkpoint" in said.out and "no checkpoint" not in said.err
    assert TR.last_checkpoint(out).name == "step_0000001"


def test_resume_cleans_what_a_killed_save_left(tmp_path):
    """A SIGKILL inside save_trainer_checkpoint leaves `.tmp-step_N-<pid>` (half written) or, between
    its two renames, `.old-step_N-<pid>` with no `step_N`: the next start removes the first and
    renames the second back (it is complete), then resumes from it."""
    out = tmp_path / "killed"
    TR.train(_cfg(out, steps=2, save_every=1, eval_every=0))
    root = out / "checkpoints"
    (root / ".tmp-step_0000003-4242").mkdir()
    (root / ".tmp-step_0000003-4242" / "model.safetensors").write_bytes(b"half")
    os.replace(root / "step_0000002", root / ".old-step_0000002-4242")
    (root / ".old-step_0000001-4242").mkdir()  # a stale old copy whose step still exists
    TR.train(_cfg(out, steps=3, save_every=1, eval_every=0, resume=True))
    assert sorted(p.name for p in root.iterdir()) == ["step_0000001", "step_0000002", "step_0000003"]
    assert [r["step"] for r in TR.read_metrics(out) if r["kind"] == "train"] == [1, 2, 3]  # resumed at step 2


def test_empty_corpus(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    err = _cli_error(capsys, "--out", str(tmp_path / "r"), f"corpus={empty}")
    assert "no text" in err and str(empty) in err


def test_non_utf8_file_names_file_and_offset(tmp_path, capsys):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("first line is fine\n".encode() + "caf\xe9\n".encode("latin-1"))
    err = _cli_error(capsys, "--out", str(tmp_path / "r"), f"corpus={bad}")
    assert str(bad) in err or bad.name in err
    assert "22" in err  # the byte offset of \xe9: 19 + 3
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------------------------
# guards


def test_frozen_matrix_changed_fails_loudly(tiny_run, tmp_path):
    from bvvlab.models.checkpoints import load_checkpoint

    model, tok = load_checkpoint(TR.last_checkpoint(tiny_run))
    expected = TR.embedding_hash(model)
    with torch.no_grad():
        model.get_input_embeddings().weight[0, 0] += 1.0
    with pytest.raises(RuntimeError, match="frozen glyph matrix changed at step 9"):
        TR.save_trainer_checkpoint(tmp_path, 9, model, tok, {}, {}, keep_last=2, expected_hash=expected)
    assert TR.last_checkpoint(tmp_path) is None


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path):
    out = tmp_path / "nan"
    cfg = _cfg(out, steps=30, lr=1e30, min_lr=1e30, warmup=0, grad_clip=0.0, save_every=1, eval_every=0)
    with pytest.raises(TR.NonFiniteLoss, match=r"at step \d+ \(lr 1e\+30\)") as info:
        TR.train(cfg)
    last = TR.last_checkpoint(out)
    assert last is not None and str(last) in str(info.value)
    state = C.read_trainer_state(last)
    bad_step = int(str(info.value).split("at step ")[1].split()[0])
    assert state["step"] == bad_step - 1  # the last good step is saved, the bad one is not


# ---------------------------------------------------------------------------------------------
# frozen vs unfrozen


def test_compare_twins_share_data_and_schedule(tmp_path):
    out = P.compare(_cfg(tmp_path / "cmp", steps=3, eval_every=3), figures=tmp_path / "figures")
    fig = tmp_path / "figures" / f"compare_{P.figure_slug(out)}.html"
    for html in (fig, out / "compare.html"):  # plotly.js beside the figure: it draws offline
        text = html.read_text()
        assert "val bits" in text and '<script charset="utf-8" src="plotly.min.js"></script>' in text
        assert "cdn.plot.ly" not in text and (html.parent / "plotly.min.js").stat().st_size > 1_000_000
    summary = json.loads((out / "compare.json").read_text())
    assert set(summary["runs"]) == {"frozen", "unfrozen"}
    metas = {k: json.loads((out / k / "meta.json").read_text()) for k in ("frozen", "unfrozen")}
    assert metas["frozen"]["data"] == metas["unfrozen"]["data"]  # same shards (content keys)
    runs = {k: TR.read_metrics(out / k) for k in ("frozen", "unfrozen")}
    sched = {k: [(r["step"], r["tokens"], r["lr"]) for r in v if r["kind"] == "train"] for k, v in runs.items()}
    assert sched["frozen"] == sched["unfrozen"]
    states = {k: C.read_trainer_state(TR.last_checkpoint(out / k)) for k in runs}
    assert states["frozen"]["sampler"] == states["unfrozen"]["sampler"]  # the same batches were drawn
    cfgs = {k: metas[k]["model"]["config"] for k in runs}
    assert cfgs["frozen"]["frozen_embedding"] and not cfgs["unfrozen"]["frozen_embedding"]
    V, d = cfgs["frozen"]["vocab_size"], cfgs["frozen"]["hidden_size"]
    assert metas["unfrozen"]["model"]["trainable_params"] - metas["frozen"]["model"]["trainable_params"] == V * d


def test_compare_figure_names_differ_for_same_basename(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert P.figure_slug("a/twins") == "a_twins" and P.figure_slug("b/twins") == "b_twins"
    assert P.figure_slug(tmp_path / "a" / "twins") == "a_twins"


@pytest.mark.slow
def test_compare_writes_only_under_out_unless_asked(tmp_path, monkeypatch):
    """Issue 10 item 11: `bvvlab compare` wrote figures/ and plotly.min.js into the repository
    whatever --out was; now everything stays under --out, and --figures DIR asks for a copy."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    before = {p for p in REPO_ROOT.joinpath("figures").glob("*")} if REPO_ROOT.joinpath("figures").exists() else set()
    rc = cli.main(["compare", "--out", str(tmp_path / "cmp"), "--steps", "2",
                   *[f"{k}={v}" for k, v in {**FAST, "eval_every": 2}.items()]])
    assert rc == 0
    after = {p for p in REPO_ROOT.joinpath("figures").glob("*")} if REPO_ROOT.joinpath("figures").exists() else set()
    assert after == before and list(work.iterdir()) == []
    assert (tmp_path / "cmp" / "compare.html").exists() and (tmp_path / "cmp" / "plotly.min.js").exists()
    summary = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert summary["figure"] == str(tmp_path / "cmp" / "compare.html")
    assert cli.main(["compare", "--out", str(tmp_path / "cmp2"), "--steps", "2", "--figures", str(tmp_path / "figs"),
                     *[f"{k}={v}" for k, v in FAST.items()]]) == 0
    assert [p.name for p in (tmp_path / "figs").glob("compare_*.html")] == [f"compare_{P.figure_slug(tmp_path / 'cmp2')}.html"]


def test_twins_start_from_the_same_transformer():
    """At step 0 the frozen and the unfrozen twin differ only in the embedding: blocks, norms and
    head come from the same seed (a trainable embedding must not shift the RNG for the rest)."""
    from types import SimpleNamespace

    tok = _byte_tokenizer()
    emb = SimpleNamespace(tokenizer=tok, matrix=torch.nn.functional.normalize(torch.randn(len(tok), 64), dim=1))
    models = {f: TR.build_model(TR.make_config(frozen=f, seed=3), emb).state_dict() for f in (True, False)}
    assert set(models[True]) == set(models[False])
    differ = [k for k in models[True] if not torch.equal(models[True][k], models[False][k])]
    assert differ == [TR.EMBED_KEY]
    again = TR.build_model(TR.make_config(frozen=False, seed=3), emb).state_dict()
    assert all(torch.equal(again[k], v) for k, v in models[False].items())  # the seed alone decides


def test_sigint_and_sigterm_are_caught_not_fatal():
    """Both signals only set the stop flag (the loop then saves and returns: the SIGTERM case runs
    end to end in test_resume.py); the previous handlers come back afterwards."""
    import signal

    before = signal.getsignal(signal.SIGINT)
    for sig in (signal.SIGINT, signal.SIGTERM):
        with TR._Signals() as s:
            os.kill(os.getpid(), sig)  # a KeyboardInterrupt here would fail the test
            assert s.received == sig.name
    assert signal.getsignal(signal.SIGINT) is before
