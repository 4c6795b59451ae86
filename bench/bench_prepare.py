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

    nice -n 10 .venv/bin/python bench/bench_prepare.py --sizes-gb 0.5,2 --workers 2 --tmp /tmp/bench-prepare
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
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
    t0 = time.perf_counter()
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
    secs = time.perf_counter() - t0
    if not killed and proc.returncode != 0:
        raise SystemExit(f"prepare failed: {err[-2000:]}")
    return {"seconds": secs, "peak_rss_mb": peak[0] / 2**20, "stdout": out.strip().splitlines(), "killed": killed}


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


def peer_speed(corpus: Path, mb: float) -> dict:
    """Tokens/s of prepare (1 worker, in this process) vs the tokenizer's own batch encode, same text."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from bvvlab.glyph.tokenizer import build_tokenizer
    from bvvlab.train import shards as D

    tok = build_tokenizer(VOCAB)
    texts, size = [], 0
    with open(corpus, encoding="utf-8") as fh:
        for line in fh:
            texts.append(json.loads(line)["text"])
            size += len(texts[-1])
            if size >= mb * 1e6:
                break
    t0 = time.perf_counter()
    n_peer = sum(len(x) for i in range(0, len(texts), 256)
                 for x in tok(texts[i:i + 256], add_special_tokens=False)["input_ids"])
    peer = time.perf_counter() - t0
    t0 = time.perf_counter()
    n_ours = sum(ids.size for ids, *_ in D.encode_texts(tok, texts))
    ours = time.perf_counter() - t0
    return {"chars": size, "peer_tokens_per_s": n_peer / peer, "prepare_tokens_per_s": n_ours / ours,
            "ratio_prepare_over_peer": (n_ours / ours) / (n_peer / peer), "tokens_incl_eos": n_ours,
            "tokens_peer": n_peer}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes-gb", default="0.5,2")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--peer-mb", type=float, default=20)
    ap.add_argument("--tmp", default="/tmp/bench-prepare")
    ap.add_argument("--skip-resume", action="store_true")
    ap.add_argument("--resume-only", action="store_true",
                    help="only the kill-and-resume part, against the shard of the smallest size in the results file")
    args = ap.parse_args()
    tmp = Path(args.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    sizes = [float(x) for x in args.sizes_gb.split(",")]
    res: dict = {"vocab": VOCAB, "workers": args.workers, "cpu_count": os.cpu_count(), "sizes": {}}
    corpora = {s: make_corpus(tmp / f"corpus-{s}gb.jsonl", int(s * 1e9)) for s in sizes}
    results = REPO / "bench" / "results" / "prepare.json"
    if args.resume_only:
        res = json.loads(results.read_text())["prepare"]
    else:
        res["peer"] = peer_speed(corpora[sizes[0]], args.peer_mb)
        print(json.dumps(res["peer"]), flush=True)
    for s in [] if args.resume_only else sizes:
        shard_dir = tmp / f"shards-{s}"
        subprocess.run(["rm", "-rf", str(shard_dir)], check=True)
        r = run_prepare(corpora[s], shard_dir, args.workers)
        sh = shard_of(shard_dir)
        r.update(sh, corpus_bytes=corpora[s].stat().st_size, bytes_per_token=sh["bytes"] / sh["n_tokens"],
                 tokens_per_s=sh["n_tokens"] / r["seconds"], tokens_per_s_per_worker=sh["n_tokens"] / r["seconds"] / args.workers)
        res["sizes"][str(s)] = r
        print(s, json.dumps({k: v for k, v in r.items() if k != "stdout"}), flush=True)
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
    sys.path.insert(0, str(REPO / "bench"))
    from results_file import write_results

    write_results(results, {"prepare": res})


if __name__ == "__main__":
    main()
