"""Fusion of experts that share the frozen matrix (issue 13): identity on copies, proper weights,
a checkpoint that loads without bvvlab, cached == uncached generation, one-line refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from bvvlab.cli import main
from bvvlab.glyph.tokenizer import bvv241_vocab, compact_vocab, hf_tokenizer
from bvvlab.models.checkpoints import save_checkpoint
from bvvlab.models.fused_model import METHODS, FusedForCausalLM
from bvvlab.models.model import BVVForCausalLM, config_from_preset
from bvvlab.models.loader import load, load_fused
from bvvlab.train.fusion import (
    FusionError,
    bpc_by_text,
    fuse,
    mixed_texts,
)

TEXTS = ["Hello world, open the menu.", "Привет, мир! Откройте меню.", "你好世界，打开菜单。"]


def _glyphs(V, d=64, seed=0):
    return F.normalize(torch.randn(V, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.fixture(scope="module")
def experts(tmp_path_factory):
    """Two tiny experts of different depth and head count on one tokenizer and one matrix."""
    tokens, _ = compact_vocab(bvv241_vocab(65536, []), TEXTS)
    tok = hf_tokenizer(tokens, [])
    V = len(tok)
    g = _glyphs(V)
    torch.manual_seed(0)
    a = BVVForCausalLM.from_glyphs(config_from_preset("tiny", vocab_size=V), g).eval()
    torch.manual_seed(1)
    b = BVVForCausalLM.from_glyphs(config_from_preset("tiny", vocab_size=V, num_hidden_layers=3,
                                                      num_attention_heads=8), g).eval()
    root = tmp_path_factory.mktemp("experts")
    pa = save_checkpoint(a, tok, root / "en-ru")
    pb = save_checkpoint(b, tok, root / "en-zh")
    return a, b, tok, pa, pb, root


def _ids(tok):
    return tok(TEXTS[1] + TEXTS[2], return_tensors="pt")["input_ids"]


@pytest.mark.parametrize("method", METHODS)
def test_copies_of_one_model_give_its_distribution(experts, method):
    a, _, tok, *_ = experts
    ids = _ids(tok)
    fused = FusedForCausalLM.from_experts([a, a, a], method=method)
    with torch.no_grad():
        got = torch.log_softmax(fused(ids, use_cache=False).logits, -1)
        ref = torch.log_softmax(a(ids).logits, -1)
    assert torch.allclose(got, ref, atol=1e-5), (got - ref).abs().max()


@pytest.mark.parametrize("method", METHODS)
def test_weights_are_a_distribution_per_token_and_cached_generation_equals_uncached(experts, method):
    a, b, tok, *_ = experts
    fused = FusedForCausalLM.from_experts([a, b], method=method)
    ids = _ids(tok)
    with torch.no_grad():
        out = fused(ids, use_cache=False)
    w = out.weights
    assert w.shape == (1, ids.shape[1], 2)
    assert (w >= 0).all() and torch.allclose(w.sum(-1), torch.ones(1, ids.shape[1]), atol=1e-6)
    if method in ("entropy", "bayes", "bayes_decay"):
        assert w[0, 1:].sub(0.5).abs().max() > 1e-4  # the weights do move per token
    prompt = ids[:, :6]
    cached = fused.generate(prompt, max_new_tokens=12, do_sample=False)
    uncached = fused.generate(prompt, max_new_tokens=12, do_sample=False, use_cache=False)
    assert cached.shape[1] == 18 and torch.equal(cached, uncached)


def test_bayes_weights_follow_the_expert_that_predicted_the_prefix(experts):
    a, b, tok, *_ = experts
    fused = FusedForCausalLM.from_experts([a, b], method="bayes")
    ids = _ids(tok)
    with torch.no_grad():
        out = fused(ids, use_cache=False, output_expert_logits=True)
    lp = [torch.log_softmax(z, -1)[0, :-1].gather(-1, ids[0, 1:, None])[:, 0] for z in out.expert_logits]
    evidence = torch.stack(lp).cumsum(-1)  # (2, T-1): log-likelihood of the prefix up to t
    expect = torch.softmax(evidence, 0).T  # posterior at positions 1..T-1
    assert torch.allclose(out.weights[0, 1:], expect, atol=1e-5)


def test_hidden_states_say_which_expert(experts):
    a, b, tok, *_ = experts
    fused = FusedForCausalLM.from_experts([a, b], method="mean_logits", names=["ru", "zh"])
    ids = _ids(tok)
    with torch.no_grad():
        out = fused(ids, output_hidden_states=True, use_cache=False)
        hb = b(ids, output_hidden_states=True).hidden_states
    assert out.hidden_state_sources == tuple(("ru", i) for i in range(3)) + tuple(("zh", i) for i in range(4))
    assert len(out.hidden_states) == 7 and len(out.expert_hidden_states["zh"]) == 4
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(out.expert_hidden_states["zh"], hb))


@pytest.mark.parametrize("method", METHODS)
def test_left_padding_adds_no_evidence_and_the_evidence_follows_the_cache(experts, method):
    """A left-padded row (mask + position ids) gets the fused log-probabilities and weights of the
    same row alone; a cache repeated per row (reorder_cache, as multiple-choice scoring does)
    carries the Bayesian evidence along, so continuing from it equals the uncached forward."""
    a, b, tok, *_ = experts
    fused = FusedForCausalLM.from_experts([a, b], method=method)
    ids = _ids(tok)[:, :10]
    short = ids[:, 3:]
    x = torch.cat([torch.zeros(1, 3, dtype=torch.long), short], 1)
    x = torch.cat([ids, x])
    mask = torch.ones_like(x)
    mask[1, :3] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        padded = fused(x, attention_mask=mask, position_ids=pos, use_cache=False)
        alone = fused(short, use_cache=False)
        full = fused(ids, use_cache=False)
        assert torch.allclose(padded.logits[1, 3:], alone.logits[0], atol=1e-5)
        assert torch.allclose(padded.weights[1, 3:], alone.weights[0], atol=1e-6)
        assert torch.allclose(padded.logits[0], full.logits[0], atol=1e-5)
        head = fused(ids[:, :6], use_cache=True)
        head.cache.reorder_cache(torch.zeros(3, dtype=torch.long))
        rest = fused(ids[:, 6:].expand(3, -1), cache=head.cache, use_cache=True)
    assert torch.allclose(rest.logits, full.logits[:, 6:].expand(3, -1, -1), atol=1e-5)
    assert torch.allclose(rest.weights, full.weights[:, 6:].expand(3, -1, -1), atol=1e-6)


def test_bpc_of_the_fused_model_uses_its_loss(experts):
    a, _, tok, *_ = experts
    fused = FusedForCausalLM.from_experts([a, a], method="bayes")
    one = bpc_by_text(a, tok, TEXTS, seq_len=16)
    two = bpc_by_text(fused, tok, TEXTS, seq_len=16)
    assert one["val_chars"] == two["val_chars"] > 0
    assert abs(one["val_bpc"] - two["val_bpc"]) < 1e-4
    assert mixed_texts({"en": ["a"], "ru": ["б"]}, ["en", "ru"], 2) == ["a\nб", "б\na"]


# runs in a fresh process where importing bvvlab is impossible
CHILD = """\
import json, sys
class _NoBvvlab:
    def find_spec(self, name, path=None, target=None):
        if name == "bvvlab" or name.startswith("bvvlab."):
            raise ImportError("bvvlab is blocked in this process")
sys.meta_path.insert(0, _NoBvvlab())
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
ckpt, ids_json, out_path = sys.argv[1:4]
model = AutoModelForCausalLM.from_pretrained(ckpt, trust_remote_code=True)
tok = AutoTokenizer.from_pretrained(ckpt)
ids = torch.tensor(json.loads(ids_json))
with torch.no_grad():
    logits = model(ids, use_cache=False).logits
greedy = model.generate(ids[:, :6], max_new_tokens=8, do_sample=False)
torch.save({"logits": logits, "greedy": greedy}, out_path)
print(json.dumps({"bvvlab_imported": any(m.split(".")[0] == "bvvlab" for m in sys.modules),
                  "module": type(model).__module__, "len_tok": len(tok)}))
"""


@pytest.fixture(scope="module")
def saved(experts, tmp_path_factory):
    """The two experts fused (bayes) and saved as one checkpoint directory."""
    a, b, tok, pa, pb, _ = experts
    out = tmp_path_factory.mktemp("saved") / "fused"
    fused, _ = fuse([pa, pb], "bayes", out)
    return fused, out


def test_a_fused_folder_with_a_repeated_expert_name_keeps_both_experts_hidden_states(experts, tmp_path):
    """Fused folders written before `fuse` refused repeated names can hold two experts of one
    name; their hidden states used to overwrite each other (7 states came back as 4)."""
    a, b, tok, *_ = experts
    fused = FusedForCausalLM.from_experts([a, b], method="mean_logits", names=["x", "x"])
    assert fused.config.expert_names == ["x", "x#2"]
    fused.config.expert_names = ["x", "x"]  # as an old config.json held them
    fused.save_pretrained(tmp_path / "old")
    back = FusedForCausalLM.from_pretrained(tmp_path / "old")
    with torch.no_grad():
        out = back(_ids(tok), output_hidden_states=True, use_cache=False)
    assert back.config.expert_names == ["x", "x#2"]
    assert len(out.hidden_states) == 7 and len(out.expert_hidden_states["x#2"]) == 4


def test_fused_checkpoint_round_trips(experts, saved):
    """Saved once (the shared matrix stored once, the remote code beside it), loaded back by
    load_fused and by the one loader (bvvlab.models.loader.load, of bvvlab eval and probe): the same logits."""
    tok = experts[2]
    fused, out = saved
    with safe_open(str(out / "model.safetensors"), framework="pt") as fh:
        keys = list(fh.keys())
    assert [k for k in keys if "embed_tokens" in k] == ["embed_tokens.weight"]  # the matrix stored once
    assert {"fused_model.py", "model.py", "meta.json"} <= {p.name for p in out.iterdir()}
    ids = _ids(tok)
    with torch.no_grad():
        ref = fused(ids, use_cache=False).logits
    for back, tok2 in (load_fused(out), (load(out).model, load(out).tokenizer)):
        with torch.no_grad():
            assert torch.equal(back(ids, use_cache=False).logits, ref)
        assert len(tok2) == len(tok)
    assert type(load(experts[3]).model).__name__ == "BVVForCausalLM"


@pytest.mark.slow
def test_fused_checkpoint_loads_in_a_process_without_bvvlab(experts, saved, tmp_path):
    tok = experts[2]
    fused, out = saved
    ids = _ids(tok)
    with torch.no_grad():
        ref = fused(ids, use_cache=False).logits
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(out), json.dumps(ids.tolist()), str(tmp_path / "o.pt")],
                          cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["bvvlab_imported"] is False and report["module"].startswith("transformers_modules")
    got = torch.load(tmp_path / "o.pt")
    assert torch.equal(got["logits"], ref)
    assert torch.equal(got["greedy"], fused.generate(ids[:, :6], max_new_tokens=8, do_sample=False))


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_bad_input_is_one_line_and_nothing_saved_is_lost(experts, tmp_path, capsys):
    a, b, tok, pa, pb, root = experts
    V = len(tok)
    # a different matrix over the same vocabulary
    other = save_checkpoint(BVVForCausalLM.from_glyphs(config_from_preset("tiny", vocab_size=V), _glyphs(V, seed=5)),
                            tok, tmp_path / "other-matrix")
    # a different vocabulary (and so a different matrix)
    tokens2, _ = compact_vocab(bvv241_vocab(65536, []), TEXTS[:2])
    tok2 = hf_tokenizer(tokens2, [])
    vocab2 = save_checkpoint(BVVForCausalLM.from_glyphs(config_from_preset("tiny", vocab_size=len(tok2)),
                                                        _glyphs(len(tok2))), tok2, tmp_path / "other-vocab")
    # the same vocabulary and matrix, a different tokenizer (another special-token set-up)
    tok3 = hf_tokenizer(tokens, []) if (tokens := compact_vocab(bvv241_vocab(65536, []), TEXTS)[0]) else None
    tok3.backend_tokenizer.normalizer = None
    from tokenizers import normalizers
    tok3.backend_tokenizer.normalizer = normalizers.NFKC()
    tokdir = save_checkpoint(a, tok3, tmp_path / "other-tokenizer")
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    before = {p: _snapshot(p) for p in (pa, pb, keep)}
    cases = [
        ([str(pa), str(other)], "bayes", tmp_path / "o1", "different frozen matrices"),
        ([str(pa), str(vocab2)], "bayes", tmp_path / "o2", "different vocabularies"),
        ([str(pa), str(tokdir)], "bayes", tmp_path / "o3", "different tokenizers"),
        ([str(pa)], "bayes", tmp_path / "o4", "at least two experts"),
        ([str(pa), str(pb)], "median", tmp_path / "o5", "unknown fusion method"),
        ([str(pa), str(pb)], "bayes", keep, "not empty"),
    ]
    for paths, method, out, words in cases:
        with pytest.raises(FusionError, match=words):
            fuse(paths, method, out)
        rc = main(["fuse", *paths, "--method", method, "--out", str(out)])
        err = capsys.readouterr().err.strip()
        assert rc != 0 and len(err.splitlines()) == 1 and words in err, err
        if out != keep:
            assert not out.exists()
    # --overwrite never replaces something that is not a fused checkpoint
    assert main(["fuse", str(pa), str(pb), "--out", str(keep), "--overwrite"]) != 0
    assert "something other than a fused checkpoint" in capsys.readouterr().err
    assert {p: _snapshot(p) for p in (pa, pb, keep)} == before
    # the command writes a fused checkpoint, and --overwrite replaces only such a one
    fused_dir = tmp_path / "fused"
    assert main(["fuse", str(pa), str(pb), "--method", "entropy", "--out", str(fused_dir)]) == 0
    assert json.loads((fused_dir / "config.json").read_text())["method"] == "entropy"
    assert main(["fuse", str(pa), str(pb), "--method", "mean_logits", "--out", str(fused_dir), "--overwrite"]) == 0
    assert json.loads((fused_dir / "config.json").read_text())["method"] == "mean_logits"


def test_remote_code_imports_only_stdlib_torch_transformers_and_the_model_file():
    import ast

    import bvvlab.models.fused_model as fm

    tree = ast.parse(open(fm.__file__, encoding="utf-8").read())
    tops = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    tops |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
    relative = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level > 0}
    assert relative == {"model"}
    assert tops - set(sys.stdlib_module_names) <= {"torch", "transformers"}, tops
