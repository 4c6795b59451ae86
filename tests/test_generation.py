"""bvvlab.models.generation (issue 15): the stream gives `model.generate`'s text for the same seed and
settings (greedy and sampling, bvv and Llama), cached = uncached, byte-fallback characters
appear whole, stop strings, Stop between steps, side-by-side draws the same random numbers, and
one-line refusals of bad settings. Tiny untrained models: seconds on one thread."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
import torch
from _gen_fixtures import PROMPT, TEXTS, fused_checkpoint, model, tiny, tok  # noqa: F401  (fixtures)

from bvvlab.core.errors import BVVError
from bvvlab.models import generation as G
from bvvlab.models.model import to_llama


def utf8_text(tok, ids: list[int]) -> str:
    """The text of generated ids, independently: byte tokens as bytes, other tokens as their
    (literal bvv241) text, special tokens dropped (decode of the one id), decoded as UTF-8 with U+FFFD per bad byte."""
    out = b""
    for i, t in zip(ids, tok.convert_ids_to_tokens(ids)):
        if len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
            out += bytes([int(t[3:5], 16)])
        else:
            out += tok.decode([i], skip_special_tokens=True).encode()
    return out.decode("utf-8", errors="replace")


def reference(model, tok, prompt: str, settings: G.GenerationSettings) -> list[int]:
    """What `model.generate` gives for the same settings, seeded as the docs say."""
    ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
    torch.manual_seed(settings.seed)
    out = model.generate(ids, attention_mask=torch.ones_like(ids), pad_token_id=tok.pad_token_id,
                         **settings.generate_kwargs())
    return out[0, ids.shape[1]:].tolist()


SAMPLING = G.GenerationSettings(temperature=1.3, top_k=40, top_p=0.9, repetition_penalty=1.2, max_new_tokens=24, seed=7)
GREEDY = G.GenerationSettings(temperature=0, repetition_penalty=1.3, max_new_tokens=24)


@pytest.mark.parametrize("settings", [GREEDY, SAMPLING], ids=["greedy", "sampling"])
def test_stream_equals_model_generate(model, tok, settings):
    stream = G.generate_text(model, tok, PROMPT, settings)
    ref = reference(model, tok, PROMPT, settings)
    assert stream.ids == ref
    assert stream.text == utf8_text(tok, ref)
    assert stream.finish_reason in ("length", "eos")


def test_stream_equals_generate_for_a_plain_hf_causal_lm(tok):
    """Any HF causal LM: LlamaForCausalLM (the same function as an RMSNorm+SwiGLU bvv model)."""
    llama = to_llama(tiny(tok, seed=1, norm_type="rmsnorm", mlp_type="swiglu")).eval()
    llama.generation_config.eos_token_id = tok.eos_token_id
    for settings in (GREEDY, SAMPLING):
        assert G.generate_text(llama, tok, PROMPT, settings).ids == reference(llama, tok, PROMPT, settings)


def test_sampling_actually_depends_on_the_seed(model, tok):
    """(so that the equality above is not two greedy runs in disguise)"""
    a = G.generate_text(model, tok, PROMPT, SAMPLING).ids
    b = G.generate_text(model, tok, PROMPT, G.GenerationSettings(**{**SAMPLING.__dict__, "seed": 8})).ids
    assert a != b
    assert a == G.generate_text(model, tok, PROMPT, SAMPLING).ids


def test_cached_equals_uncached(model, tok):
    s = G.GenerationSettings(temperature=0.9, top_k=0, top_p=1.0, max_new_tokens=20, seed=3)
    cached = list(G.Stream(model, tok, PROMPT, s))
    plain = list(G.Stream(model, tok, PROMPT, s, use_cache=False))
    assert [st.token_id for st in cached] == [st.token_id for st in plain]
    for a, b in zip(cached, plain):
        assert [i for i, _, _ in a.top] == [i for i, _, _ in b.top]
        assert torch.allclose(torch.tensor([p for *_, p in a.top]), torch.tensor([p for *_, p in b.top]), atol=1e-5)


def test_top_distribution_is_the_models_softmax(model, tok):
    s = G.GenerationSettings(temperature=0, max_new_tokens=1, show_top=5)
    step = next(iter(G.Stream(model, tok, PROMPT, s)))
    ids = torch.tensor([tok(PROMPT, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        probs = torch.softmax(model(ids).logits[0, -1].float(), -1)
    p, i = probs.topk(5)
    assert [t for t, _, _ in step.top] == i.tolist() and step.token_id == i[0].item()
    assert torch.allclose(torch.tensor([q for *_, q in step.top]), p, atol=1e-6)
    assert step.top[0][1] == tok.convert_ids_to_tokens(step.token_id)


class Scripted(torch.nn.Module):
    """A causal LM that emits a fixed continuation (greedy): logits favour script[t - prompt]."""

    def __init__(self, script: list[int], vocab: int, prompt_len: int):
        super().__init__()
        self.script, self.vocab, self.prompt_len = script, vocab, prompt_len
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(max_position_embeddings=64, eos_token_id=None)

    def forward(self, input_ids, past_key_values=None, use_cache=True, return_dict=True, **kw):  # the pre-5.24 name
        total = input_ids.shape[1] + (past_key_values.get_seq_length() if past_key_values is not None else 0)
        if past_key_values is not None:  # keep the cache length honest
            k = torch.zeros(1, 1, input_ids.shape[1], 2)
            past_key_values.update(k, k, 0)
        logits = torch.zeros(1, input_ids.shape[1], self.vocab)
        logits[0, -1, self.script[min(total - self.prompt_len, len(self.script) - 1)]] = 10.0
        return SimpleNamespace(logits=logits)


def scripted(tok, tokens: list[str], prompt: str = "H"):
    ids = tok.convert_tokens_to_ids(tokens)
    return Scripted(ids, len(tok), len(tok(prompt, add_special_tokens=False)["input_ids"]))


def test_byte_fallback_character_appears_once_whole(tok):
    assert "€" not in "".join(TEXTS)  # so it is spelt with byte tokens
    euro = tok.convert_ids_to_tokens(tok("€", add_special_tokens=False)["input_ids"])
    assert euro == ["<0xE2>", "<0x82>", "<0xAC>"]
    script = ["H"] + euro + ["e"] + euro
    steps = list(G.Stream(scripted(tok, script), tok, "H", G.GenerationSettings(temperature=0, max_new_tokens=8)))
    assert [s.piece for s in steps] == ["H", "", "", "€", "e", "", "", "€"]
    assert steps[-1].text == "H€e€" == tok.decode(tok.convert_tokens_to_ids(script))
    assert all("\ufffd" not in s.text for s in steps)


def test_unfinished_character_at_the_end_is_flushed(tok):
    steps = list(G.Stream(scripted(tok, ["e", "<0xE2>", "<0x82>"]), tok, "H",
                          G.GenerationSettings(temperature=0, max_new_tokens=3)))
    assert [s.piece for s in steps] == ["e", "", "\ufffd"]


def test_a_bad_byte_after_a_whole_character_does_not_take_it_back(tok):
    """<0xD0><0xBC> is "м"; a lone <0xA1> after it is one U+FFFD. (The tokenizer's decode makes the
    whole byte run "\ufffd" x 3, which once stalled the stream: nothing shown after "м".)"""
    script = ["<0xD0>", "<0xBC>", "<0xA1>", "U", "[USER]", "<0xD0>", "<0xBC>", "e"]
    steps = list(G.Stream(scripted(tok, script), tok, "H", G.GenerationSettings(temperature=0, max_new_tokens=8)))
    assert [s.piece for s in steps] == ["", "м", "\ufffd", "U", "", "", "м", "e"]  # a bad byte shows at once
    assert steps[-1].text == "м\ufffdUмe" == utf8_text(tok, tok.convert_tokens_to_ids(script))


def test_stop_string_split_over_tokens_ends_the_stream(tok):
    script = ["H", "e", "l", "l", "o", "!", "x", "y"]
    stream = G.Stream(scripted(tok, script), tok, "H",
                      G.GenerationSettings(temperature=0, max_new_tokens=8, stop=("llo",)))
    steps = list(stream)
    assert [s.token for s in steps] == ["H", "e", "l", "l", "o"]
    assert stream.finish_reason == "stop string" and stream.text == "Hello"


def test_stop_between_steps_also_from_another_thread(model, tok):
    s = G.GenerationSettings(temperature=0.8, max_new_tokens=50, seed=1)
    stream = G.Stream(model, tok, PROMPT, s)
    got = []
    for step in stream:
        got.append(step)
        if len(got) == 3:
            threading.Thread(target=stream.stop).start()
            threading.Event().wait(0.05)
    assert len(got) in (3, 4) and stream.finish_reason == "stopped"  # ends before the next step
    assert [g.token_id for g in got] == G.generate_text(model, tok, PROMPT, s).ids[:len(got)]


def test_side_by_side_models_draw_the_same_random_numbers(model, tok):
    other = tiny(tok, seed=5, frozen_embedding=False)
    s = G.GenerationSettings(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=12, seed=11)
    pair = G.SideBySide([(model, tok), (other, tok)], PROMPT, s)
    rows = list(pair)
    a = [r[0].token_id for r in rows if r[0] is not None]
    b = [r[1].token_id for r in rows if r[1] is not None]
    assert a == G.generate_text(model, tok, PROMPT, s).ids and b == G.generate_text(other, tok, PROMPT, s).ids
    assert a != b  # different models ...
    if len(a) == len(b):  # ... and the same draws: each generator is where the other one is
        assert torch.equal(pair.streams[0].generator.get_state(), pair.streams[1].generator.get_state())
    assert not torch.equal(pair.streams[0].generator.get_state(), G.new_generator(11).get_state())


def test_prompt_edge_cases(model, tok):
    empty = G.Stream(model, tok, "", GREEDY)
    assert empty.prompt.ids == [tok.bos_token_id] and "BOS" in empty.prompt.notes[0]
    assert len(empty.run().ids) >= 1
    long_prompt = "Hello, world! " * 20  # 280 tokens > context 128
    s = G.GenerationSettings(temperature=0, max_new_tokens=8)
    stream = G.Stream(model, tok, long_prompt, s)
    assert len(stream.prompt.ids) == 120 and "kept its last 120" in stream.prompt.notes[0]
    assert stream.prompt.ids == tok(long_prompt, add_special_tokens=False)["input_ids"][-120:]
    assert len(stream.run().ids) == 8
    with pytest.raises(BVVError, match="max_new_tokens=128 leaves no room"):
        G.Stream(model, tok, "Hi", G.GenerationSettings(max_new_tokens=128))
    no_bos = SimpleNamespace(bos_token_id=None)
    with pytest.raises(BVVError, match="no BOS token"):
        G.encode_prompt(no_bos, "", 4, 128)


@pytest.mark.parametrize("bad, message", [
    (dict(top_p=0), r"top_p=0: must be in \(0, 1\]"), (dict(top_p=1.5), "top_p=1.5"),
    (dict(top_k=-1), "top_k=-1: must be >= 0"), (dict(temperature=-0.1), "temperature=-0.1: must be >= 0"),
    (dict(max_new_tokens=0), "max_new_tokens=0"), (dict(repetition_penalty=0), "repetition_penalty=0"),
    (dict(top_k=2.5), "top_k=2.5: expected an integer"), (dict(temperature="hot"), "expected a number"),
])
def test_bad_settings_are_one_line(bad, message):
    with pytest.raises(BVVError, match=message) as e:
        G.GenerationSettings(**bad)
    assert "\n" not in str(e.value)


def test_settings_from_refuses_unknown_names():
    assert G.settings_from(temperature=0, stop=["\n"]).stop == ("\n",)
    with pytest.raises(BVVError, match="unknown generation setting"):
        G.settings_from(temprature=1)


@pytest.fixture(scope="module")
def fused_dir(tok, tmp_path_factory):
    return fused_checkpoint(tok, tmp_path_factory.mktemp("fusion"))


@pytest.mark.parametrize("settings", [GREEDY, SAMPLING], ids=["greedy", "sampling"])
def test_stream_on_a_fused_checkpoint_equals_its_generate(tok, fused_dir, settings):
    """A checkpoint written by `bvvlab.train.fusion.fuse` (two experts of different depth), loaded back:
    the stream (KV cache through each expert's cache) gives its `generate`'s tokens, and the
    cached stream equals the uncached one."""
    from bvvlab.models.loader import load_fused

    fused, ftok = load_fused(fused_dir)
    assert type(fused).__name__ == "FusedForCausalLM" and len(fused.experts) == 2
    stream = G.generate_text(fused, ftok, PROMPT, settings)
    assert stream.ids == reference(fused, ftok, PROMPT, settings)
    assert stream.text == utf8_text(ftok, stream.ids) and len(stream.ids) > 0
    assert G.generate_text(fused, ftok, PROMPT, settings, use_cache=False).ids == stream.ids
