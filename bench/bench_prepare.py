"""`bvvlab data prepare` at size (issue 27), on a repeated corpus (the embedded libreoffice-en-ru
training documents, written over and over as JSON lines, each copy tagged so documents differ).

1. Speed per core: `prepare` with one worker against the tokenizer's own batch encode (the HF
   fast tokenizer, one thread, no offsets: the floor of any tokenising) on the same first
   `--peer-mb` MB, in this run; and the tokens/s of `--workers` workers on the whole corpus.
2. Peak memory (RSS of the prepare process and its workers together, sampled every 0.2 s) at
   each corpus size: it must stay flat as the corpus grows (streaming, bounded pieces in flight).
3. Disk per token of the finished shard.
4. Resume: a build of the smallest size SIGKILLed (process group: the workers too) when half of
   its pieces are written, rerun, ends with a shard byte-identical (sha256) to the uninterrupted one.

    nice -n 10 .venv/bin/python bench/bench_prepare.py --sizes-gb 0.3,2 --workers 2 --peer-mb 10 --tmp /tmp/bench-prepare
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
VOCAB = "bvv241-2-3"


def make_corpus(path: Path, size: int) -> Path:
    """JSON lines of the embedded training documents, repeated to `size` bytes (copy index prefixed)."""
    if path.exists() and path.stat().st_size >= size:
        return path
    from bvvlab.corpus import sources as corpora

    docs = [d.text for d in corpora.iter_documents("libreoffice-en-ru", split="train")]
    written, copy = 0, 0
    with open(path, "w", encoding="utf-8") as fh:
        while written < size:
            for d in docs:
                line = json.dumps({"text": f"{copy} {d}"}, ensure_ascii=False) + "\n"
                fh.write(line)
                written += len(line.encode())
                if written >= size:
                    break
            copy += 1
    return path


def run_prepare(corpus: Path, shard_dir: Path, workers: int, kill_at: float | None = None,
                expected: float | None = None) -> dict:
    """`bvvlab data prepare` in a subprocess; peak RSS of its tree; optionally SIGKILL at a share of pieces."""
    cmd = [sys.executable, "-m", "bvvlab", "data", "prepare", "--workers", str(workers), f"corpus={corpus}",
           f"vocab={VOCAB}", "dim=64", "val_chars=100000", f"shard_dir={shard_dir}", "progress=false"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    t0, cpu0 = time.perf_counter(), _children_cpu()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    peak, stop = [0], threading.Event()

    def sample() -> None:
        p = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                procs = [p, *p.children(recursive=True)]
                peak[0] = max(peak[0], sum(q.memory_info().rss for q in procs if q.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.2)

    threading.Thread(target=sample, daemon=True).start()
    killed = False
    if kill_at is not None:
        # train pieces: the uninterrupted build's characters / piece_chars (else bytes, an overestimate)
        expected = expected or corpus.stat().st_size * 0.9 / 8_000_000
        while proc.poll() is None:
            work = list(shard_dir.glob("*.prepare"))
            done = len([f for w in work for f in w.glob("0*.json")])
            if done >= kill_at * expected:
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.1)
    out, err = proc.communicate()
    stop.set()
    secs, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    if not killed and proc.returncode != 0:
        raise SystemExit(f"prepare failed: {err[-2000:]}")
    return {"seconds": secs, "cpu_seconds": cpu, "peak_rss_mb": peak[0] / 2**20, "stdout": out.strip().splitlines(),
            "killed": killed}


def _children_cpu() -> float:
    """User + system CPU seconds of this process's waited-for children and their descendants
    (prepare and its pool workers): the cost per core, whatever else shares the machine."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def shard_of(shard_dir: Path) -> dict:
    """The train shard's meta, sizes and sha256 of its files."""
    for meta in shard_dir.glob("*/meta.json"):
        m = json.loads(meta.read_text())
        if m["split"] == "train":
            files = {n: meta.parent / n for n in ("tokens.bin", "chars.bin")}
            digest = hashlib.sha256()
            for f in files.values():
                with open(f, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 24), b""):
                        digest.update(block)
            return {"n_tokens": m["n_tokens"], "n_chars": m["n_chars"], "sha256": digest.hexdigest(),
                    "bytes": sum(f.stat().st_size for f in files.values())}
    raise SystemExit(f"no train shard in {shard_dir}")


def previous_encode(tok, texts: list[str]) -> int:
    """The shard rule as encode_texts ran it before 2026-12-06 (late): the Hugging Face call per
    chunk with offsets, per-document arrays. The speed-up is measured against it in the same run."""
    import numpy as np

    from bvvlab.train import shards as D

    n = 0
    for i in range(0, len(texts), 256):
        enc = tok(texts[i:i + 256], add_special_tokens=False, split_special_tokens=True, return_offsets_mapping=True)
        for doc_ids, offs in zip(enc["input_ids"], enc["offset_mapping"]):
            ids = np.asarray(doc_ids, dtype=np.int64)
            D.chars_per_token(np.asarray(offs, dtype=np.int64).reshape(-1, 2))
            n += ids.size
    return n


def timed(fn, reps: int = 2) -> tuple[int, float, float]:
    """(result, best wall seconds, best CPU seconds of this process) over `reps` runs."""
    best_wall, best_cpu, out = float("inf"), float("inf"), 0
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        best_wall, best_cpu = min(best_wall, time.perf_counter() - t0), min(best_cpu, time.process_time() - c0)
    return out, best_wall, best_cpu


def peer_speed(corpus: Path, mb: float) -> dict:
    """Tokens per second, one thread, on the same first `mb` MB: the tokenizer's own batch encode
    (the peer), prepare's `encode_texts` and the rule it replaced; and the BPE alone (Rust
    backend, ids only) with and without a pre-tokenizer that isolates each whitespace character
    (the same ids, asserted: no n-gram holds whitespace). Rates count the text's tokens (no EOS)."""
    import copy

    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from tokenizers import Regex, pre_tokenizers

    from bvvlab.glyph.tokenizer import build_tokenizer
    from bvvlab.train import shards as D

    tok = build_tokenizer(VOCAB)
    cut = copy.deepcopy(tok)
    cut.backend_tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"\s"), behavior="isolated")
    texts, size = [], 0
    with open(corpus, encoding="utf-8") as fh:
        for line in fh:
            texts.append(json.loads(line)["text"])
            size += len(texts[-1])
            if size >= mb * 1e6:
                break
    chunks = [texts[i:i + 256] for i in range(0, len(texts), 256)]

    def bpe(t) -> list[list[int]]:
        return [e.ids for c in chunks for e in t.backend_tokenizer.encode_batch_fast(c, add_special_tokens=False)]

    runs = {"peer_batch_encode": lambda: sum(len(x) for c in chunks for x in tok(c, add_special_tokens=False)["input_ids"]),
            "prepare_encode_texts": lambda: sum(ids.size for ids, *_ in D.encode_texts(tok, texts)) - len(texts),
            "previous_encode_texts": lambda: previous_encode(tok, texts),
            "bpe_alone": lambda: bpe(tok), "bpe_whitespace_isolated": lambda: bpe(cut)}
    out: dict = {"chars": size, "docs": len(texts)}
    results = {}
    for name, fn in runs.items():
        results[name], wall, cpu = timed(fn)
        n = results[name] if isinstance(results[name], int) else sum(map(len, results[name]))
        out[name] = {"tokens": n, "wall_s": wall, "cpu_s": cpu, "tokens_per_cpu_s": n / cpu}
    assert results["bpe_alone"] == results["bpe_whitespace_isolated"], "whitespace cut changed the ids"
    n = out["peer_batch_encode"]["tokens"]
    assert all(out[k]["tokens"] == n for k in runs), "the runs tokenised differently"
    rate = {k: out[k]["tokens_per_cpu_s"] for k in runs}
    out["ratio_prepare_over_peer"] = rate["prepare_encode_texts"] / rate["peer_batch_encode"]
    out["ratio_previous_over_peer"] = rate["previous_encode_texts"] / rate["peer_batch_encode"]
    out["speedup_prepare_over_previous"] = rate["prepare_encode_texts"] / rate["previous_encode_texts"]
    out["ratio_whitespace_isolated_over_bpe_alone"] = rate["bpe_whitespace_isolated"] / rate["bpe_alone"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes-gb", default="0.5,2")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--peer-mb", type=float, default=20)
    ap.add_argument("--tmp", default="/tmp/bench-prepare")
    ap.add_argument("--skip-resume", action="store_true")
    ap.add_argument("--peer-only", action="store_true", help="only the one-thread comparison (printed, not saved)")
    ap.add_argument("--resume-only", action="store_true",
                    help="only the kill-and-resume part, against the shard of the smallest size in the results file")
    args = ap.parse_args()
    tmp = Path(args.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    sizes = [float(x) for x in args.sizes_gb.split(",")]
    res: dict = {"vocab": VOCAB, "workers": args.workers, "cpu_count": os.cpu_count(), "sizes": {}}
    corpora = {s: make_corpus(tmp / f"corpus-{s}gb.jsonl", int(s * 1e9)) for s in sizes}
    results = REPO / "bench" / "results" / "prepare.json"
    sys.path.insert(0, str(REPO / "bench"))
    from results_file import write_results
    if args.resume_only:
        res = json.loads(results.read_text())["prepare"]
    else:
        res["peer"] = peer_speed(corpora[sizes[0]], args.peer_mb)
        print(json.dumps(res["peer"]), flush=True)
        if args.peer_only:
            return
    for s in [] if args.resume_only else sizes:
        shard_dir = tmp / f"shards-{s}"
        subprocess.run(["rm", "-rf", str(shard_dir)], check=True)
        r = run_prepare(corpora[s], shard_dir, args.workers)
        sh = shard_of(shard_dir)
        r.update(sh, corpus_bytes=corpora[s].stat().st_size, bytes_per_token=sh["bytes"] / sh["n_tokens"],
                 tokens_per_s=sh["n_tokens"] / r["seconds"], tokens_per_s_per_worker=sh["n_tokens"] / r["seconds"] / args.workers,
                 tokens_per_cpu_s=sh["n_tokens"] / r["cpu_seconds"])
        if "peer" in res:  # end to end (reading, pieces, workers, assembling) per core, against the peer
            r["per_core_over_peer"] = r["tokens_per_cpu_s"] / res["peer"]["peer_batch_encode"]["tokens_per_cpu_s"]
        res["sizes"][str(s)] = r
        print(s, json.dumps({k: v for k, v in r.items() if k != "stdout"}), flush=True)
        write_results(results, {"prepare": res})  # each size saved as it ends
    if not args.skip_resume:
        s = sizes[0]
        shard_dir = tmp / f"shards-resume-{s}"
        subprocess.run(["rm", "-rf", str(shard_dir)], check=True)
        n_pieces = -(-res["sizes"][str(s)]["n_chars"] // 8_000_000)
        first = run_prepare(corpora[s], shard_dir, args.workers, kill_at=0.5, expected=n_pieces)
        pieces = len([f for w in shard_dir.glob("*.prepare") for f in w.glob("0*.json")])
        second = run_prepare(corpora[s], shard_dir, args.workers)
        sh = shard_of(shard_dir)
        res["resume"] = {"size_gb": s, "killed": first["killed"], "killed_after_s": first["seconds"],
                         "pieces_kept": pieces, "train_pieces": n_pieces, "rerun_s": second["seconds"], "sha256": sh["sha256"],
                         "identical_to_uninterrupted": sh["sha256"] == res["sizes"][str(s)]["sha256"]}
        print(json.dumps(res["resume"]), flush=True)
    write_results(results, {"prepare": res})


if __name__ == "__main__":
    main()
