"""Streaming generation, one token at a time (no widgets: the widgets are views over it).

`Stream(model, tokenizer, prompt, settings)` is an iterator of `Step`s: the new token id, its
text piece and the model's top-k next-token distribution of that step. Why not
`model.generate(streamer=...)`: a streamer sees ids only, not the distribution, and cannot stop
generation between steps without a stopping criterion polled from another thread.

Same text as `model.generate` with the same settings (tests/test_generation.py proves it for
greedy and seeded sampling): the scores go through the same transformers processors in the same
order (`GenerationMixin._get_logits_processor`: repetition penalty, then temperature, top-k,
top-p), the token is `argmax` (temperature 0) or `torch.multinomial` of their softmax. The one
difference is the random source: a `torch.Generator` per stream seeded with `settings.seed`,
which draws the numbers the global generator draws after `torch.manual_seed(seed)`, so two
models side by side draw the same random numbers without sharing (and racing for) one.

* KV cache: one prefill of the prompt, then one token per forward (a `DynamicCache`);
  `use_cache=False` recomputes the whole sequence each step (the reference in the tests).
* Text pieces are whole UTF-8 only: a character split over byte-fallback tokens (`<0xE2>`
  `<0x82>` `<0xAC>` = "€") appears with its last byte (vLLM's incremental detokenizer: decode a
  window of recent ids, emit only what is new and does not end in U+FFFD).
* Works for any model with the Hugging Face causal-LM forward (`input_ids`, `past_key_values`,
  `.logits`): bvvlab checkpoints (fused ones too) and any `AutoModelForCausalLM`.
"""

from __future__ import annotations

import codecs
import dataclasses
import math
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch

from bvvlab.core.errors import BVVError

DECODE_WINDOW = 6  # ids of left context decoded with each new id (spaces / merges at token borders)


@dataclass(frozen=True)
class GenerationSettings:
    """What one generation depends on (the widget's sliders; `model.generate`'s names)."""

    temperature: float = 0.8  # 0 = greedy (argmax); > 0 divides the logits before sampling
    top_k: int = 50  # keep the k most likely tokens (0 = off)
    top_p: float = 0.95  # keep the smallest set with this much probability (1 = off); in (0, 1]
    max_new_tokens: int = 64  # tokens to generate at most
    repetition_penalty: float = 1.0  # CTRL's penalty on tokens already in the sequence (1 = off)
    seed: int = 0  # seeds this stream's own torch.Generator
    stop: tuple[str, ...] = ()  # stop once the generated text contains one of these
    show_top: int = 10  # entries of the next-token distribution reported per step

    def __post_init__(self):
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,) if self.stop else ())
        else:
            object.__setattr__(self, "stop", tuple(s for s in self.stop if s))
        self.validate()

    def validate(self) -> None:
        """Bad input: one line naming the setting and the range it must be in."""
        def num(name: str, kind: type) -> Any:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not float(v).is_integer()):
                raise BVVError(f"{name}={v!r}: expected {'an integer' if kind is int else 'a number'}")
            if isinstance(v, float) and not math.isfinite(v):
                raise BVVError(f"{name}={v!r}: expected a finite number")
            return v

        if num("temperature", float) < 0:
            raise BVVError(f"temperature={self.temperature}: must be >= 0 (0 = greedy)")
        if num("top_k", int) < 0:
            raise BVVError(f"top_k={self.top_k}: must be >= 0 (0 = off)")
        if not 0 < num("top_p", float) <= 1:
            raise BVVError(f"top_p={self.top_p}: must be in (0, 1] (1 = off)")
        if num("max_new_tokens", int) < 1:
            raise BVVError(f"max_new_tokens={self.max_new_tokens}: must be >= 1")
        if num("repetition_penalty", float) <= 0:
            raise BVVError(f"repetition_penalty={self.repetition_penalty}: must be > 0 (1 = off)")
        num("seed", int)
        if num("show_top", int) < 1:
            raise BVVError(f"show_top={self.show_top}: must be >= 1")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def generate_kwargs(self) -> dict[str, Any]:
        """The same settings as `model.generate` keywords (seed it with `torch.manual_seed(seed)`)."""
        kw: dict[str, Any] = dict(max_new_tokens=int(self.max_new_tokens), repetition_penalty=float(self.repetition_penalty))
        if self.greedy:
            return {**kw, "do_sample": False, "temperature": None, "top_k": None, "top_p": None}
        return {**kw, "do_sample": True, "temperature": float(self.temperature), "top_k": int(self.top_k),
                "top_p": float(self.top_p)}


def logits_processors(settings: GenerationSettings):
    """The transformers processors `generate` builds for these settings, in its order
    (`GenerationMixin._get_logits_processor`): repetition penalty; when sampling, temperature,
    top-k, top-p (each only when it changes anything, as there)."""
    from transformers import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    procs = LogitsProcessorList()
    if settings.repetition_penalty != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(penalty=float(settings.repetition_penalty)))
    if not settings.greedy:
        if settings.temperature != 1.0:
            procs.append(TemperatureLogitsWarper(float(settings.temperature)))
        if settings.top_k != 0:
            procs.append(TopKLogitsWarper(top_k=int(settings.top_k), min_tokens_to_keep=1))
        if settings.top_p < 1.0:
            procs.append(TopPLogitsWarper(top_p=float(settings.top_p), min_tokens_to_keep=1))
    return procs


@dataclass
class Step:
    """One generated token."""

    index: int  # 0 for the first new token
    token_id: int
    token: str  # the vocabulary entry ("<0xE2>" for a byte token)
    piece: str  # text that became whole with this token ("" while a character is incomplete)
    text: str  # the generated text so far (whole characters only)
    top: list[tuple[int, str, float]]  # (id, token, probability) of the model's distribution, most likely first
    elapsed: float  # seconds since the stream started (prefill included)


@dataclass
class Prompt:
    """A prompt as ids, with what was done to it (shown by the widget; `notes` is empty normally)."""

    ids: list[int]
    notes: list[str] = field(default_factory=list)


def context_length(model: Any) -> int | None:
    cfg = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        v = getattr(cfg, name, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def encode_prompt(tokenizer: Any, prompt: str, max_new_tokens: int, context: int | None) -> Prompt:
    """Ids of `prompt`. Empty: the tokenizer's BOS (or a one-line refusal if it has none). Longer
    than the context leaves room for: the last tokens are kept, and a note says so."""
    if not isinstance(prompt, str):
        raise BVVError(f"prompt={prompt!r}: expected a string")
    ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"]) if prompt else []
    notes = []
    if not ids:
        bos = getattr(tokenizer, "bos_token_id", None)
        if bos is None:
            raise BVVError("the prompt is empty and the tokenizer has no BOS token to start from: type a prompt")
        ids = [int(bos)]
        notes.append(f"empty prompt: generating from BOS {tokenizer.bos_token!r}")
    if context is not None:
        if max_new_tokens >= context:
            raise BVVError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the context of "
                           f"{context} tokens: use max_new_tokens <= {context - 1}")
        room = context - max_new_tokens
        if len(ids) > room:
            notes.append(f"the prompt has {len(ids)} tokens; kept its last {room} (context {context} minus "
                         f"max_new_tokens {max_new_tokens})")
            ids = ids[-room:]
    return Prompt(ids, notes)


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    out: set[int] = set()
    for src in (getattr(model, "generation_config", None), getattr(model, "config", None), tokenizer):
        v = getattr(src, "eos_token_id", None)
        if v is None:
            continue
        out |= {int(x) for x in (v if isinstance(v, (list, tuple)) else [v])}
        if out:
            break
    return out


def _device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def new_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The stream's random source: the same numbers as the global one after `torch.manual_seed(seed)`."""
    return torch.Generator(device=device).manual_seed(int(seed))


class Stream:
    """Iterate for `Step`s; `stop()` (any thread) ends it before the next step.

    After the iteration: `ids` (generated ids), `text`, `finish_reason` ("length", "eos",
    "stop string", "stopped"), `tokens_per_s` (generated tokens over the time after the first one,
    so prefill does not count) and `first_token_s`.
    """

    def __init__(self, model: Any, tokenizer: Any, prompt: str | Sequence[int], settings: GenerationSettings | None = None,
                 *, use_cache: bool = True, generator: torch.Generator | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.settings = settings if settings is not None else GenerationSettings()
        self.settings.validate()
        if isinstance(prompt, str):
            self.prompt = encode_prompt(tokenizer, prompt, int(self.settings.max_new_tokens), context_length(model))
        else:
            self.prompt = Prompt([int(i) for i in prompt])
            if not self.prompt.ids:
                raise BVVError("the prompt is empty: give at least one token id (e.g. the tokenizer's BOS)")
        self.use_cache = use_cache
        self.device = _device(model)
        self.generator = generator if generator is not None else new_generator(self.settings.seed, self.device)
        self.ids: list[int] = []
        self.text = ""
        self.finish_reason: str | None = None
        self.first_token_s: float | None = None
        self.tokens_per_s: float | None = None
        self._stop = threading.Event()
        self._it: Iterator[Step] | None = None

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def __iter__(self) -> Iterator[Step]:
        if self._it is None:
            self._it = self._run()
        return self._it

    def __next__(self) -> Step:
        return next(iter(self))

    def run(self) -> "Stream":
        """Generate to the end (headless use); returns self."""
        for _ in self:
            pass
        return self

    # -- the loop --------------------------------------------------------------------------
    def _forward(self, ids: torch.Tensor, cache: Any) -> torch.Tensor:
        kw: dict[str, Any] = {"use_cache": self.use_cache, "return_dict": True}
        if self.use_cache:
            kw[self._cache_arg] = cache
        if self._keep_arg:
            kw["logits_to_keep"] = 1
        return self.model(input_ids=ids, **kw).logits[:, -1].to(copy=True, dtype=torch.float32)

    def _run(self) -> Iterator[Step]:
        import inspect

        from transformers import DynamicCache

        s, tok = self.settings, self.tokenizer
        procs = logits_processors(s)
        eos = _eos_ids(self.model, tok)
        params = inspect.signature(self.model.forward).parameters
        self._keep_arg = "logits_to_keep" in params
        # transformers 5.24 renamed past_key_values to cache (the old name warns); older models only know the old one
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        seq = torch.tensor([self.prompt.ids], dtype=torch.long, device=self.device)  # (1, T)
        cache = None
        if self.use_cache:
            try:
                cache = DynamicCache(config=self.model.config)
            except (TypeError, AttributeError):  # a config that is not a PreTrainedConfig
                cache = DynamicCache()
        decoder = _IncrementalDecoder(tok, self.prompt.ids)
        t0 = time.perf_counter()
        t_first = None
        inputs = seq
        # no grad mode held across a yield: the caller runs between steps in its own mode
        for index in range(int(s.max_new_tokens)):
            if self._stop.is_set():
                self.finish_reason = "stopped"
                break
            with torch.no_grad():
                logits = self._forward(inputs if self.use_cache else seq, cache)  # (1, V) float32
                scores = procs(seq, logits)
                if s.greedy:
                    nxt = torch.argmax(scores, dim=-1)
                else:
                    nxt = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1,
                                            generator=self.generator).squeeze(1)
                probs = torch.softmax(logits[0], dim=-1)
                p, order = probs.topk(min(int(s.show_top), probs.shape[-1]))
                seq = torch.cat([seq, nxt[:, None]], dim=-1)
            inputs = nxt[:, None]
            token_id = int(nxt.item())
            self.ids.append(token_id)
            piece = decoder.add(token_id)
            self.text += piece
            top_ids = order.tolist()
            top = list(zip(top_ids, tok.convert_ids_to_tokens(top_ids), p.tolist()))
            now = time.perf_counter()
            if t_first is None:
                t_first = now
                self.first_token_s = now - t0
            elif index > 0:
                self.tokens_per_s = index / (now - t_first)
            reason = None
            if token_id in eos:
                reason = "eos"
            elif s.stop and any(x in self.text for x in s.stop):
                reason = "stop string"
            elif index + 1 == int(s.max_new_tokens):
                reason = "length"
            if reason is not None:
                rest = decoder.flush()  # bytes of an unfinished character at the very end
                piece += rest
                self.text += rest
                self.finish_reason = reason
            yield Step(index, token_id, tok.convert_ids_to_tokens(token_id), piece, self.text, top, now - t0)
            if reason is not None:
                break
        if self.finish_reason is None:
            self.finish_reason = "stopped"


_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>\Z")  # byte fallback (bvv241, SentencePiece, Llama)


class _IncrementalDecoder:
    """Whole characters only. Byte-fallback tokens (`<0xE2>`) go through Python's incremental
    UTF-8 decoder, so a character appears with its last byte and an invalid byte is one U+FFFD
    (the tokenizer's own decode turns a whole run of bytes with one bad byte into U+FFFDs, "м"
    included, which a stream that already showed "м" could never follow). Other tokens: the text
    that decoding them after a window of earlier ones adds (vLLM's detokenizer; spaces at token
    borders), special tokens skipped."""

    def __init__(self, tokenizer: Any, prompt_ids: Sequence[int]):
        self.tok = tokenizer
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.ctx = [i for i in prompt_ids if not self._byte(i)][-DECODE_WINDOW:]

    def _byte(self, token_id: int) -> int | None:
        m = _BYTE_TOKEN.match(self.tok.convert_ids_to_tokens(int(token_id)) or "")
        return int(m.group(1), 16) if m else None

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def add(self, token_id: int) -> str:
        b = self._byte(token_id)
        if b is not None:
            return self.utf8.decode(bytes([b]))
        out = self.flush()  # a character left unfinished by the bytes before this token
        before, after = self._decode(self.ctx), self._decode(self.ctx + [token_id])
        out += after[len(before):] if after.startswith(before) else self._decode([token_id])
        self.ctx = (self.ctx + [token_id])[-DECODE_WINDOW:]
        return out

    def flush(self) -> str:
        out = self.utf8.decode(b"", final=True)
        self.utf8.reset()
        return out


def generate_text(model: Any, tokenizer: Any, prompt: str, settings: GenerationSettings | None = None,
                  **kwargs: Any) -> Stream:
    """Run a stream to the end: `.text`, `.ids`, `.finish_reason`, `.tokens_per_s`."""
    return Stream(model, tokenizer, prompt, settings, **kwargs).run()


class SideBySide:
    """The same prompt and seed through several (model, tokenizer) pairs, one step of each per
    yield (None for a stream that has ended). Each stream has its own generator seeded with the
    same seed, so each draws the same random numbers it would draw alone; `stop()` ends all."""

    def __init__(self, models: Sequence[tuple[Any, Any]], prompt: str, settings: GenerationSettings | None = None):
        self.streams = [Stream(m, t, prompt, settings) for m, t in models]

    def stop(self) -> None:
        for s in self.streams:
            s.stop()

    def __iter__(self) -> Iterator[list[Step | None]]:
        its = [iter(s) for s in self.streams]
        live = [True] * len(its)
        while True:
            row: list[Step | None] = []
            for i, it in enumerate(its):
                step = next(it, None) if live[i] else None
                live[i] = step is not None
                row.append(step)
            if not any(live):
                return
            yield row


def settings_from(**values: Any) -> GenerationSettings:
    """Settings from plain values (a notebook's parameters, widget values); unknown names refused."""
    names = {f.name for f in dataclasses.fields(GenerationSettings)}
    bad = sorted(set(values) - names)
    if bad:
        raise BVVError(f"unknown generation setting(s) {bad}; valid: {', '.join(sorted(names))}")
    if isinstance(values.get("stop"), list):
        values["stop"] = tuple(values["stop"])
    return GenerationSettings(**values)
