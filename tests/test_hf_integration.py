"""A saved checkpoint is a plain Hugging Face model (issue 4): a fresh Python process that never
imports bvvlab (it is blocked outright) loads it offline with `trust_remote_code=True`, gets
the same logits, and runs the seed model card's "Example Usage" verbatim."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bvvlab.glyph.tokenizer import bvv241_vocab, compact_vocab, hf_tokenizer
from bvvlab.models.checkpoints import save_checkpoint
from bvvlab.models.model import BVVForCausalLM, config_from_preset

# a copy of the Bochkov/best_bvv_ru model card, where one is at hand (CI points at its own copy)
CARD = Path(os.environ.get("BVVLAB_SEED_CARD", "/nonexistent/seed-model-card.txt"))
# The card's "Example Usage", character for character (its prompt is mojibake of "мир" in the
# card itself; kept as is). The test swaps only the hub id for a local dir and 'cuda' for 'cpu'.
CARD_EXAMPLE = """\
from transformers import AutoModelForCausalLM, AutoTokenizer
import torch
model = AutoModelForCausalLM.from_pretrained('Bochkov/best_bvv_ru', trust_remote_code=True).to('cuda')
tokenizer = AutoTokenizer.from_pretrained('Bochkov/best_bvv_ru')
inputs = tokenizer("Hello, \u03a0\u038c\u03a0\u0388\u03a1\u20ac! ", return_tensors="pt").to('cuda')
outputs = model.generate(
    **inputs, 
    max_new_tokens=100, 
    temperature=0.8, 
    top_k=50, 
    top_p=0.95, 
    do_sample=True
)
print(tokenizer.decode(outputs[0]))
"""
PROMPT = "Hello, \u03a0\u038c\u03a0\u0388\u03a1\u20ac! "
PROBE = "Привет, мир! Hello, world."

# runs in the fresh process: bvvlab cannot be imported at all, so the remote code must stand alone
CHILD = """\
import io, contextlib, json, sys
class _NoBvvlab:
    def find_spec(self, name, path=None, target=None):
        if name == "bvvlab" or name.startswith("bvvlab."):
            raise ImportError("bvvlab is blocked in this process")
sys.meta_path.insert(0, _NoBvvlab())
ckpt, card, probe, out_path = sys.argv[1:5]
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    exec(compile(card, "<seed card example>", "exec"), {})
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained(ckpt, trust_remote_code=True)
tok = AutoTokenizer.from_pretrained(ckpt)
enc = tok(probe, return_tensors="pt")
with torch.no_grad():
    logits = model(**enc).logits
greedy = model.generate(**enc, max_new_tokens=8, do_sample=False)
torch.save({"logits": logits, "ids": enc["input_ids"], "greedy": greedy}, out_path)
print(json.dumps({"card_stdout": buf.getvalue(), "model_module": type(model).__module__,
                  "bvvlab_imported": any(m.split(".")[0] == "bvvlab" for m in sys.modules),
                  "frozen_in_parameters": any(p is model.model.embed_tokens.weight for p in model.parameters())}))
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny frozen-embedding checkpoint with a real (compact) bvv241 tokenizer."""
    tokens, _ = compact_vocab(bvv241_vocab(65536, []), [PROMPT, PROBE])
    tok = hf_tokenizer(tokens, [])
    torch.manual_seed(0)
    cfg = config_from_preset("tiny", vocab_size=len(tok))
    glyphs = F.normalize(torch.randn(len(tok), cfg.hidden_size, generator=torch.Generator().manual_seed(0)), dim=-1)
    model = BVVForCausalLM.from_glyphs(cfg, glyphs).eval()
    out = save_checkpoint(model, tok, tmp_path_factory.mktemp("hf") / "bvv-tiny", {"purpose": "test"})
    return model, tok, out


@pytest.fixture(scope="module")
def fresh_process(checkpoint, tmp_path_factory):
    _, _, ckpt = checkpoint
    work = tmp_path_factory.mktemp("fresh")
    card = CARD_EXAMPLE.replace("'Bochkov/best_bvv_ru'", repr(str(ckpt))).replace("'cuda'", "'cpu'")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(work / "hf_home"), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(ckpt), card, PROBE, str(work / "out.pt")],
                          cwd=work, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return report, torch.load(work / "out.pt"), work


@pytest.mark.slow
def test_fresh_process_without_bvvlab_loads_identical_model(checkpoint, fresh_process):
    model, tok, ckpt = checkpoint
    report, child, work = fresh_process
    assert report["bvvlab_imported"] is False
    assert report["model_module"].startswith("transformers_modules")  # the saved remote code ran
    assert (work / "hf_home" / "modules").is_dir()  # and was copied into the private HF_HOME
    assert report["frozen_in_parameters"] is False
    enc = tok(PROBE, return_tensors="pt")
    assert torch.equal(child["ids"], enc["input_ids"])
    with torch.no_grad():
        assert torch.equal(child["logits"], model(**enc).logits)
    assert torch.equal(child["greedy"], model.generate(**enc, max_new_tokens=8, do_sample=False))
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["auto_map"] == {"AutoConfig": "model.BVVConfig", "AutoModelForCausalLM": "model.BVVForCausalLM"}


@pytest.mark.slow
def test_seed_card_example_runs_verbatim(fresh_process):
    report, _, _ = fresh_process
    printed = report["card_stdout"].rstrip("\n")
    assert "custom code" not in printed  # no interactive trust_remote_code prompt on the way
    assert printed.startswith(PROMPT)  # decode(outputs[0]) gives back the prompt (lossless tokenizer) ...
    assert len(printed) > len(PROMPT)  # ... and the sampled continuation after it


def test_card_example_text_is_the_card_s():
    """Guards CARD_EXAMPLE against drift from the published card (BVVLAB_SEED_CARD=a copy of it)."""
    if not CARD.exists():
        pytest.skip("set BVVLAB_SEED_CARD to a copy of the Bochkov/best_bvv_ru model card")
    text = CARD.read_text(encoding="utf-8")
    start = text.index("from transformers import AutoModelForCausalLM")
    block = text[start:text.index("print(tokenizer.decode(outputs[0]))", start)] + "print(tokenizer.decode(outputs[0]))\n"
    assert block == CARD_EXAMPLE


def test_remote_code_imports_only_torch_transformers_and_stdlib(checkpoint):
    """transformers' own import scan of the saved model.py (what trust_remote_code checks)."""
    from transformers.dynamic_module_utils import get_imports

    _, _, ckpt = checkpoint
    allowed = set(sys.stdlib_module_names) | {"torch", "transformers"}
    assert set(get_imports(ckpt / "model.py")) <= allowed
    assert not any(Path(ckpt).glob("configuration_*.py"))  # config and model live in the one file
