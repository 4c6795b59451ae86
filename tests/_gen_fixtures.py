"""Models and tokenizers shared by tests/test_generation.py, tests/test_widgets.py and the
browser test (issue 15): a compact bvv241 tokenizer of a few en/ru texts, tiny untrained bvv
models over random unit "glyph" rows, and a fused checkpoint of two such experts. Import the
`tok` fixture by name (`from _gen_fixtures import tok`): pytest finds fixtures in a module's
namespace."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bvvlab.glyph.tokenizer import bvv241_vocab, compact_vocab, hf_tokenizer
from bvvlab.models.model import BVVForCausalLM, config_from_preset

TEXTS = ["Hello, world! The quick brown fox.", "Привет, мир! Съешь же ещё этих мягких булок."]
PROMPT = "Hello, мир"


def make_tokenizer(texts=TEXTS):
    tokens, _ = compact_vocab(bvv241_vocab(65536, []), texts)
    return hf_tokenizer(tokens, [])


def glyph_rows(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def tiny(tok, seed: int = 0, glyph_seed: int | None = None, **overrides) -> BVVForCausalLM:
    """The `tiny` preset over `tok` (special ids set), weights from `seed`, glyph rows from
    `glyph_seed` (default: `seed`; experts to be fused must share one matrix)."""
    torch.manual_seed(seed)
    cfg = config_from_preset("tiny", vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                             bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **overrides)
    glyphs = glyph_rows(len(tok), cfg.hidden_size, seed if glyph_seed is None else glyph_seed)
    return BVVForCausalLM.from_glyphs(cfg, glyphs).eval()


def fused_checkpoint(tok, root: Path, method: str = "bayes") -> Path:
    """Two tiny experts (different depth and heads, one matrix) saved and fused with
    `bvvlab.train.fusion.fuse` into `root/fused`: a real fused checkpoint directory."""
    from bvvlab.models.checkpoints import save_checkpoint
    from bvvlab.train.fusion import fuse

    a = tiny(tok, seed=0, glyph_seed=0)
    b = tiny(tok, seed=1, glyph_seed=0, num_hidden_layers=3, num_attention_heads=8)
    pa = save_checkpoint(a, tok, root / "expert-a")
    pb = save_checkpoint(b, tok, root / "expert-b")
    fuse([pa, pb], method=method, out=root / "fused")
    return root / "fused"


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return tiny(tok)
