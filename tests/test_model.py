"""bvvlab.models.model: equivalence with Llama and with the uncached / unchunked computation, the
frozen buffer, generation, and one-line errors (issue 4). Tiny shapes: seconds on one thread."""

from __future__ import annotations

import json
import threading

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, TextIteratorStreamer

from bvvlab.glyph.tokenizer import bvv241_vocab, compact_vocab, hf_tokenizer
from bvvlab.models.checkpoints import load_checkpoint, save_checkpoint
from bvvlab.models.model import (
    PRESETS,
    BVVConfig,
    BVVForCausalLM,
    FrozenEmbedding,
    RMSNorm,
    Rotary,
    apply_rotary,
    chunked_cross_entropy,
    config_from_preset,
    count_parameters,
    matrix_sha256,
    rotary_qkv,
    to_llama,
)

TEXTS = ["Hello, world! The quick brown fox.", "Привет, мир! Съешь же ещё этих мягких булок."]


@pytest.fixture(scope="module")
def tok():
    """A real bvv241 tokenizer, compacted to the characters of TEXTS (lossless, ~300 tokens)."""
    tokens, _ = compact_vocab(bvv241_vocab(65536, []), TEXTS)
    return hf_tokenizer(tokens, [])


def fake_glyphs(vocab: int, dim: int, seed: int = 0) -> torch.Tensor:
    """Stand-in for the glyph matrix: unit-norm rows like the recipe's (section 3, step 7)."""
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(vocab, dim, generator=g), dim=-1)


def tiny(tok=None, seed: int = 0, **overrides) -> BVVForCausalLM:
    torch.manual_seed(seed)
    vocab = len(tok) if tok is not None else PRESETS["tiny"]["vocab_size"]
    ids = {} if tok is None else dict(pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                      eos_token_id=tok.eos_token_id)
    cfg = config_from_preset("tiny", vocab_size=vocab, **ids, **overrides)
    model = BVVForCausalLM.from_glyphs(cfg, fake_glyphs(vocab, cfg.hidden_size, seed))
    with torch.no_grad():  # non-trivial norm gains, so a mapping that dropped them would show
        for name, p in model.named_parameters():
            if "ln" in name:
                p.uniform_(0.5, 1.5)
    return model.eval()


# ---------------------------------------------------------------- architecture ------------

def test_llama_equivalence_logits_hidden_states_and_padding():
    """RMSNorm + SwiGLU is LlamaForCausalLM after the weight mapping (issue 4: within 1e-5)."""
    model = tiny(norm_type="rmsnorm", mlp_type="swiglu")
    llama = to_llama(model).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 23), generator=torch.Generator().manual_seed(1))
    ours, ref = model(ids, output_hidden_states=True), llama(ids, output_hidden_states=True)
    assert (ours.logits - ref.logits).abs().max() < 1e-5
    assert len(ours.hidden_states) == len(ref.hidden_states) == model.config.num_hidden_layers + 1
    for a, b in zip(ours.hidden_states, ref.hidden_states):
        assert (a - b).abs().max() < 1e-5
    mask = torch.ones_like(ids)
    mask[1, :5] = 0  # left padding in row 1
    ours, ref = model(ids, attention_mask=mask), llama(ids, attention_mask=mask)
    assert (ours.logits[mask.bool()] - ref.logits[mask.bool()]).abs().max() < 1e-5


def test_llama_equivalence_of_the_training_loss_and_gradients():
    model = tiny(norm_type="rmsnorm", mlp_type="swiglu").train()
    llama = to_llama(model).train()
    ids = torch.randint(0, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(2))
    ours, ref = model(ids, labels=ids), llama(ids, labels=ids)
    assert abs(ours.loss.item() - ref.loss.item()) < 1e-5
    ours.loss.backward()
    ref.loss.backward()
    assert (model.lm_head.weight.grad - llama.lm_head.weight.grad).abs().max() < 1e-6
    q_grad = model.model.blocks[0].attn.qkv_proj.weight.grad.chunk(3)[0]
    assert (q_grad - llama.model.layers[0].self_attn.q_proj.weight.grad).abs().max() < 1e-6


def test_fused_rotary_split_matches_the_textbook_rotation_and_its_gradients():
    """rotary_qkv (q, k rotated into one buffer, a hand-written backward) gives apply_rotary's
    q, k, v and input gradients, for consecutive positions and for per-row position ids."""
    B, T, H, hd = 3, 17, 4, 16
    rot = Rotary(hd, 10000.0, 64)
    g = torch.Generator().manual_seed(12)
    grads = [torch.randn(B, H, T, hd, generator=g) for _ in range(3)]
    for pos in (None, torch.randint(0, 60, (B, T), generator=g)):
        cos, sin = rot(pos, 5, T, "cpu", torch.float32)
        x = torch.randn(B, T, 3 * H * hd, generator=g, requires_grad=True)
        got = rotary_qkv(x, cos, sin, H)
        (got_grad,) = torch.autograd.grad(got, x, grads)
        x5 = x.view(B, T, 3, H, hd)
        q, k = apply_rotary(x5[:, :, :2], cos, sin).unbind(2)
        ref = (q.transpose(1, 2), k.transpose(1, 2), x5[:, :, 2].transpose(1, 2))
        (ref_grad,) = torch.autograd.grad(ref, x, grads)
        for a, b in zip(got, ref):
            assert a.shape == (B, H, T, hd) and (a - b).abs().max() < 1e-6
        assert (got_grad - ref_grad).abs().max() < 1e-6
        with torch.no_grad():  # the inference path (no autograd function) gives the same numbers
            assert all(torch.equal(a, b) for a, b in zip(rotary_qkv(x, cos, sin, H), got))


def test_fp32_rmsnorm_fast_path_is_llamas_formula_bit_for_bit():
    """RMSNorm takes F.rms_norm in fp32 (fewer ops per decoding step); values and gradients must
    be exactly LlamaRMSNorm's x * rsqrt(mean(x^2) + eps) * weight, not merely close."""
    norm = RMSNorm(48, 1e-5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = (torch.randn(3, 7, 48, generator=torch.Generator().manual_seed(3)) * 4).requires_grad_()
    ref = norm.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5))
    got = norm(x)
    assert torch.equal(got, ref)
    g = torch.randn_like(ref)
    assert all(torch.equal(a, b) for a, b in zip(torch.autograd.grad(got, (x, norm.weight), g),
                                                  torch.autograd.grad(ref, (x, norm.weight), g)))


def test_default_architecture_matches_the_recipe_parameter_count():
    """Recipe section 4: 12*d^2 per layer (attention 4d^2 + 4x GELU MLP), no biases, no
    learned positions, an untied head; best_bvv_ru is ~0.47B with 134M frozen."""
    with torch.device("meta"):  # no memory, no init: just the shapes
        model = BVVForCausalLM(config_from_preset("best_bvv_ru"))
    d, L, V = 1024, 16, 131072
    counts = count_parameters(model)
    assert counts["frozen"] == V * d == 134_217_728
    assert counts["trainable"] == L * (12 * d * d + 2 * d) + d + V * d  # blocks + norm gains + ln_f + head
    assert counts["total"] == 469_795_840
    assert not any(name.endswith("bias") for name, _ in model.named_parameters())
    assert model.lm_head.weight is not model.model.embed_tokens.weight


def test_parameter_table_is_generated_from_the_models():
    from bvvlab.models.model import parameter_table

    table = parameter_table(["best_bvv_ru", "tiny"])
    assert "| best_bvv_ru | 16 | 1024 | 32 | 1024 | 131,072 | 335,578,112 | 134,217,728 | 469,795,840 (469.8M) |" in table
    tiny_counts = count_parameters(BVVForCausalLM(config_from_preset("tiny")))
    assert f"| {tiny_counts['trainable']:,} | {tiny_counts['frozen']:,} | {tiny_counts['total']:,} " in table


def test_eager_attention_weights_are_causal_and_match_sdpa():
    model = tiny()
    ids = torch.randint(0, model.config.vocab_size, (2, 11), generator=torch.Generator().manual_seed(3))
    fused = model(ids)
    eager = model(ids, output_attentions=True)
    assert (fused.logits - eager.logits).abs().max() < 1e-5
    assert len(eager.attentions) == model.config.num_hidden_layers
    w = eager.attentions[0]
    assert w.shape == (2, model.config.num_attention_heads, 11, 11)
    assert torch.allclose(w.sum(-1), torch.ones(2, model.config.num_attention_heads, 11), atol=1e-6)
    assert w.triu(1).abs().max() == 0  # nothing attends to the future


def test_hidden_states_and_lens_accessors():
    """n_layers + 1 states: the embedding output first, the last one after ln_f (HF convention),
    so the logit lens `get_output_embeddings()(state)` on the last state gives the logits."""
    model = tiny()
    ids = torch.randint(0, model.config.vocab_size, (1, 9), generator=torch.Generator().manual_seed(4))
    out = model(ids, output_hidden_states=True)
    states = out.hidden_states
    assert len(states) == model.config.num_hidden_layers + 1
    emb = model.get_input_embeddings()
    assert torch.equal(states[0], emb(ids)) and torch.equal(states[0], emb.weight[ids])
    assert torch.allclose(model.get_output_embeddings()(states[-1]), out.logits, atol=1e-6)
    assert model.get_output_embeddings().weight.shape == (model.config.vocab_size, model.config.hidden_size)
    block_out = model.model.blocks[0](states[0], *model.model.rotary(None, 0, 9, ids.device, torch.float32))[0]
    assert torch.allclose(block_out, states[1], atol=1e-6)


# ---------------------------------------------------------------- frozen / unfrozen -------

def test_frozen_matrix_is_a_buffer_that_training_never_touches():
    glyphs = fake_glyphs(PRESETS["tiny"]["vocab_size"], PRESETS["tiny"]["hidden_size"], seed=5)
    model = BVVForCausalLM.from_glyphs(config_from_preset("tiny"), glyphs).train()
    emb = model.model.embed_tokens
    assert isinstance(emb, FrozenEmbedding) and torch.equal(emb.weight, glyphs)
    assert "model.embed_tokens.weight" in model.state_dict()
    assert all(p is not emb.weight for p in model.parameters())
    assert model.config.embedding_hash == matrix_sha256(glyphs)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(5))
    head_before = model.lm_head.weight.detach().clone()
    for _ in range(2):
        model(ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    assert torch.equal(emb.weight, glyphs)  # bit-exact after training
    assert not torch.equal(model.lm_head.weight, head_before)  # while the head did train
    assert count_parameters(model)["frozen"] == glyphs.numel()


def test_unfrozen_embedding_is_trainable_random_or_glyph_initialised():
    glyphs = fake_glyphs(512, 64, seed=6)
    rand = BVVForCausalLM.from_glyphs(config_from_preset("tiny", frozen_embedding=False), glyphs)
    assert isinstance(rand.model.embed_tokens, torch.nn.Embedding)
    assert rand.model.embed_tokens.weight.requires_grad and rand.model.embed_tokens.weight.shape == glyphs.shape
    assert not torch.allclose(rand.model.embed_tokens.weight, glyphs)
    counts = count_parameters(rand)
    assert counts["frozen"] == 0 and counts["trainable"] == count_parameters(tiny())["total"]
    init = BVVForCausalLM.from_glyphs(config_from_preset("tiny", frozen_embedding=False, embedding_init="glyph"),
                                      glyphs)
    assert torch.equal(init.model.embed_tokens.weight.detach(), glyphs)
    assert init.config.embedding_hash == matrix_sha256(glyphs)


def test_embedding_hash_is_the_embeddings_module_hash():
    """config.embedding_hash and Embedded.matrix_hash name a matrix the same way (fusion checks)."""
    from bvvlab.glyph.embeddings import matrix_hash

    glyphs = fake_glyphs(100, 32, seed=11)
    assert matrix_sha256(glyphs) == matrix_hash(glyphs)
    assert matrix_sha256(glyphs) != matrix_sha256(glyphs[:99])


# ---------------------------------------------------------------- chunked loss ------------

def test_chunked_cross_entropy_equals_the_full_logits_loss():
    """Same loss and gradients as F.cross_entropy over the full logits, with ignored labels,
    several chunks, a token-count denominator, and without gradients (evaluation)."""
    g = torch.Generator().manual_seed(7)
    hidden = torch.randn(3, 10, 16, generator=g, requires_grad=True)
    weight = torch.randn(50, 16, generator=g, requires_grad=True)
    labels = torch.randint(0, 50, (3, 10), generator=g)
    labels[1, 4:7] = -100

    def full(h, w, n=None):
        logits = h @ w.T
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, 50), labels[:, 1:].reshape(-1), ignore_index=-100,
                               reduction="sum" if n else "mean")
        return loss / n if n else loss

    for n in (None, 40):
        ref = full(hidden, weight, n)
        ref_grads = torch.autograd.grad(ref, (hidden, weight))
        got = chunked_cross_entropy(hidden, weight, labels, chunk=7, num_items_in_batch=n)
        got_grads = torch.autograd.grad(got * 3.0, (hidden, weight))  # a non-unit upstream gradient
        assert abs(got.item() - ref.item()) < 1e-5
        for a, b in zip(got_grads, ref_grads):
            assert (a - 3.0 * b).abs().max() < 1e-5
    with torch.no_grad():
        assert abs(chunked_cross_entropy(hidden, weight, labels, chunk=4).item() - full(hidden, weight).item()) < 1e-5


def test_chunked_cross_entropy_is_exact_for_confident_predictions():
    """The log-sum-exp is taken from the largest softmax probability (>= 1/V, never 0), so logits
    hundreds apart (target probabilities far below fp32's smallest) still give F.cross_entropy's
    loss and gradients, and the default chunk size (256 tokens) splits a longer sequence."""
    g = torch.Generator().manual_seed(11)
    hidden = (200 * torch.randn(2, 300, 8, generator=g)).requires_grad_()
    weight = torch.randn(40, 8, generator=g, requires_grad=True)
    labels = torch.randint(0, 40, (2, 300), generator=g)
    logits = hidden @ weight.T
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, 40), labels[:, 1:].reshape(-1))
    assert ref.item() > 100  # wrong targets sit hundreds of nats down: exp(-100) is 0 in fp32
    got = chunked_cross_entropy(hidden, weight, labels)
    assert abs(got.item() - ref.item()) / ref.item() < 1e-6
    for a, b in zip(torch.autograd.grad(got, (hidden, weight)), torch.autograd.grad(ref, (hidden, weight))):
        assert (a - b).abs().max() <= 1e-5 * b.abs().max()


def test_forward_with_labels_skips_logits_unless_asked():
    model = tiny()
    ids = torch.randint(0, 512, (2, 12), generator=torch.Generator().manual_seed(8))
    plain = model(ids, labels=ids)
    both = model(ids, labels=ids, return_logits=True)
    assert plain.logits is None and both.logits is not None
    ref = F.cross_entropy(both.logits[:, :-1].reshape(-1, 512), ids[:, 1:].reshape(-1))
    assert abs(plain.loss.item() - ref.item()) < 1e-5


def test_gradient_checkpointing_gives_the_same_gradients():
    model = tiny().train()
    ids = torch.randint(0, 512, (2, 12), generator=torch.Generator().manual_seed(9))
    model(ids, labels=ids).loss.backward()
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.activation_checkpointing_enable()
    model(ids, labels=ids).loss.backward()
    assert all(torch.allclose(p.grad, r, atol=1e-6) for p, r in zip(model.parameters(), ref))


# ---------------------------------------------------------------- generation --------------

def test_kv_cache_is_used_and_matches_the_uncached_computation(tok):
    model = tiny(tok)
    lengths = []
    hook = model.model.register_forward_pre_hook(lambda m, args, kw: lengths.append(
        (kw.get("input_ids") if kw.get("input_ids") is not None else args[0]).shape[1]), with_kwargs=True)
    ids = tok("Hello, мир", return_tensors="pt")
    kw = dict(max_new_tokens=12, do_sample=False, output_logits=True, return_dict_in_generate=True)
    cached = model.generate(**ids, **kw)
    cached_lengths, lengths[:] = list(lengths), []
    uncached = model.generate(**ids, use_cache=False, **kw)
    hook.remove()
    n = ids["input_ids"].shape[1]
    assert cached_lengths == [n] + [1] * 11  # prefill, then one token per step: the cache is used
    assert lengths == list(range(n, n + 12))  # the uncached run re-reads the whole sequence
    assert torch.equal(cached.sequences, uncached.sequences)
    for a, b in zip(cached.logits, uncached.logits):
        assert (a - b).abs().max() < 1e-5
    # and a manual incremental forward against the full forward
    seq = cached.sequences
    step = model(seq[:, :-3], use_cache=True)
    more = model(seq[:, -3:], cache=step.cache)
    full = model(seq).logits
    assert (more.logits - full[:, -3:]).abs().max() < 1e-5


def test_sampling_is_seeded_and_top_k_1_is_greedy(tok):
    model = tiny(tok)
    ids = tok("Hello", return_tensors="pt")
    kw = dict(max_new_tokens=16, do_sample=True, temperature=0.8, top_k=50, top_p=0.95, repetition_penalty=1.3)
    torch.manual_seed(0)
    a = model.generate(**ids, **kw)
    torch.manual_seed(0)
    b = model.generate(**ids, **kw)
    torch.manual_seed(1)
    c = model.generate(**ids, **kw)
    assert torch.equal(a, b) and not torch.equal(a, c)
    greedy = model.generate(**ids, max_new_tokens=16, do_sample=False)
    assert torch.equal(model.generate(**ids, max_new_tokens=16, do_sample=True, top_k=1), greedy)


def test_streaming_yields_the_generated_text(tok):
    model = tiny(tok)
    ids = tok("Hello", return_tensors="pt")
    streamer = TextIteratorStreamer(tok, skip_prompt=True)
    out = {}
    thread = threading.Thread(target=lambda: out.update(seq=model.generate(**ids, max_new_tokens=20, do_sample=False,
                                                                            streamer=streamer)))
    thread.start()
    pieces = list(streamer)
    thread.join()
    assert len(pieces) >= 1
    assert "".join(pieces) == tok.decode(out["seq"][0, ids["input_ids"].shape[1]:])


def test_left_padded_batch_continues_like_single_prompts(tok):
    model = tiny(tok)
    tok.padding_side = "left"
    prompts = ["Hello", "Привет, мир! Съешь"]
    batch = tok(prompts, return_tensors="pt", padding=True)
    assert batch["attention_mask"][0, 0] == 0  # really padded
    together = model.generate(**batch, max_new_tokens=10, do_sample=False)[:, batch["input_ids"].shape[1]:]
    for row, prompt in enumerate(prompts):
        single = tok(prompt, return_tensors="pt")
        alone = model.generate(**single, max_new_tokens=10, do_sample=False)[0, single["input_ids"].shape[1]:]
        assert torch.equal(together[row], alone)


# ---------------------------------------------------------------- checkpoints -------------

def test_save_and_load_round_trip_is_exact(tok, tmp_path):
    model = tiny(tok)
    out = save_checkpoint(model, tok, tmp_path / "ck", {"note": "test"})
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.py", "model.safetensors", "generation_config.json", "meta.json",
            "tokenizer.json", "tokenizer_config.json"} <= names
    loaded, tok2 = load_checkpoint(out)
    assert isinstance(loaded, BVVForCausalLM) and not loaded.training
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    assert isinstance(loaded.model.embed_tokens, FrozenEmbedding)
    assert not any(p is loaded.model.embed_tokens.weight for p in loaded.parameters())
    ids = tok(TEXTS[1], return_tensors="pt")
    assert torch.equal(model(**ids).logits, loaded(**ids).logits)  # rotary tables are not garbage
    assert tok2(TEXTS[1])["input_ids"] == ids["input_ids"][0].tolist()
    # inside bvvlab the Auto classes know "bvv" natively: no remote code, real class
    auto = AutoModelForCausalLM.from_pretrained(out)
    assert type(auto) is BVVForCausalLM
    with pytest.raises(FileExistsError, match="not empty"):
        save_checkpoint(model, tok, out, {})
    half, _ = load_checkpoint(out, dtype=torch.bfloat16)  # the hash is checked before the cast
    assert half.lm_head.weight.dtype == torch.bfloat16


# ---------------------------------------------------------------- bad input ---------------

def test_heads_must_divide_hidden_size():
    with pytest.raises(ValueError, match="num_attention_heads=5 does not divide hidden_size=64"):
        BVVConfig(hidden_size=64, num_attention_heads=5)


def test_unknown_preset_and_non_2d_mask_are_refused():
    with pytest.raises(ValueError, match="unknown model preset 'huge'; choose one of best_bvv_ru"):
        config_from_preset("huge")
    model = tiny()
    ids = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="attention_mask must be 2-D"):
        model(ids, attention_mask=torch.ones(1, 1, 4, 4))


def test_out_of_range_ids_raise_one_clear_line():
    model = tiny()
    with pytest.raises(ValueError, match=r"token id 512 is out of range: the model's vocab_size is 512"):
        model(torch.tensor([[1, 2, 512]]))
    with pytest.raises(ValueError, match="token id -1 is out of range"):
        model(torch.tensor([[-1, 2]]))


def test_prompt_longer_than_the_context_is_refused():
    model = tiny()
    ctx = model.config.max_position_embeddings
    with pytest.raises(ValueError, match=f"longer than the context max_position_embeddings={ctx}"):
        model(torch.zeros(1, ctx + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="longer than the context"):
        model.generate(torch.zeros(1, ctx - 2, dtype=torch.long), max_new_tokens=5, do_sample=False)


def test_matrix_shape_must_match_the_config():
    with pytest.raises(ValueError, match="glyph matrix has 500 rows but vocab_size is 512"):
        BVVForCausalLM.from_glyphs(config_from_preset("tiny"), fake_glyphs(500, 64))
    with pytest.raises(ValueError, match="glyph matrix has dimension 32 but hidden_size is 64"):
        BVVForCausalLM.from_glyphs(config_from_preset("tiny"), fake_glyphs(512, 32))


def test_checkpoint_whose_matrix_does_not_match_its_tokenizer(tok, tmp_path):
    model = tiny(tok)
    with pytest.raises(ValueError, match=f"tokenizer has {len(tok)} tokens but the model's vocab_size is 512"):
        save_checkpoint(tiny(), tok, tmp_path / "bad", {})
    assert not (tmp_path / "bad").exists()  # nothing written
    out = save_checkpoint(model, tok, tmp_path / "ck", {})
    # another tokenizer dropped into the directory (e.g. copied from another run)
    small = hf_tokenizer(compact_vocab(bvv241_vocab(65536, []), ["abc"])[0], [])
    small.save_pretrained(out)
    with pytest.raises(ValueError, match="tokenizer.json.* differ from the digests"):  # the file digests see it
        load_checkpoint(out)
    _drop_digests(out)  # a checkpoint written before digests existed: the size check still sees it
    with pytest.raises(ValueError, match=f"tokenizer has {len(small)} tokens but the embedding matrix has "
                                         f"{len(tok)} rows"):
        load_checkpoint(out)


def _drop_digests(out):
    meta = json.loads((out / "meta.json").read_text())
    del meta["files"]
    (out / "meta.json").write_text(json.dumps(meta))


def test_altered_frozen_matrix_fails_the_hash_check(tok, tmp_path):
    from safetensors.torch import load_file, save_file

    out = save_checkpoint(tiny(tok), tok, tmp_path / "ck", {})
    sd = load_file(out / "model.safetensors")
    sd["model.embed_tokens.weight"][3, 0] += 1e-3
    save_file(sd, out / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="model.safetensors differ from the digests"):
        load_checkpoint(out)
    _drop_digests(out)  # without digests (an older checkpoint) the frozen-matrix hash still catches it
    with pytest.raises(ValueError, match="does not match config embedding_hash"):
        load_checkpoint(out)


def test_generate_refuses_an_empty_prompt_and_a_run_past_the_context():
    """Issue 10: an empty prompt was an IndexError/reshape error in the forward, and a prompt plus
    max_new_tokens past the context failed only after generating (the output lost)."""
    model = tiny().eval()
    with pytest.raises(ValueError, match="the prompt is empty"):
        model.generate(input_ids=torch.zeros((1, 0), dtype=torch.long), max_new_tokens=3)
    ctx = model.config.max_position_embeddings
    with pytest.raises(ValueError, match=rf"longer than the context of {ctx} tokens: use max_new_tokens<=8"):
        model.generate(input_ids=torch.ones((1, ctx - 8), dtype=torch.long), max_new_tokens=20, do_sample=False)
    out = model.generate(input_ids=torch.ones((1, ctx - 8), dtype=torch.long), max_new_tokens=8, do_sample=False)
    assert out.shape == (1, ctx)  # exactly up to the context is fine
