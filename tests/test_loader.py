"""The one loader (issue 22) and what it refuses (issue 26, items 1, 2, 9, 12, 22, 24): no code
from a checkpoint runs, whatever stdin answers; pickled weights are never opened; a config.json
of the wrong types, a garbage meta.json and a bad device are one line each; a foreign config over
bvvlab weights is described in words; one naming rule tells every row of a table apart."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bvvlab.cli import main as cli_main
from bvvlab.eval import runner
from bvvlab.glyph.tokenizer import (
    bvv241_vocab,
    compact_vocab,
    hf_tokenizer,
    load_tokenizer_dir,
)
from bvvlab.models import checkpoints as C
from bvvlab.models.loader import Loaded, labels, load, load_fused, load_many
from bvvlab.models.model import BVVForCausalLM, config_from_preset, to_llama

TEXTS = ["The cat sleeps.", "Кошка спит.", "Question: cat?\nAnswer: кошка дом"]


def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg and msg
    return msg


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A tiny bvvlab checkpoint (RMSNorm + SwiGLU, so it maps onto Llama), a deeper expert on the
    same matrix, both fused, the first one's Llama twin as a plain HF directory, and a task file."""
    from bvvlab.train.fusion import fuse

    tok = hf_tokenizer(compact_vocab(bvv241_vocab(65536, []), TEXTS)[0], [])
    glyphs = F.normalize(torch.randn(len(tok), 64, generator=torch.Generator().manual_seed(0)), dim=-1)
    root = tmp_path_factory.mktemp("loader")
    torch.manual_seed(0)
    model = BVVForCausalLM.from_glyphs(config_from_preset("tiny", vocab_size=len(tok), norm_type="rmsnorm",
                                                          mlp_type="swiglu"), glyphs).eval()
    C.save_checkpoint(model, tok, root / "bvv")
    torch.manual_seed(1)
    deep = BVVForCausalLM.from_glyphs(config_from_preset("tiny", vocab_size=len(tok), num_hidden_layers=3), glyphs)
    C.save_checkpoint(deep.eval(), tok, root / "deep")
    fuse([root / "bvv", root / "deep"], "bayes", root / "fused")
    to_llama(model).save_pretrained(root / "llama")
    tok.save_pretrained(root / "llama")
    rows = [{"question": "Cat?", "choices": ["кошка", "дом"], "answer": 0}] * 2
    (root / "task.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return root


def _copy(root, name, tmp_path, keep_meta: bool = False):
    d = tmp_path / name
    shutil.copytree(root / name, d)
    if not keep_meta:
        (d / "meta.json").unlink(missing_ok=True)  # no digests: the folder's own files decide
    return d


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _plant_tokenizer(d, marker):
    """issue 26's repro: tokenizer_config.json names a tokenizer class in a file of the folder."""
    _edit_json(d / "tokenizer_config.json", tokenizer_class="EvilTok", auto_map={"AutoTokenizer": [None, "evil_tok.EvilTok"]})
    (d / "evil_tok.py").write_text(f"from pathlib import Path\nfrom transformers import PreTrainedTokenizerFast\n"
                                   f"Path({str(marker)!r}).write_text('ran')\n"
                                   "class EvilTok(PreTrainedTokenizerFast):\n    pass\n")


def _plant_model(d, marker):
    """A foreign model whose config.json asks for its own classes (`auto_map`)."""
    _edit_json(d / "config.json", model_type="evil_llama",
               auto_map={"AutoConfig": "evil_model.EvilConfig", "AutoModelForCausalLM": "evil_model.EvilLM"})
    (d / "evil_model.py").write_text(f"from pathlib import Path\nfrom transformers import LlamaConfig, LlamaForCausalLM\n"
                                     f"Path({str(marker)!r}).write_text('ran')\n"
                                     "class EvilConfig(LlamaConfig):\n    model_type = 'evil_llama'\n"
                                     "class EvilLM(LlamaForCausalLM):\n    config_class = EvilConfig\n")


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


# ------------------------------------------------------------------------- code in a checkpoint (item 1)

def test_a_planted_tokenizer_class_never_runs_when_stdin_answers_yes(root, tmp_path, monkeypatch):
    """The repro of issue 26 item 1 (meta.json gone, so no digest sees the planted files): every
    loader reads the tokenizer of a bvvlab checkpoint from tokenizer.json, and transformers'
    "run the custom code? [y/N]" never reads the "y" waiting on stdin."""
    from bvvlab.analysis import activations

    marker = tmp_path / "MARKER"
    d = _copy(root, "bvv", tmp_path)
    _plant_tokenizer(d, marker)
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 20))
    lm = load(d)
    model, tok = C.load_checkpoint(d)
    probe_view = activations.load_model(d)
    with pytest.raises(ValueError, match="could not be loaded as a tokenizer"):
        load_tokenizer_dir(d)  # a vocabulary folder (bvvlab embed --vocab DIR): refused, never prompted
    assert not marker.exists()
    assert type(lm.tokenizer).__name__ == type(tok).__name__ == "TokenizersBackend" and lm.kind == "bvv"
    ref = load(root / "bvv").tokenizer
    assert lm.tokenizer(TEXTS[1])["input_ids"] == ref(TEXTS[1])["input_ids"] == probe_view.tokenizer(TEXTS[1])["input_ids"]
    assert lm.tokenizer.padding_side == "left" and lm.tokenizer.pad_token == "<pad>"
    lm.tokenizer.save_pretrained(tmp_path / "resaved")  # the planted reference is not carried on
    assert "auto_map" not in json.loads((tmp_path / "resaved" / "tokenizer_config.json").read_text())


def test_foreign_code_is_refused_in_one_line_unless_trusted(root, tmp_path, monkeypatch):
    marker = tmp_path / "MARKER"
    d = _copy(root, "llama", tmp_path)
    _plant_model(d, marker)
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 20))
    with pytest.raises(C.CheckpointError) as e:
        load(d)
    assert "evil_model.EvilLM" in _one_line(e) and "--trust-remote-code" in str(e.value)
    only_tok = _copy(root, "llama", tmp_path / "t")  # a native model, but a tokenizer that ships code
    _plant_tokenizer(only_tok, marker)
    with pytest.raises(C.CheckpointError, match=r"tokenizer_config.json \(auto_map: evil_tok.EvilTok\)"):
        load(only_tok)
    assert not marker.exists()
    trusted = load(d, trust_remote_code=True)  # the user read the code and said so
    assert marker.exists() and type(trusted.model).__name__ == "EvilLM"
    ids = torch.tensor([trusted.tokenizer(TEXTS[0])["input_ids"]])
    torch.testing.assert_close(_logits(trusted.model, ids), _logits(load(root / "llama").model, ids))


@pytest.mark.slow
def test_commands_on_a_terminal_answering_yes_run_no_planted_code(root, tmp_path):
    """`bvvlab eval` with stdin a terminal that answers "y" (the issue's repro) loads the planted
    step folder through bvvlab's classes; `bvvlab probe` of a foreign folder that ships code is one
    line, with stdin a pipe of "y"; neither runs the folder's code."""
    import pty

    marker = tmp_path / "MARKER"
    bvv, foreign = _copy(root, "bvv", tmp_path), _copy(root, "llama", tmp_path)
    _plant_tokenizer(bvv, marker)
    _plant_model(foreign, marker)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1])] + sys.path)}
    master, slave = pty.openpty()
    os.write(master, b"y\n" * 20)
    run = subprocess.run([sys.executable, "-m", "bvvlab", "eval", str(bvv), "--suite", str(root / "task.jsonl"),
                          "--out", str(tmp_path / "report")], stdin=slave, capture_output=True, text=True, env=env,
                         timeout=600)
    os.close(slave)
    os.close(master)
    assert run.returncode == 0 and not marker.exists(), run.stderr
    rows = json.loads((tmp_path / "report" / "results.json").read_text())["rows"]
    assert {r["model"] for r in rows} == {"bvv"}
    probe = subprocess.run([sys.executable, "-m", "bvvlab", "probe", str(foreign), "--out", str(tmp_path / "p"),
                            "--limit", "10", "--no-umap"], input="y\n" * 20, capture_output=True, text=True, env=env,
                           timeout=600)
    err = probe.stderr.strip()
    assert probe.returncode == 2 and len(err.splitlines()) == 1 and "--trust-remote-code" in err, err
    assert not marker.exists()


# ------------------------------------------------------------------------- pickled weights (item 2)

class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def test_pickled_weights_are_refused_before_anything_opens_them(root, tmp_path, capsys):
    marker = tmp_path / "MARKER"
    d = _copy(root, "bvv", tmp_path)
    (d / "model.safetensors").unlink()
    shard = "pytorch_model-00001-of-00001.bin"
    (d / shard).write_bytes(pickle.dumps({"model.ln_f.weight": _Payload(marker)}))
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": {"model.ln_f.weight": shard}}))
    for loader in (load, C.load_checkpoint):
        with pytest.raises(C.CheckpointError) as e:
            loader(d)
        assert shard in _one_line(e) and "not a .safetensors file" in str(e.value)
    assert cli_main(["eval", str(d), "--suite", str(root / "task.jsonl"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a .safetensors file" in err
    foreign = _copy(root, "llama", tmp_path)
    (foreign / "model.safetensors").unlink()
    (foreign / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(C.CheckpointError, match="holds its weights as pytorch_model.bin, not safetensors") as e:
        load(foreign)
    _one_line(e)
    assert not marker.exists()


# ------------------------------------------------------------------------- config.json (item 9)

@pytest.mark.parametrize("value", ["sixty-four", None, 0, -1, [64], 2.5, True])
def test_a_config_of_the_wrong_type_is_one_line_naming_the_field(root, tmp_path, value):
    d = _copy(root, "bvv", tmp_path)
    _edit_json(d / "config.json", num_attention_heads=value)
    for loader in (load, C.load_checkpoint):
        with pytest.raises(C.CheckpointError) as e:
            loader(d)
        assert "config.json: num_attention_heads is" in _one_line(e) and "positive whole number" in str(e.value)
    foreign = _copy(root, "llama", tmp_path)
    _edit_json(foreign / "config.json", num_attention_heads=value)
    with pytest.raises(C.CheckpointError, match="config.json: num_attention_heads is") as e:
        load(foreign)
    _one_line(e)


def test_a_truncated_or_odd_config_is_one_line_naming_the_file(root, tmp_path):
    d = _copy(root, "bvv", tmp_path)
    text = (d / "config.json").read_text()
    (d / "config.json").write_text(text[: len(text) // 2])
    for loader in (load, C.load_checkpoint):
        with pytest.raises(C.CheckpointError, match=r"config.json is damaged \(not JSON") as e:
            loader(d)
        _one_line(e)
    (d / "config.json").write_text("[64]")
    with pytest.raises(C.CheckpointError, match=r"config.json is damaged \(not a JSON object\)"):
        load(d)
    (d / "config.json").write_text(text.replace('"model_type": "bvv",', ""))  # then its auto_map would speak
    with pytest.raises(C.CheckpointError, match="config.json names no model_type"):
        load(d)
    fused = _copy(root, "fused", tmp_path)
    cfg = json.loads((fused / "config.json").read_text())
    cfg["expert_configs"][1]["num_hidden_layers"] = "three"
    (fused / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(C.CheckpointError, match=r"expert_configs\[1\]: num_hidden_layers is \"three\"") as e:
        load(fused)
    _one_line(e)


# ------------------------------------------------------------------------- devices (item 12)

@pytest.mark.parametrize("device,words", [("banana", "device='banana' is not a device: use auto, cpu, cuda"),
                                          ("cuda", "device=cuda but torch sees no CUDA device: use device=cpu"),
                                          ("cuda:7", "device=cuda:7 but torch sees no CUDA device")])
def test_eval_and_probe_check_the_device_as_train_does(root, tmp_path, capsys, monkeypatch, device, words):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for argv in (["eval", str(root / "bvv"), "--suite", str(root / "task.jsonl"), "--out", str(tmp_path / "e")],
                 ["probe", str(root / "bvv"), "--out", str(tmp_path / "p"), "--limit", "10", "--no-umap"]):
        assert cli_main([*argv, "--device", device]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
    with pytest.raises(ValueError, match=words):
        from bvvlab.train.loop import make_config, resolve_device

        resolve_device(make_config(device=device))


# ------------------------------------------------------------------------- damage in words (items 22, 24)

def test_a_garbage_meta_or_a_checkpoint_without_digests_is_not_a_digest_mismatch(root, tmp_path):
    d = _copy(root, "bvv", tmp_path, keep_meta=True)
    for garbage, words in (("{not json", "meta.json is damaged (not JSON)"), ("[1, 2]", "not a JSON object"),
                           ('{"files": "all of them"}', "its record of file digests is not a table")):
        (d / "meta.json").write_text(garbage)
        for loader in (load, C.load_checkpoint):
            with pytest.raises(C.CheckpointError) as e:
                loader(d)
            assert words in _one_line(e) and "differ from the digests" not in str(e.value)
    (d / "meta.json").unlink()  # written before digests existed: the safetensors size check speaks
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[:-64])
    with pytest.raises(C.CheckpointError) as e:
        load(d)
    assert "model.safetensors is incomplete" in _one_line(e) and "records no digests" in str(e.value)
    assert "differ from the digests" not in str(e.value)
    fused = _copy(root, "fused", tmp_path, keep_meta=True)
    (fused / "meta.json").write_text("[]")
    with pytest.raises(C.CheckpointError, match="meta.json is damaged") as e:
        load_fused(fused)
    assert "differ from the digests" not in _one_line(e)


def test_a_foreign_config_over_bvvlab_weights_is_described_in_words(root, tmp_path, capsys):
    """A Llama config.json dropped over a bvvlab checkpoint's weights: not "config.json says
    300x128" (a bvvlab shape read from a config that is not bvvlab's), and not a random model."""
    from transformers import LlamaConfig

    d = _copy(root, "bvv", tmp_path)
    (d / "config.json").write_text(LlamaConfig(vocab_size=300, hidden_size=128, num_hidden_layers=1,
                                               num_attention_heads=2, intermediate_size=64).to_json_string())
    assert cli_main(["eval", str(d), "--suite", str(root / "task.jsonl"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "config.json says" not in err
    assert "weights do not fit the 'llama' model its config.json describes" in err, err


# ------------------------------------------------------------------------- kinds and labels

def test_every_kind_of_spec_loads_through_one_function(root):
    run = load(root / "bvv")
    assert isinstance(run, Loaded) and (run.kind, run.label, run.expert) == ("bvv", "bvv", None)
    fused = load(root / "fused")
    assert fused.kind == "fused" and fused.experts == ["bvv", "deep"]  # expert names by the naming rule
    one = load(f"{root / 'fused'}{C.EXPERT_SEP}deep")
    assert (one.kind, one.label, one.expert, one.path) == ("fused", "fused/deep", "deep", root / "fused")
    hf = load(root / "llama")
    assert hf.kind == "hf" and type(hf.model).__name__ == "LlamaForCausalLM"
    ids = torch.tensor([run.tokenizer(TEXTS[1])["input_ids"]])
    torch.testing.assert_close(_logits(hf.model, ids), _logits(run.model, ids), atol=1e-5, rtol=1e-5)
    with pytest.raises(C.CheckpointError, match="has no expert 'zz'"):
        load(f"{root / 'fused'}{C.EXPERT_SEP}zz")


def test_one_expert_of_a_fused_checkpoint_scores_as_its_own_checkpoint(root):
    """eval of `FUSED::EXPERT`: the expert alone (`Loaded.causal_lm`), the same logits as the
    checkpoint it was fused from."""
    (name, model, tok), = runner.load_models([f"{root / 'fused'}{C.EXPERT_SEP}deep"])
    own = load(root / "deep").model
    ids = torch.tensor([tok(TEXTS[2])["input_ids"]])
    assert name == "fused/deep" and type(model).__name__ == "BVVForCausalLM" and model.config.num_hidden_layers == 3
    torch.testing.assert_close(_logits(model, ids), _logits(own, ids), atol=1e-6, rtol=1e-6)


def test_one_naming_rule_tells_every_row_apart(tmp_path):
    step = "r/checkpoints/step_0000002"
    cases = [(["x/a", "y/a"], ["x/a", "y/a"]), (["x/a", "x/a", "x/./a"], ["a", "a#2", "a#3"]),
             ([step, "r"], ["r/step_0000002", "r"]), (["f::e", "f"], ["f/e", "f"]),
             (["p/x/a", "q/x/a", "b"], ["p/x/a", "q/x/a", "b"])]
    for specs, want in cases:
        assert labels([str(tmp_path / s) if "::" not in s else f"{tmp_path / s.split('::')[0]}::{s.split('::')[1]}"
                       for s in specs]) == want, specs


def test_the_same_checkpoint_given_twice_to_eval_gets_two_rows(root, tmp_path, capsys):
    assert runner.model_names([str(root / "bvv"), str(root / "bvv")]) == ["bvv", "bvv#2"]
    assert [lm.label for lm in load_many([root / "bvv", root / "bvv"])] == ["bvv", "bvv#2"]
    out = tmp_path / "r"
    assert cli_main(["eval", str(root / "bvv"), str(root / "bvv"), "--suite", str(root / "task.jsonl"),
                     "--out", str(out)]) == 0, capsys.readouterr().err
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["model"] for r in rows if r["metric"] == "acc"] == ["bvv", "bvv#2"]
    assert "| bvv#2 |" in (out / "results.md").read_text()
