"""LoRA on the frozen blocks of a growth stage (issue 14, docs/recipe.md section 6): rank r adds
r (in + out) parameters per adapted linear layer, the model starts with the frozen model's exact
outputs, training moves the adapters and leaves the base weights bit-identical, merging gives plain
weights with the same outputs, the stage's checkpoint holds merged plain weights (no LoRA keys; it
loads in a fresh process without bvvlab) while its trainer state keeps the unmerged base and
adapters, so a stage resumed after SIGINT or SIGKILL ends bit-identical to an uninterrupted one;
the FLOP count adds the adapters' matmuls and the backward through the frozen blocks; bad input is
one line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from bvvlab import cli
from bvvlab.core.errors import Interrupted
from bvvlab.models import checkpoints as C
from bvvlab.models import lora
from bvvlab.models.model import BVVForCausalLM, config_from_preset
from bvvlab.train import growth as G
from bvvlab.train.loop import make_config, make_optimizer, read_metrics
from bvvlab.train.setup import add_lora, freeze

FAST = dict(preset="tiny", train_chars=20_000, val_chars=4_000, seq_len=32, batch_size=4, log_every=1,
            eval_every=0, save_every=2, warmup=1, progress=False)
RANK = 2


def _model(layers: int = 3, frozen: int = 2, rank: int = 4, **cfg) -> BVVForCausalLM:
    torch.manual_seed(0)
    glyphs = torch.nn.functional.normalize(torch.randn(512, 64), dim=1)
    model = BVVForCausalLM.from_glyphs(config_from_preset("tiny", num_hidden_layers=layers, **cfg), glyphs)
    add_lora(model, freeze(model, frozen), rank, None, seed=0)
    return model


def _ids(n: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 512, (n, 16), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- the layer itself


@pytest.mark.parametrize("mlp_type", ["gelu", "swiglu"])
def test_rank_r_adds_r_times_in_plus_out_per_linear_and_starts_at_the_frozen_output(mlp_type):
    torch.manual_seed(0)
    glyphs = torch.nn.functional.normalize(torch.randn(512, 64), dim=1)
    plain = BVVForCausalLM.from_glyphs(config_from_preset("tiny", num_hidden_layers=3, mlp_type=mlp_type), glyphs)
    before = sum(p.numel() for p in plain.parameters())
    ids = _ids()
    with torch.no_grad():
        want = plain(ids).logits
    info = add_lora(plain, freeze(plain, 2), 4, None, seed=0)
    d, f = 64, plain.config.intermediate_size
    up = 2 * f if mlp_type == "swiglu" else f  # swiglu's up_proj holds [gate; up]
    per_block = 4 * ((d + 3 * d) + (d + d) + (d + up) + (f + d))  # qkv_proj, o_proj, up_proj, down_proj
    assert info["params"] == 2 * per_block == sum(p.numel() for p in plain.parameters()) - before
    assert info["blocks"] == [0, 1] and info["alpha"] == 4.0 and info["scale"] == 1.0
    assert info["modules"] == [f"model.blocks.{i}.{n}" for i in (0, 1)
                               for n in ("attn.qkv_proj", "attn.o_proj", "mlp.up_proj", "mlp.down_proj")]
    assert not any(isinstance(m, lora.LoRALinear) for m in plain.model.blocks[2].modules())
    trainable = {n for n, p in plain.named_parameters() if p.requires_grad}
    assert {n for n in trainable if n.startswith(("model.blocks.0.", "model.blocks.1."))} == \
        {f"{m}.lora_{x}" for m in info["modules"] for x in "AB"}  # the frozen blocks: only their adapters
    with torch.no_grad():
        assert torch.equal(plain(ids).logits, want)  # B = 0: exactly the frozen model
    assert plain.model.blocks[1].mlp.down_proj.residual_out  # the layer's own attributes survive


def test_adapters_are_seeded_and_leave_the_global_rng_alone():
    def a(model):
        return model.model.blocks[0].attn.qkv_proj.lora_A

    m1, m2 = _model(), _model()
    assert torch.equal(a(m1), a(m2)) and a(m1).abs().sum() > 0  # the same seed: the same A
    torch.manual_seed(0)
    glyphs = torch.nn.functional.normalize(torch.randn(512, 64), dim=1)
    m3 = BVVForCausalLM.from_glyphs(config_from_preset("tiny", num_hidden_layers=3), glyphs)
    rng = torch.get_rng_state()
    add_lora(m3, freeze(m3, 2), 4, None, seed=1)
    assert torch.equal(torch.get_rng_state(), rng)  # no draw from the global generator (data order untouched)
    assert not torch.equal(a(m3), a(m1))  # another seed: another A


def _train(model: BVVForCausalLM, steps: int = 3) -> None:
    opt = make_optimizer(model, make_config(lr=1e-2, weight_decay=0.0), torch.device("cpu"))
    for s in range(steps):
        out = model(_ids(seed=10 + s), labels=_ids(seed=10 + s))
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def test_training_moves_the_adapters_and_leaves_the_base_weights_bit_identical():
    model = _model()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    opt = make_optimizer(model, make_config(), torch.device("cpu"))
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    frozen_base = [m.weight for m in lora.adapted(model).values()]
    assert frozen_base and not any(id(w) in in_opt for w in frozen_base)  # base weights: not in the optimizer
    assert all(id(m.lora_A) in in_opt and id(m.lora_B) in in_opt for m in lora.adapted(model).values())
    _train(model)
    now = model.state_dict()
    moved = {k for k in now if not torch.equal(now[k], base[k])}
    assert not any(k.startswith(("model.blocks.0.", "model.blocks.1.")) and "lora_" not in k for k in moved)
    assert {k for k in base if "lora_" in k} <= moved  # every A and B trained (B left zero, A then moves)
    assert any(k.startswith("model.blocks.2.") for k in moved) and "lm_head.weight" in moved


def test_merging_gives_plain_weights_with_the_same_outputs():
    model = _model()
    _train(model)
    ids = _ids(seed=3)
    with torch.no_grad():
        want = model(ids).logits
    keys_before = set(model.state_dict())
    with lora.merged(model) as plain, torch.no_grad():
        sd = plain.state_dict()
        assert not any("lora_" in k for k in sd) and set(sd) == set(BVVForCausalLM(model.config).state_dict())
        w = sd["model.blocks.0.attn.qkv_proj.weight"]
        assert lora.adapted(plain) == {}  # none while merged
        assert torch.allclose(plain(ids).logits, want, rtol=1e-5, atol=1e-5)
    back = lora.adapted(model)["model.blocks.0.attn.qkv_proj"]
    assert set(model.state_dict()) == keys_before  # the adapters are back, unmerged
    assert torch.equal(w, back.merged_weight()) and not torch.equal(w, back.weight)
    lora.merge(model)  # for good
    assert not lora.adapted(model) and not any("lora_" in k for k in model.state_dict())
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, want, rtol=1e-5, atol=1e-5)


def test_a_saved_lora_state_restores_the_unmerged_layers_and_a_wrong_one_is_one_line():
    """The resume path: the checkpoint's merged plain weights loaded into a fresh model, adapters
    added, the saved state copied in: the trained model, exactly (not up to rounding)."""
    trained = _model()
    _train(trained)
    saved = {k: v.clone() for k, v in lora.state(trained).items()}
    with lora.merged(trained) as plain:
        checkpoint = {k: v.clone() for k, v in plain.state_dict().items()}
    fresh = BVVForCausalLM(trained.config)
    fresh.load_state_dict(checkpoint)
    add_lora(fresh, freeze(fresh, 2), 4, None, seed=0)
    lora.load_state(fresh, saved)
    ids = _ids(seed=4)
    with torch.no_grad():
        assert torch.equal(fresh(ids).logits, trained(ids).logits)
    with pytest.raises(ValueError, match="does not fit this model's adapters") as e:
        lora.load_state(_model(rank=3), saved)
    assert len(str(e.value).splitlines()) == 1


def test_training_flops_add_the_adapter_matmuls_and_the_backward_through_the_frozen_blocks():
    cfg, T, r = config_from_preset("tiny", num_hidden_layers=3), 32, 4
    d, f, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    Pb, Ph, attn = 4 * d * d + 2 * d * f, d * V, 4 * T * d
    Lr = r * ((d + 3 * d) + (d + d) + (d + f) + (f + d))  # one block's A and B weights
    got = G.stage_flops(cfg, 2, T, lora_rank=r)
    assert got["forward"] == 2 * (3 * Pb + Ph + 2 * Lr) + 3 * attn
    # the backward now runs through all three blocks: input gradients of everything, weight
    # gradients of block 2, the head and the adapters (2 per weight each)
    assert got["backward"] == 2 * (3 * Pb + Ph + 2 * Lr) + 2 * (Pb + Ph + 2 * Lr) + 3 * 2 * attn
    assert got["backward_blocks"] == got["trainable_blocks"] == [0, 1, 2]
    assert got["trainable_weights"] == Pb + Ph + 2 * Lr
    assert G.training_flops_per_token(_model(rank=r), T) == got  # the same from a real model
    plain = G.stage_flops(cfg, 2, T)
    assert plain["total"] < got["total"] < G.stage_flops(cfg, 0, T)["total"] + 2 * 3 * 2 * Lr


# ----------------------------------------------------------------------------- a growth stage with LoRA


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "g"
    summary = G.grow(make_config(**FAST), "1,1", 4, out, new_block_init="copy", lora_rank=RANK)
    return out, summary


def test_the_stage_checkpoint_holds_merged_plain_weights_and_the_state_the_unmerged_ones(grown):
    out, s = grown
    assert s["lora_rank"] == RANK and s["stages"][0]["lora"] is None and s["stages"][1]["lora"]["rank"] == RANK
    meta = json.loads((out / "stage_2" / "meta.json").read_text())
    assert meta["lora"]["rank"] == RANK and meta["lora"]["alpha"] == float(RANK) and meta["lora"]["blocks"] == [0]
    assert meta["config"]["lora_rank"] == RANK and meta["config"]["freeze_blocks"] == 1
    assert meta["model"]["trainable_params"] == sum(  # block 1, the head, norms and the adapters
        v.numel() for k, v in load_file(str(out / "stage_2" / "model.safetensors")).items()
        if not k.startswith(("model.blocks.0.", "model.embed_tokens"))) + meta["lora"]["params"]
    ckpt = C.resolve(out / "stage_2")
    w1, w2 = load_file(str(C.resolve(out / "stage_1") / "model.safetensors")), load_file(str(ckpt / "model.safetensors"))
    assert set(w2) == set(BVVForCausalLM(config_from_preset("tiny", num_hidden_layers=2)).state_dict())  # no LoRA keys
    st = C.read_trainer_state(ckpt)["lora"]
    assert set(st) == {f"{m}.{x}" for m in meta["lora"]["modules"] for x in ("weight", "lora_A", "lora_B")}
    for m in meta["lora"]["modules"]:
        assert torch.equal(st[f"{m}.weight"], w1[f"{m}.weight"])  # the frozen base: the parent's, bit for bit
        assert st[f"{m}.lora_B"].abs().sum() > 0  # the adapters trained
        merged = st[f"{m}.weight"] + st[f"{m}.lora_B"] @ st[f"{m}.lora_A"] * meta["lora"]["scale"]
        assert torch.equal(w2[f"{m}.weight"], merged) and not torch.equal(w2[f"{m}.weight"], w1[f"{m}.weight"])
    assert not C.damaged_files(ckpt) and "trainer_state.safetensors" in C.read_meta(ckpt)["files"]
    assert not (out / "stage_2" / "trainer_state.safetensors").exists()  # the run folder: a plain HF model
    model, _ = C.load_checkpoint(out / "stage_2")  # loads as an ordinary checkpoint
    assert not lora.adapted(model) and model.config.num_hidden_layers == 2


def test_the_stage_flops_count_its_adapters(grown):
    out, s = grown
    st = s["stages"][1]
    want = G.stage_flops(C.resolve(st["run"]) / "config.json", 1, FAST["seq_len"], RANK)["total"]
    assert st["flops_per_token"] == want > G.stage_flops(C.resolve(st["run"]) / "config.json", 1, FAST["seq_len"])["total"]
    assert s["train_flops"] == sum(x["train_flops"] for x in s["stages"])


def test_a_lora_stage_resumes_after_sigint_to_the_same_weights(grown, tmp_path):
    """Stage 1 copied from the fixture (finished: skipped), stage 2 interrupted at its step 3 by a
    real SIGINT (saved at step 3), then the same call again: ends bit-identical to the fixture."""
    ref, _ = grown
    out = tmp_path / "g"
    shutil.copytree(ref / "stage_1", out / "stage_1")
    base = make_config(**FAST, vocab=str(ref / "embedding"))  # the fixture's stages' vocab=

    def stop_at_step_3(rec):
        if rec.get("kind") == "train" and rec["step"] == 3:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted, match="at step 3"):
        G.grow(base, "1,1", 4, out, new_block_init="copy", lora_rank=RANK, callback=stop_at_step_3)
    assert C.last_checkpoint(out / "stage_2").name == "step_0000003"
    G.grow(base, "1,1", 4, out, new_block_init="copy", lora_rank=RANK)
    got, want = load_file(str(out / "stage_2" / "model.safetensors")), load_file(str(ref / "stage_2" / "model.safetensors"))
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    a, b = C.read_trainer_state(C.resolve(out / "stage_2")), C.read_trainer_state(C.resolve(ref / "stage_2"))
    assert all(torch.equal(a["lora"][k], b["lora"][k]) for k in b["lora"])  # the unmerged layers too
    losses = [r["loss"] for r in read_metrics(out / "stage_2") if r["kind"] == "train"]
    assert losses == [r["loss"] for r in read_metrics(ref / "stage_2") if r["kind"] == "train"]


_CHILD = """\
import sys
class _NoBvvlab:
    def find_spec(self, name, path=None, target=None):
        if name == "bvvlab" or name.startswith("bvvlab."):
            raise ImportError("bvvlab is blocked in this process")
sys.meta_path.insert(0, _NoBvvlab())
import torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True)
ids = torch.tensor([[1, 5, 9, 40, 77, 3, 100, 2]])
with torch.no_grad():
    torch.save(model(ids).logits, sys.argv[2])
"""


@pytest.mark.slow
def test_a_lora_stage_loads_in_a_fresh_process_without_bvvlab(grown, tmp_path):
    out, _ = grown
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(out / "stage_2"), str(tmp_path / "l.pt")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ids = torch.tensor([[1, 5, 9, 40, 77, 3, 100, 2]])
    model, _ = C.load_checkpoint(out / "stage_2")
    with torch.no_grad():
        assert torch.equal(torch.load(tmp_path / "l.pt"), model(ids).logits)
    # and the unmerged model the trainer trained gives the same outputs, up to rounding
    unmerged, _ = C.load_checkpoint(out / "stage_2")
    meta = C.read_meta(out / "stage_2")
    add_lora(unmerged, freeze(unmerged, 1), RANK, None, seed=0)
    lora.load_state(unmerged, C.read_trainer_state(C.resolve(out / "stage_2"))["lora"])
    with torch.no_grad():
        assert torch.allclose(unmerged(ids).logits, model(ids).logits, rtol=1e-5, atol=1e-5)
    assert meta["lora"]["modules"] == list(lora.adapted(unmerged))


# ----------------------------------------------------------------------------- bad input: one line each


def _one_line(capsys, rc: int, *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, err
    return err


@pytest.mark.parametrize("args, words", [
    (["--stages", "1,1", "--lora-rank", "-1"], ["lora_rank=-1", "integer >= 0", "lora_rank=8"]),
    (["--stages", "1,1", "--lora-rank", "0.5"], ["lora_rank='0.5'", "integer >= 0"]),
    (["--stages", "1,1", "--lora-rank", "abc"], ["lora_rank='abc'", "integer >= 0"]),
    (["--stages", "1,1", "lora_rank=abc"], ["lora_rank='abc'", "integer >= 0"]),
    (["--stages", "1,1", "--lora-rank", "2", "--lora-alpha", "-1"], ["lora_alpha=-1.0", "number > 0"]),
    (["--stages", "1", "--lora-rank", "2"], ["lora_rank=2 but no stage has frozen blocks", "lora_rank=0"]),
])
def test_bad_lora_input_to_grow(tmp_path, capsys, args, words):
    out = tmp_path / "g"
    opts, kv = [a for a in args if "=" not in a], [a for a in args if "=" in a]  # key=value ones go last
    _one_line(capsys, cli.main(["grow", "--out", str(out), *opts, *[f"{k}={v}" for k, v in FAST.items()], *kv]),
              *words)
    assert not out.exists()  # refused before anything was written


def test_lora_with_nothing_frozen_is_refused(tmp_path, capsys):
    out = tmp_path / "t"
    _one_line(capsys, cli.main(["train", "--out", str(out), "--steps", "1", "lora_rank=4",
                                *[f"{k}={v}" for k, v in FAST.items()]]),
              "lora_rank=4 but freeze_blocks=0", "freeze_blocks=N", "lora_rank=0")
    assert not out.exists()
    for bad, words in ((dict(lora_rank=-1), "lora_rank=-1"), (dict(lora_rank=0.5), "lora_rank=0.5"),
                       (dict(lora_rank=True), "lora_rank=True")):
        with pytest.raises(ValueError, match=words) as e:
            make_config(**bad, freeze_blocks=1).validate()
        assert len(str(e.value).splitlines()) == 1
    with pytest.raises(ValueError, match="lora_rank=2 but freeze_blocks=0"):
        make_config(lora_rank=2).validate()


def test_a_resume_may_not_change_the_lora_rank(grown, capsys):
    out, _ = grown
    rc = cli.main(["train", "--out", str(out / "stage_2"), "--resume", "lora_rank=3"])
    _one_line(capsys, rc, "lora_rank (saved 2)")
