"""The trainer's rooms, each on its own (issue 9): `train_step`, `Batches`, `RunLog`,
`make_optimizer`, the distributed helpers in one process, and host syncs per step (issue 8)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bvvlab.models.model import BVVForCausalLM, config_from_preset
from bvvlab.train import distributed as dist
from bvvlab.train import loop as TR
from bvvlab.train import shards as D


def _model(seed: int = 0) -> BVVForCausalLM:
    torch.manual_seed(seed)
    cfg = config_from_preset("tiny", vocab_size=97, hidden_size=32, num_attention_heads=4, num_hidden_layers=2)
    return BVVForCausalLM.from_glyphs(cfg, torch.nn.functional.normalize(torch.randn(97, 32), dim=1))


def _parts(seed: int = 0, lr: float = 1e-2):
    model = _model(seed)
    cfg = TR.make_config(lr=lr, min_lr=0.0)
    opt = TR.make_optimizer(model, cfg, torch.device("cpu"))
    params = [p for p in model.parameters() if p.requires_grad]
    return model, opt, params


def _rows(seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 97, (4, 16), generator=torch.Generator().manual_seed(seed))


def test_train_step_lowers_the_loss_and_leaves_tensors_on_the_device():
    model, opt, params = _parts()
    rows = _rows()
    first = TR.train_step(model, params, opt, rows, grad_accum=1, grad_clip=1.0)
    assert isinstance(first.loss, torch.Tensor) and first.loss.dim() == 0 and float(first.bad) == 0.0
    for _ in range(20):
        last = TR.train_step(model, params, opt, rows, grad_accum=1, grad_clip=1.0)
    assert float(last.loss) < float(first.loss) - 0.5
    assert all(p.grad is None for p in params)  # zeroed (set to None) after the update


def test_grad_accumulation_equals_one_big_batch():
    a, opt_a, pa = _parts()
    b, opt_b, pb = _parts()
    rows = _rows()
    out_a = TR.train_step(a, pa, opt_a, rows, grad_accum=1, grad_clip=0.0)
    out_b = TR.train_step(b, pb, opt_b, rows, grad_accum=2, grad_clip=0.0)
    assert float(out_a.loss) == pytest.approx(float(out_b.loss), rel=1e-5)
    # AdamW's first update is ~lr * g/|g|: float noise in a near-zero gradient moves an element by
    # a fraction of the lr (1e-2), so the weights agree to 1% of one step
    for x, y in zip(pa, pb):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fused", [True, False])
def test_a_non_finite_step_changes_nothing(fused):
    """A NaN loss must not reach the weights or the AdamW moments: the fused kernel skips it on
    the device (found_inf), the foreach fallback on the host."""
    model, opt, params = _parts()
    if not fused:
        opt = torch.optim.AdamW(opt.param_groups, foreach=True)
    rows = _rows()
    TR.train_step(model, params, opt, rows, 1, 1.0)  # one good step: moments exist
    before = [p.detach().clone() for p in params]
    moments = [opt.state[p]["exp_avg"].clone() for p in params]
    steps = [float(opt.state[p]["step"]) for p in params]
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")
    saved = model.lm_head.weight.detach().clone()
    out = TR.train_step(model, params, opt, rows, 1, 1.0)
    assert float(out.bad) == 1.0
    for p, b in zip(params, before):
        if p is model.lm_head.weight:
            assert torch.equal(torch.nan_to_num(p.detach()), torch.nan_to_num(saved))
        else:
            assert torch.equal(p.detach(), b)
    assert all(torch.equal(opt.state[p]["exp_avg"], m) for p, m in zip(params, moments))
    assert [float(opt.state[p]["step"]) for p in params] == steps


def test_optimizer_is_fused_where_possible():
    _, opt, _ = _parts()
    assert opt.defaults["fused"] is True  # torch 2.13 has a fused AdamW for CPU tensors


def test_train_step_makes_no_host_sync(monkeypatch):
    """Issue 8: counted on CPU, a training step (fused AdamW path) reads no tensor on the host:
    no .item(), bool(), float() or int() of a tensor and no .tolist()/.cpu()/.numpy(). The model
    runs its accelerator path (device-side id assertion, as on CUDA and under torch.compile); on
    a CPU in eager mode it checks ids on the host on purpose, where reading costs nothing."""
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    model, opt, params = _parts()
    rows = _rows()
    TR.train_step(model, params, opt, rows, 1, 1.0)  # warm-up (lazy state creation)
    calls: list[str] = []
    T = torch.Tensor
    names = ("item", "__bool__", "__float__", "__int__", "__index__", "tolist", "numpy", "cpu")
    originals = {name: T.__dict__.get(name) for name in names}  # None: inherited from TensorBase
    for name in names:
        orig = getattr(T, name)

        def spy(self, *a, _orig=orig, _name=name, **k):
            calls.append(_name)
            return _orig(self, *a, **k)

        setattr(T, name, spy)
    try:
        TR.train_step(model, params, opt, rows, 2, 1.0)
    finally:
        for name, orig in originals.items():
            if orig is None:
                delattr(T, name)
            else:
                setattr(T, name, orig)
    assert calls == [], calls


def test_batches_state_is_that_of_the_handed_out_batches():
    """With prefetching (CUDA), the saved sampler state must be the one after the batches the
    trainer consumed, not after the prefetched one: a resume must draw the same next batch."""
    tokens = np.arange(1000, dtype=np.uint16)
    shard = D.TokenShard(None, tokens, np.ones(1000, np.uint16), {})
    plain = TR.Batches(D.BatchSampler(shard, 8, 4, seed=3), torch.device("cpu"))
    pre = TR.Batches(D.BatchSampler(shard, 8, 4, seed=3), torch.device("cpu"))
    pre.prefetch = True  # as on CUDA (pinning and the copy need a GPU; the bookkeeping does not)
    for _ in range(3):
        assert torch.equal(plain.next(), pre.next())
    state = pre.state_dict()
    fresh = D.BatchSampler(shard, 8, 4, seed=0)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.next_batch(), plain.next())


def test_run_log_writes_and_calls_back(tmp_path):
    seen = []
    log = TR.RunLog(tmp_path, active=True, tensorboard=False, callback=seen.append)
    log.emit({"kind": "train", "step": 1, "loss": 2.0})
    log.emit({"kind": "eval", "step": 1, "val_bpc": 3.0})
    log.close()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == seen == log.records and len(lines) == 2
    quiet = TR.RunLog(tmp_path / "other", active=False, tensorboard=False, callback=seen.append)
    quiet.emit({"kind": "train", "step": 2})
    assert not (tmp_path / "other").exists() and len(seen) == 2  # non-zero ranks write nothing


def test_distributed_helpers_in_one_process(monkeypatch):
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    info = dist.dist_info()
    assert (info.rank, info.local_rank, info.world, info.is_main) == (0, 0, 1, True)
    order = []
    assert dist.rank0_first(info, lambda: order.append("main") or 1, lambda: order.append("other") or 2) == 1
    assert order == ["main"]
    t = torch.tensor(3.0)
    assert dist.all_reduce_mean(t, 1) is t and dist.any_rank(True, 1, torch.device("cpu"))
    assert dist.gather_objects({"a": 1}, 1) == {"a": 1}
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert not dist.dist_info().is_main


def test_dtype_and_device_resolution():
    cpu = torch.device("cpu")
    assert TR.resolve_dtype(TR.make_config(dtype="auto"), cpu) == "fp32"  # AVX2 CPUs lose with bf16
    assert TR.resolve_dtype(TR.make_config(dtype="bf16"), cpu) == "bf16"
    for bad, word in (("fp16", "fp16 is not supported"), ("float8", "use auto, fp32 or bf16")):
        with pytest.raises(ValueError, match=word):
            TR.make_config(dtype=bad).validate()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device: use device=cpu"):
            TR.resolve_device(TR.make_config(device="cuda"))
    with pytest.raises(ValueError, match="is not a device"):
        TR.resolve_device(TR.make_config(device="tpu7"))


def test_compile_without_a_compiler_names_compile_false(monkeypatch):
    monkeypatch.setattr(TR.shutil, "which", lambda name: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="use compile=false"):
        TR.compile_model(SimpleNamespace())
