"""Data preparation as its own step (issue 27): the token shards of a config, built ahead of
training by parallel worker processes, resumable after a kill.

Why a separate step: at paper scale (billions of tokens) tokenising takes hours. Inside the
trainer, rank 0 would tokenise while every other rank waits at a barrier whose collective times
out long before, and a build killed half way would start again from nothing.

How: the document stream of a split (`shards.iter_texts` + `shards.take_chars`, exactly what
the trainer reads) is cut into *pieces* of about `piece_chars` characters at document
boundaries (deterministic: the same stream always gives the same pieces). Each piece is
tokenised by a worker process with the trainer's own `shards.encode_texts` and written to the
work folder `<shard>.prepare/` under a temporary name, then renamed; its JSON record is written
last, so a record marks a complete piece. At most two pieces per worker are in flight, so
memory stays flat however large the corpus. A rerun after a kill skips the recorded pieces. When
every piece is there, the shard folder is assembled by concatenation through `atomic_dir` (never
a half shard under the final name) and the work folder is removed. Tokenisation is per
document, so the assembled bytes equal what `shards.build_shard` writes for the same inputs
(tests/test_prepare.py checks byte equality).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from bvvlab.core.atomic import atomic_dir, ensure_dir, write_atomic
from bvvlab.core.runinfo import cache_dir
from bvvlab.train import shards as D

PIECE_CHARS = 8_000_000  # characters per piece: ~2-6 s of tokenising, ~30 MB of ids in memory
SAMPLE_CHARS = 2_000_000  # characters tokenised up front to estimate tokens per char and speed
# a missing shard at most this large is still built by the trainer (rank 0, then a barrier):
# about a minute of tokenising on one core; anything larger must be prepared first
SMALL_CHARS = 50_000_000


@dataclass
class Plan:
    """What one split's shard is: its cache key and location, the inputs, and an estimate."""

    split: str
    weights: dict[str, float]
    max_chars: int | None
    seed: int
    key: str
    final: Path
    tok_hash: str
    content: str  # the key without the tokenizer: the same text tokenised by another tokenizer shares it
    fps: dict[str, str]  # source fingerprints
    est_chars: int | None = None  # characters to tokenise (None: unknown, e.g. a streamed dataset)
    chars_per_token: float | None = None
    sec_per_char: float | None = None  # one process

    @property
    def done(self) -> bool:
        return (self.final / "meta.json").exists()

    @property
    def work(self) -> Path:
        return self.final.parent / f"{self.final.name}.prepare"

    def est_tokens(self) -> int | None:
        if self.est_chars is None or not self.chars_per_token:
            return None
        return int(self.est_chars / self.chars_per_token)

    def est_bytes(self, vocab_size: int) -> int | None:
        """Bytes of the finished shard: ids (2 or 4 B) + characters per token (2 B)."""
        n = self.est_tokens()
        return None if n is None else n * (D.token_dtype(vocab_size).itemsize + 2)


def shard_root(shard_dir: str | None) -> Path:
    """Where shards live: `shard_dir` (shared storage on a cluster) or `cache_dir()/shards`."""
    return Path(shard_dir).expanduser() if shard_dir else cache_dir() / "shards"


def make_plan(weights: dict[str, float], tokenizer: Any, split: str, max_chars: int | None, seed: int,
              root: Path) -> Plan:
    """The shard `shards.build_shard` would write for these inputs (same key, same folder)."""
    weights = D.normalize_weights(weights)
    max_chars = D.resolve_max_chars(weights, split, max_chars, seed)
    fps = {k: D.source_fingerprint(k) for k in weights}
    tok_hash = D.tokenizer_hash(tokenizer)
    key = D.shard_key(weights, tok_hash, split, max_chars, seed, fps)
    content = D.shard_key(weights, "", split, max_chars, seed, fps)
    return Plan(split, weights, max_chars, seed, key, Path(root) / key, tok_hash, content, fps)


def file_chars(path: Path, head: int = 1 << 20) -> int:
    """About how many characters `path` holds: its size times the characters per byte of its
    first `head` bytes (decompressed for `.gz`). Bytes alone overstated Cyrillic JSON lines 1.5x
    (2 bytes a letter), and understated a compressed file."""
    import zlib

    size = path.stat().st_size
    with open(path, "rb") as raw:
        if path.suffix != ".gz":
            data = raw.read(head)
            used = len(data)
        else:  # feed the compressed bytes in small steps: `used` is what `data` cost
            inflate, data, used = zlib.decompressobj(wbits=31), b"", 0
            try:
                while len(data) < head and not inflate.eof and (chunk := raw.read(1 << 14)):
                    data += inflate.decompress(chunk)
                    used += len(chunk) - len(inflate.unused_data)
            except zlib.error:  # not gzip after all: reading it says so, in one line, later
                return size
    return int(size * len(data.decode("utf-8", "ignore")) / used) if used else 0


def source_chars(name: str, split: str) -> int | None:
    """Characters of one source's split, cheaply: a local file's characters (`file_chars`; a
    folder's `*.txt` files, which are what it is read for) times the split's share of
    `text_split` (90 / 5 / 5 %); an embedded corpus counted; else None."""
    from bvvlab.corpus import sources as corpora

    p = Path(name).expanduser()
    if p.exists():
        files = sorted(p.rglob("*.txt")) if p.is_dir() else [p]
        size = sum(file_chars(f) for f in files if f.is_file())
        return int(size * {"train": 0.9, "all": 1.0}.get(split, 0.05))
    base, _ = corpora.split_spec(name)
    if base in corpora.PARALLEL_FILES:
        return sum(len(d.text) for d in corpora.iter_documents(name, split=split))
    return None


def estimate(plan: Plan, tokenizer: Any) -> Plan:
    """Fill in the plan's estimate: characters (the budget, or the sources' sizes), and tokens per
    character and seconds per character from tokenising the first `SAMPLE_CHARS` in-process."""
    sizes = [source_chars(k, plan.split) for k in plan.weights]
    total = None if None in sizes else sum(s for s in sizes if s is not None)
    if len(plan.weights) > 1 and total is not None:  # a mixture stops when its first source runs dry
        total = int(min(s / (w / sum(plan.weights.values())) for s, w in zip(sizes, plan.weights.values())))
    plan.est_chars = min(x for x in (plan.max_chars, total) if x is not None) \
        if (plan.max_chars, total) != (None, None) else None
    t0, n_tok, n_chr = time.perf_counter(), 0, 0
    sample = D.take_chars(D.iter_texts(plan.weights, plan.split, plan.seed),
                          min(SAMPLE_CHARS, plan.max_chars or SAMPLE_CHARS))
    for ids, _, _, nc in D.encode_texts(tokenizer, sample):
        n_tok += ids.size
        n_chr += nc
    if n_chr:
        plan.chars_per_token = n_chr / max(1, n_tok)
        plan.sec_per_char = (time.perf_counter() - t0) / n_chr
    return plan


def pieces(texts: Iterable[str], piece_chars: int) -> Iterator[list[str]]:
    """Documents grouped into pieces of at least `piece_chars` characters (the last may be less)."""
    piece: list[str] = []
    size = 0
    for text in texts:
        piece.append(text)
        size += len(text)
        if size >= piece_chars:
            yield piece
            piece, size = [], 0
    if piece:
        yield piece


# ---------------------------------------------------------------------------------------------
# workers


_TOKENIZER: Any = None


def _init_worker(tokenizer: Any) -> None:
    global _TOKENIZER
    _TOKENIZER = tokenizer


def _piece_name(i: int) -> str:
    return f"{i:07d}"


def tokenize_piece(i: int, texts: list[str], work: str, dtype_name: str, tokenizer: Any = None) -> dict[str, int]:
    """Tokenise piece `i` into `work/<i>.tokens` / `.chars` (each through a temporary name), then
    its record `<i>.json`: the record's presence means the piece is complete."""
    tok = tokenizer if tokenizer is not None else _TOKENIZER
    dtype = np.dtype(dtype_name)
    ids_all, chars_all, n_docs, n_chars = [], [], 0, 0
    for ids, chars, nd, nc in D.encode_texts(tok, texts):
        if ids.size and int(ids.max()) > np.iinfo(dtype).max:
            raise ValueError(f"token id {int(ids.max())} does not fit {dtype}: tokenizer/vocab mismatch")
        ids_all.append(ids.astype(dtype))
        chars_all.append(np.minimum(chars, 65535).astype(np.uint16))
        n_docs += nd
        n_chars += nc
    base = Path(work) / _piece_name(i)
    tokens = np.concatenate(ids_all) if ids_all else np.zeros(0, dtype)
    write_atomic(base.with_suffix(".tokens"), tokens.tobytes())
    write_atomic(base.with_suffix(".chars"), (np.concatenate(chars_all) if chars_all else
                                              np.zeros(0, np.uint16)).tobytes())
    rec = {"piece": i, "n_tokens": int(tokens.size), "n_docs": n_docs, "n_chars": n_chars}
    write_atomic(base.with_suffix(".json"), json.dumps(rec) + "\n")
    return rec


def _finished(work: Path, i: int, itemsize: int) -> dict[str, int] | None:
    """Piece `i`'s record when the piece is complete (files of the recorded sizes), else None."""
    base = work / _piece_name(i)
    try:
        rec = json.loads(base.with_suffix(".json").read_text())
        ok = (base.with_suffix(".tokens").stat().st_size == rec["n_tokens"] * itemsize
              and base.with_suffix(".chars").stat().st_size == rec["n_tokens"] * 2)
    except (OSError, ValueError, KeyError):
        return None
    return rec if ok else None


# ---------------------------------------------------------------------------------------------
# building one shard


def _start_work(plan: Plan, dtype: np.dtype, piece_chars: int) -> None:
    """The work folder with its plan record; pieces cut at another size are discarded."""
    record = {"key": plan.key, "piece_chars": piece_chars, "dtype": dtype.name, "format": D.SHARD_FORMAT}
    path = plan.work / "plan.json"
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()) != record:
            shutil.rmtree(plan.work)
    ensure_dir(plan.work)
    if not path.exists():
        write_atomic(path, json.dumps(record) + "\n")


def check_disk(plan: Plan, vocab_size: int, root: Path) -> None:
    """One line when `root`'s disk cannot hold the shard (pieces and the assembled copy coexist
    while assembling, so about twice the shard, less the pieces already written)."""
    need = plan.est_bytes(vocab_size)
    if need is None:
        return
    have = sum(f.stat().st_size for f in plan.work.glob("*.tokens")) + \
        sum(f.stat().st_size for f in plan.work.glob("*.chars")) if plan.work.exists() else 0
    ensure_dir(root)
    free = shutil.disk_usage(root).free
    if free < 2 * need - have:
        raise ValueError(f"the {plan.split} shard needs about {human(2 * need - have)} on {root} (shard "
                         f"{human(need)} + its pieces while assembling) but only {human(free)} are free: free "
                         "space or set shard_dir= to a larger disk")


def build_split(plan: Plan, tokenizer: Any, workers: int = 0, progress: bool = True,
                piece_chars: int = PIECE_CHARS) -> D.TokenShard:
    """Tokenise `plan`'s split in `workers` processes (0: one per core; 1: in this process),
    resuming from the pieces a killed build left, then assemble the shard."""
    if plan.done:
        return D.open_shard(plan.final)
    if not D.is_cacheable(plan.fps.values()):
        raise ValueError(f"{', '.join(plan.weights)} is streamed (no content fingerprint), so a prepared shard could "
                         "not be trusted later: save the dataset locally (datasets save_to_disk) and use hf:<folder>")
    dtype = D.token_dtype(len(tokenizer))
    workers = workers or os.cpu_count() or 1
    _start_work(plan, dtype, piece_chars)
    from tqdm.auto import tqdm

    bar = tqdm(desc=f"preparing {plan.split}", unit=" chars", unit_scale=True, total=plan.est_chars,
               disable=not progress, dynamic_ncols=True, mininterval=1.0)
    counts = {"n_tokens": 0, "n_docs": 0, "n_chars": 0}
    t0, fresh_tokens = time.perf_counter(), 0

    def take(rec: dict[str, int], new: bool) -> None:
        nonlocal fresh_tokens
        for k in counts:
            counts[k] += rec[k]
        fresh_tokens += rec["n_tokens"] if new else 0
        bar.update(rec["n_chars"])
        bar.set_postfix_str(f"{fresh_tokens / max(1e-9, time.perf_counter() - t0):,.0f} tokens/s", refresh=False)

    texts = D.take_chars(D.iter_texts(plan.weights, plan.split, plan.seed), plan.max_chars)
    n = 0
    with _pool(workers, tokenizer) as pool:
        pending: deque[Any] = deque()
        for i, piece in enumerate(pieces(texts, piece_chars)):
            n = i + 1
            done = _finished(plan.work, i, dtype.itemsize)
            if done is not None:
                take(done, False)
                continue
            if pool is None:
                take(tokenize_piece(i, piece, str(plan.work), dtype.name, tokenizer), True)
                continue
            pending.append(pool.apply_async(tokenize_piece, (i, piece, str(plan.work), dtype.name)))
            while len(pending) >= 2 * workers:  # bounded: at most two pieces per worker in memory
                take(pending.popleft().get(), True)
        while pending:
            take(pending.popleft().get(), True)
    bar.close()
    if counts["n_tokens"] == 0:
        raise ValueError(f"corpus {', '.join(plan.weights)} has no text in split {plan.split!r}: point corpus= at a "
                         "source with text")
    return assemble(plan, n, dtype, len(tokenizer), counts)


@contextlib.contextmanager
def _pool(workers: int, tokenizer: Any) -> Iterator[Any]:
    """A pool of `workers` spawned processes holding the tokenizer (None for one worker: inline).
    Each worker tokenises with one thread (TOKENIZERS_PARALLELISM=false): the processes are
    the parallelism."""
    if workers <= 1:
        yield None
        return
    old = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(tokenizer,))
    finally:
        if old is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = old
    try:
        yield pool
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def assemble(plan: Plan, n_pieces: int, dtype: np.dtype, vocab_size: int, counts: dict[str, int]) -> D.TokenShard:
    """Concatenate the pieces into the shard folder (through `atomic_dir`), then drop the pieces."""
    if plan.done:  # another process (a second node preparing the same shard) finished it first
        return D.open_shard(plan.final)
    with atomic_dir(plan.final) as tmp:
        with open(tmp / "tokens.bin", "wb") as ft, open(tmp / "chars.bin", "wb") as fc:
            for i in range(n_pieces):
                base = plan.work / _piece_name(i)
                for src, dst in ((base.with_suffix(".tokens"), ft), (base.with_suffix(".chars"), fc)):
                    with open(src, "rb") as fh:
                        shutil.copyfileobj(fh, dst, 16 << 20)
        meta = D.shard_meta(plan.key, plan.split, plan.weights, plan.max_chars, plan.seed, dtype, vocab_size,
                            plan.tok_hash, plan.content, **counts)
        write_atomic(tmp / "meta.json", json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(plan.work, ignore_errors=True)
    return D.open_shard(plan.final)


def human(n: float) -> str:
    """Bytes as KiB / MiB / GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


def describe(plan: Plan, vocab_size: int, workers: int) -> str:
    """One line: what will be tokenised, the estimated tokens, disk and time."""
    if plan.done:
        return f"{plan.split}: prepared ({plan.final})"
    chars = "unknown size" if plan.est_chars is None else f"~{plan.est_chars:,} characters"
    line = f"{plan.split}: {chars}"
    n, size = plan.est_tokens(), plan.est_bytes(vocab_size)
    if n is not None and size is not None:
        line += f" -> ~{n:,} tokens ({plan.chars_per_token:.2f} chars/token), ~{human(size)} on disk"
    if plan.est_chars is not None and plan.sec_per_char:
        secs = plan.est_chars * plan.sec_per_char / workers
        line += f", ~{secs / 60:.1f} min on {workers} worker(s)"
    return f"{line}; shard {plan.final}"


# ---------------------------------------------------------------------------------------------
# a config's shards: `bvvlab data prepare`, and what the trainer opens


def config_splits(cfg: Any) -> list[tuple[str, dict[str, float], int | None]]:
    """(split, mixture, character budget) of the training and validation shards of a config."""
    weights = D.normalize_weights(cfg.corpus)
    return [("train", weights, cfg.train_chars), (cfg.val_split, D.held_out_weights(weights), cfg.val_chars)]


def config_tokenizer(cfg: Any) -> Any:
    """The tokenizer the trainer would use (a compact vocabulary is built and cached as it would;
    a standard kind's tokenizer is built alone, without rendering its glyph matrix)."""
    from bvvlab.glyph import tokenizer as tk
    from bvvlab.train.setup import prepare_embedded, vocab_texts

    if cfg.vocab in tk.VOCAB_KINDS and cfg.vocab != "compact":
        return tk.build_tokenizer(cfg.vocab)
    return prepare_embedded(cfg, vocab_texts(cfg, D.normalize_weights(cfg.corpus))).tokenizer


def prepare_config(cfg: Any, workers: int = 0, progress: bool = True, dry_run: bool = False,
                   say: Any = print) -> list[Plan]:
    """Build (or with `dry_run` only estimate) the shards `bvvlab train` would build for `cfg`,
    where it will look for them (`cfg.shard_dir`, else the cache). Each split: an estimate line
    first, a one-line error when the disk cannot hold it, then the build."""
    workers = workers or os.cpu_count() or 1
    tokenizer = config_tokenizer(cfg)
    root = shard_root(cfg.shard_dir)
    plans = [make_plan(w, tokenizer, split, limit, cfg.seed, root) for split, w, limit in config_splits(cfg)]
    for plan in plans:
        if not plan.done:
            estimate(plan, tokenizer)
            check_disk(plan, len(tokenizer), root)
        say(describe(plan, len(tokenizer), workers))
    if not dry_run:
        for plan in plans:
            if not plan.done:
                shard = build_split(plan, tokenizer, workers, progress)
                say(f"{plan.split}: {len(shard):,} tokens, {shard.n_chars:,} characters -> {plan.final}")
    return plans


def prepare_command() -> str:
    """The `bvvlab data prepare` line for this process's `bvvlab train` arguments."""
    import shlex

    argv = sys.argv[1:]
    if "train" in argv:
        rest = [a for a in argv[argv.index("train") + 1:] if a not in ("--resume", "--overwrite")]
        return shlex.join(["bvvlab", "data", "prepare", *rest])
    return "bvvlab data prepare --config <this run's config>"


def other_tokenizer(plan: Plan) -> Path | None:
    """A prepared shard of the same text made with another tokenizer, in the plan's folder."""
    for meta in plan.final.parent.glob("*/meta.json"):
        with contextlib.suppress(OSError, ValueError):
            m = json.loads(meta.read_text())
            if m.get("content") == plan.content and m.get("tokenizer") != plan.tok_hash:
                return meta.parent
    return None


def training_shards(cfg: Any, tokenizer: Any, info: Any) -> dict[str, D.TokenShard]:
    """The trainer's shards: opened when prepared; a small missing one is built (rank 0 first,
    then the others open it); a large missing one is one line naming the prepare command, on
    every rank at once (every rank decides from the same gathered facts, so none waits at a
    barrier for hours). Ranks whose data differ (a node with other corpus files) are refused."""
    from bvvlab.train import distributed as dist

    root = shard_root(cfg.shard_dir)
    plans = [make_plan(w, tokenizer, split, limit, cfg.seed, root) for split, w, limit in config_splits(cfg)]
    facts = dist.gather_objects([(p.key, p.done) for p in plans], info.world)
    facts = facts if info.world > 1 else [facts]
    keys = [[k for k, _ in f] for f in facts]
    if any(k != keys[0] for k in keys):
        bad = next(r for r, k in enumerate(keys) if k != keys[0])
        raise ValueError(f"rank {bad} reads other data than rank 0 (its corpus files differ, so its shard key does): "
                         "give every node the same corpus files")
    out = {}
    for j, plan in enumerate(plans):
        missing = [r for r, f in enumerate(facts) if not f[j][1]]
        if missing:
            _check_buildable(plan, missing, info.world)
        out[plan.split] = dist.rank0_first(
            info, lambda p=plan: D.build_shard(p.weights, tokenizer, p.split, max_chars=p.max_chars, seed=p.seed,
                                               progress=cfg.progress, root=root),
            lambda p=plan: D.build_shard(p.weights, tokenizer, p.split, max_chars=p.max_chars, seed=p.seed,
                                         progress=False, root=root))
    return out


def _check_buildable(plan: Plan, missing: list[int], world: int) -> None:
    """Refuse to tokenise a large missing shard inside the trainer (several processes), or one
    whose text was prepared with another tokenizer (the config's vocab= differs from the data's)."""
    sizes = [source_chars(k, plan.split) for k in plan.weights]
    est = plan.max_chars if plan.max_chars is not None else (None if None in sizes else sum(s or 0 for s in sizes))
    if est is not None and est <= SMALL_CHARS:
        return
    size = "of unknown size" if est is None else f"of ~{est:,} characters"
    other = other_tokenizer(plan)
    if other is not None:
        raise ValueError(f"the {plan.split} shard in {plan.final.parent} was prepared with another tokenizer "
                         f"({other.name}): this config's vocab= differs; use the vocab it was prepared with, or run "
                         f"{prepare_command()}")
    if world > 1:
        who = "every rank" if len(missing) == world else f"rank(s) {', '.join(map(str, missing))}"
        raise ValueError(f"the {plan.split} shard ({size}) is not prepared for {who} in {plan.final.parent}: run "
                         f"{prepare_command()} first (on each node, or once on shared storage with shard_dir=)")
