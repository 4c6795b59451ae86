"""bvvlab.eval.evaluate and `bvvlab eval` (issue 12): log-likelihood multiple choice against an uncached
reference, the separate tokenisation of context and continuation, lm-evaluation-harness's
acc/acc_norm, the author's protocol and its interval, a bootstrap, BLEU/chrF against sacrebleu,
bits/char per language, task loaders on local files in the Hub formats, and bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bvvlab.cli import main as cli_main
from bvvlab.eval import metrics as eval_metrics
from bvvlab.eval import scoring, suites
from bvvlab.eval import tasks as eval_tasks
from bvvlab.glyph.tokenizer import bvv241_vocab, compact_vocab, hf_tokenizer
from bvvlab.models.checkpoints import save_checkpoint
from bvvlab.models.model import BVVForCausalLM, config_from_preset

TEXTS = ["Question: What is the Russian word for cat?\nAnswer: кошка собака дом",
         "Which of these is an animal? dog table red. Translate from English to Russian: Open the file.",
         "Откройте файл. 打开文件。 A B C D 0123456789"]
NGRAMS = ["r:", ": ", " к", "ка", "og", "le"]  # "r:" and ": " make merges that straddle "Answer:" + " ..."


@pytest.fixture(scope="module")
def tok():
    tokens, _ = compact_vocab(bvv241_vocab(65536, NGRAMS), TEXTS)
    return hf_tokenizer(tokens)


def make_model(tok, seed: int = 0, glyph_seed: int | None = None, **kw) -> BVVForCausalLM:
    """A tiny model; `glyph_seed` (default: `seed`) draws its frozen matrix, so models of one
    glyph seed can be fused."""
    torch.manual_seed(seed)
    cfg = config_from_preset("tiny", vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                             eos_token_id=tok.eos_token_id, **kw)
    g = torch.Generator().manual_seed(seed if glyph_seed is None else glyph_seed)
    return BVVForCausalLM.from_glyphs(cfg, F.normalize(torch.randn(len(tok), cfg.hidden_size, generator=g), dim=-1)).eval()


@pytest.fixture(scope="module")
def model(tok):
    return make_model(tok)


ITEMS = [eval_tasks.MCItem("Question: What is the Russian word for cat?\nAnswer:", [" кошка", " собака", " дом", " к"], 0),
         eval_tasks.MCItem("Answer:", [" дом", " кошка собака"], 1),
         eval_tasks.MCItem("", [" дом", "ка", "A"], 2),
         eval_tasks.MCItem("Which of these is an animal?" * 3, [" dog", " table", " red"], 0),
         # a shared prompt prefix (run once for the batch) with suffixes of different lengths
         eval_tasks.MCItem("Question: What is the Russian word for dog?\nAnswer:", [" собака", " дом"], 0),
         eval_tasks.MCItem("Question: What is the Russian word for table or red?\nAnswer:", [" дом", " кошка", " к"], 0)]


# ------------------------------------------------------------------------- log-likelihood scoring

def test_cached_batched_scores_equal_each_full_sequence(model, tok):
    """Context once + KV cache repeated per choice + all choices batched (left-padded contexts of
    different lengths, right-padded choices of different lengths) == every sequence scored alone."""
    want = scoring.score_full_sequences(model, tok, ITEMS)
    for batch, share in ((1, True), (3, True), (32, True), (32, False)):
        got = scoring.score_choices(model, tok, ITEMS, batch=batch, share_prefix=share)
        np.testing.assert_allclose(np.concatenate(got), np.concatenate(want), rtol=1e-5, atol=1e-4)
    shared = ITEMS[0].context, ITEMS[4].context, ITEMS[5].context
    assert scoring._common_prefix([scoring.encode(tok, c) for c in shared]) >= len(scoring.encode(tok, "Question: What is the Russian"))


def test_context_and_continuation_are_tokenised_separately(model, tok):
    """"Answer" + ": кошка": jointly the n-gram "r:" straddles the join, so the joint ids do not
    split into context + continuation; the score is that of the separate tokenisation."""
    ctx, cont = "Question: What is the Russian word for cat?\nAnswer", ": кошка"
    joint = scoring.encode(tok, ctx + cont)
    sep_ctx, sep_cont = scoring.encode(tok, ctx), scoring.encode(tok, cont)
    assert joint != sep_ctx + sep_cont  # the merge straddles the join
    assert joint[:len(sep_ctx)] != sep_ctx
    got = scoring.score_choices(model, tok, [eval_tasks.MCItem(ctx, [cont, " дом"], 0)])[0][0]
    ids = torch.tensor([[tok.eos_token_id] + sep_ctx + sep_cont])
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    n = 1 + len(sep_ctx)
    want = sum(float(lp[n - 1 + i, t]) for i, t in enumerate(sep_cont))
    assert got == pytest.approx(want, abs=1e-4)


def _lm_eval_encode_pair(tok, context, continuation):
    """lm-evaluation-harness 0.4.x `TemplateLM._encode_pair`, restated line for line (lm_eval is not
    installed here) for the hf model, which encodes without special tokens."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole_enc = tok.encode(context + continuation, add_special_tokens=False)
    context_enc = tok.encode(context, add_special_tokens=False)
    return context_enc, whole_enc[len(context_enc):]


def test_joint_tokenisation_reproduces_lm_eval_and_names_the_questions_that_differ(model, tok):
    """tokenisation="joint" scores exactly the tokens lm-evaluation-harness scores (its
    `_encode_pair`): the full-sequence reference over those ids equals the cached batched score;
    the questions whose tokens differ from the split tokenisation are listed with the reason."""
    items = ITEMS + [eval_tasks.MCItem("Question: What is the Russian word for cat?\nAnswer", [": кошка", ": дом"], 0),
                     eval_tasks.MCItem("Answer: ", ["кошка", "дом"], 0)]
    for it in items:
        for c in it.choices:
            if it.context:
                assert scoring.joint_pair(tok, it.context, c) == tuple(_lm_eval_encode_pair(tok, it.context, c))
    rows = scoring._mc_rows(tok, items, 128, None, "joint")
    ids = [(ctx, conts) for ctx, conts in rows]
    for (ctx, conts), it in zip(ids, items):
        if it.context:
            assert all((ctx, c) == _lm_eval_encode_pair(tok, it.context, ch) for c, ch in zip(conts, it.choices))
    want = scoring.score_full_sequences(model, tok, items, tokenisation="joint")
    got = scoring.score_choices(model, tok, items, batch=3, tokenisation="joint")
    np.testing.assert_allclose(np.concatenate(got), np.concatenate(want), rtol=1e-5, atol=1e-4)
    split = scoring.score_choices(model, tok, items, batch=3)
    diff = scoring.tokenisation_differences(tok, items)
    differ = {d["question"] for d in diff}
    # "r:", ": " and " к" merge across "Answer:" + " ...": the joint string gives other tokens there;
    # the question without context and the one without n-grams at its join agree
    expect = {k for k, it in enumerate(items) if it.context and any(
        sum(_lm_eval_encode_pair(tok, it.context, c), []) != scoring.encode(tok, it.context) + scoring.encode(tok, c)
        for c in it.choices)}
    assert differ == expect and {0, 1, 6, 7} <= differ and not differ & {2, 3}
    assert all(c["why"] in ("merge", "whitespace") for d in diff for c in d["choices"])
    for k in range(len(items)):  # the other questions score the same tokens, so the same numbers
        if k not in differ:
            np.testing.assert_allclose(got[k], split[k], rtol=1e-5, atol=1e-4)
    assert any(not np.allclose(got[k], split[k], atol=1e-3) for k in differ)
    with pytest.raises(eval_tasks.EvalError, match="tokenisation='both'"):
        scoring.score_choices(model, tok, items, tokenisation="both")


def test_joint_evaluation_feeds_no_prefix_token_like_the_harness(model, tok, monkeypatch):
    """lm-evaluation-harness's hf model scores a context with nothing before it (bvvlab's
    tokenizer adds no BOS); `evaluate_task(tokenisation="joint")` must too, or its log-likelihoods
    are conditioned on an EOS the harness never feeds (measured against lm_eval 0.4.13 itself:
    bench/bench_lmeval_parity.py). The split default keeps bvvlab's EOS prefix."""
    seen = []
    real = scoring.score_choices
    monkeypatch.setattr(scoring, "score_choices", lambda *a, **k: seen.append(k.get("prefix", "eos")) or real(*a, **k))
    task = eval_tasks.Task("t", "mc", items=ITEMS[:2], chance=0.5)
    rows = scoring.evaluate_task(model, tok, task, tokenisation="joint", n_boot=10)
    scoring.evaluate_task(model, tok, task, n_boot=10)
    assert seen == [None, "eos"]
    want = eval_metrics.mc_metrics(ITEMS[:2], real(model, tok, ITEMS[:2], prefix=None, tokenisation="joint"),
                                   delimiter=" ")
    assert {r["metric"]: r["mean"] for r in rows} == {"acc": want["acc"], "acc_norm": want["acc_norm"]}


def test_tokenisation_differences_count_a_moved_split_point(model, tok):
    """A context's trailing space moves to the continuation under `joint`: the concatenated ids can
    be the same as `split`'s while the scored tokens are not (the space is scored), so the question
    is listed ("whitespace"); found on 400 questions where joint and split picked differently under
    acc_norm though the old check, comparing the concatenation only, listed none."""
    item = eval_tasks.MCItem("Which is an animal? ", ["dog", "table"], 0)
    split_ctx = scoring.encode(tok, item.context)
    for c in item.choices:
        ctx, cont = scoring.joint_pair(tok, item.context, c)
        assert ctx + cont == split_ctx + scoring.encode(tok, c)  # the same ids in a row ...
        assert (ctx, cont) != (split_ctx, scoring.encode(tok, c))  # ... split at another point
    diff = scoring.tokenisation_differences(tok, [item])
    assert diff == [{"question": 0, "choices": [{"choice": 0, "why": "whitespace"}, {"choice": 1, "why": "whitespace"}]}]
    joint = scoring.score_choices(model, tok, [item], tokenisation="joint")[0]
    split = scoring.score_choices(model, tok, [item])[0]
    assert not np.allclose(joint, split, atol=1e-3)  # the scored numbers differ too


def test_acc_and_acc_norm_on_a_model_with_known_answers(tok):
    """A model with a zero head is uniform: every token costs log V, so a choice's log-likelihood
    is -len(tokens) * log V exactly; acc then picks the fewest tokens, acc_norm the fewest tokens
    per character (lm-evaluation-harness divides by len(choice) in characters)."""
    m = make_model(tok)
    with torch.no_grad():
        m.lm_head.weight.zero_()
    V = len(tok)
    items = [eval_tasks.MCItem("Answer:", [" кошка собака", " д"], 1),  # fewer tokens wins acc
             eval_tasks.MCItem("Answer:", [" кошка собака", " д"], 0)]
    scores = scoring.score_choices(m, tok, items)
    for it, s in zip(items, scores):
        for c, v in zip(it.choices, s):
            assert v == pytest.approx(-len(scoring.encode(tok, c)) * math.log(V), rel=1e-6)
    ntok = [len(scoring.encode(tok, c)) for c in items[0].choices]
    by_norm = int(np.argmax([-n / len(c) for n, c in zip(ntok, items[0].choices)]))
    m_ = eval_metrics.mc_metrics(items, scores)
    assert m_["per_question"]["acc"] == [1.0, 0.0]
    assert m_["per_question"]["acc_norm"] == [float(by_norm == 1), float(by_norm == 0)]
    assert m_["acc"] == 0.5 and m_["n"] == 2


def test_mc_metrics_definitions():
    items = [eval_tasks.MCItem("q", [" a", " bbbbbbbbbb"], 1), eval_tasks.MCItem("q", [" a", " b"], 0)]
    scores = [[-2.0, -5.0], [-1.0, -1.0]]  # q1: acc picks 0; per char -2/2=-1 vs -5/11: acc_norm picks 1
    m = eval_metrics.mc_metrics(items, scores)
    assert m["per_question"] == {"acc": [0.0, 1.0], "acc_norm": [1.0, 1.0]}  # a tie goes to the first choice


def test_acc_norm_without_the_delimiter_is_lm_evals():
    """The harness scores " " + choice but divides by len(choice): " ab" (-5) vs " abcd" (-9) is
    -5/3 > -9/5 with the space counted (choice 0), -5/2 < -9/4 without it (choice 1)."""
    items = [eval_tasks.MCItem("q", [" ab", " abcd"], 1)]
    scores = [[-5.0, -9.0]]
    assert eval_metrics.mc_metrics(items, scores)["acc_norm"] == 0.0  # -5/3 > -9/5
    assert eval_metrics.mc_metrics(items, scores, delimiter=" ")["acc_norm"] == 1.0  # -5/2 < -9/4


# ------------------------------------------------------------------------- intervals

def test_protocol_interval_is_mean_plus_minus_1_96_sigma_over_sqrt_n():
    runs = [0.30, 0.32, 0.28, 0.31, 0.29, 0.30, 0.33, 0.27, 0.30, 0.30]
    iv = eval_metrics.protocol_interval(runs)
    half = 1.96 * np.std(runs, ddof=1) / math.sqrt(10)
    assert iv["mean"] == pytest.approx(np.mean(runs))
    assert iv["high"] - iv["mean"] == pytest.approx(half) and iv["mean"] - iv["low"] == pytest.approx(half)
    assert eval_metrics.protocol_interval([0.5])["low"] == 0.5


def test_protocol_interval_of_a_fraction_stays_within_0_and_1():
    """Runs 0, 0, 0.2 of an accuracy: the normal interval reaches below 0; clipped to [0, 1], the
    mean and sigma unchanged (the report showed [-0.008, 0.133])."""
    raw = eval_metrics.protocol_interval([0.0, 0.0, 0.2])
    got = eval_metrics.protocol_interval([0.0, 0.0, 0.2], bounds=(0.0, 1.0))
    assert raw["low"] < 0 and got["low"] == 0.0 and got["high"] == raw["high"] and got["mean"] == raw["mean"]
    assert eval_metrics.protocol_interval([1.0, 1.0, 0.8], bounds=(0.0, 1.0))["high"] == 1.0


def test_bootstrap_interval_covers_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small, big = rng.random(50) < 0.3, rng.random(2000) < 0.3
    a, b = eval_metrics.bootstrap_interval(small, seed=0), eval_metrics.bootstrap_interval(big, seed=0)
    assert a["low"] < a["mean"] < a["high"] and b["low"] < 0.3 < b["high"]
    assert (b["high"] - b["low"]) < (a["high"] - a["low"]) / 3  # ~ 1/sqrt(n): sqrt(40) = 6.3
    # binomial check: the 95% interval of p-hat is about +/- 1.96 sqrt(p(1-p)/n)
    p = b["mean"]
    assert (b["high"] - b["low"]) / 2 == pytest.approx(1.96 * math.sqrt(p * (1 - p) / 2000), rel=0.15)
    assert eval_metrics.bootstrap_interval([[1, 0], [1, 1]])["mean"] == 0.75  # runs x questions: averaged over runs


# ------------------------------------------------------------------------- BLEU / chrF / protocol matches

def test_translation_scores_equal_sacrebleu():
    import sacrebleu

    hyps = ["Откройте файл.", "Нажмите кнопку OK", "кошка спит"]
    refs = ["Откройте файл.", "Нажмите кнопку ОК.", "Кошка спит."]
    s = eval_metrics.translation_scores(hyps, refs)
    assert s["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert s["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    upper = np.mean([sacrebleu.sentence_bleu(h.upper(), [r.upper()]).score for h, r in zip(hyps, refs)])
    assert s["sentence_bleu_upper"] == pytest.approx(upper)
    assert s["sentence_bleu_upper"] > np.mean([sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(hyps, refs)])
    zh = eval_metrics.translation_scores(["打开文件"], ["打开文件。"], target_lang="zh")
    assert zh["bleu"] == pytest.approx(sacrebleu.corpus_bleu(["打开文件"], [["打开文件。"]], tokenize="zh").score)


def test_protocol_matches():
    items = [eval_tasks.GenItem("p", "B"), eval_tasks.GenItem("p", "C"), eval_tasks.GenItem("p", ["Paris", "paris"], "substring"),
             eval_tasks.GenItem("p", "Abc", "substring")]
    assert eval_metrics.gen_scores(items, ["  b) blue", "D", "It is Paris.", "abc"]) == [1.0, 0.0, 1.0, 0.0]
    assert eval_metrics.first_letter("\n c") == "C"


def test_prompts_follow_recipe_section_7():
    assert eval_tasks.mmlu_prompt("2+2?", ["3", "4", "5", "6"]) == "Question: 2+2?\nOptions: A) 3 B) 4 C) 5 D) 6\nAnswer:"
    assert eval_tasks.arc_prompt("Q?", ["x", "y"]) == "Question: Q?\nOptions:\nA) x\nB) y\nAnswer:"
    assert eval_tasks.squad_prompt("C", "Q?") == "Context: C\nQuestion: Q?\nAnswer:"
    assert eval_tasks.translation_prompt("Hi", "en", "ru") == "Translate from English to Russian:\nHi\nAnswer:"


def test_run_protocol_greedy_runs_agree_and_sampling_is_seeded(model, tok):
    items = [eval_tasks.GenItem(eval_tasks.arc_prompt("Which?", ["x", "y"]), "A"), eval_tasks.GenItem(eval_tasks.arc_prompt("Other?", ["x", "y"]), "B")]
    greedy = scoring.run_protocol(model, tok, items, max_new_tokens=2, runs=3, sample=False)
    assert greedy["protocol"]["sigma"] == 0.0 and len(set(greedy["run_means"])) == 1
    a = scoring.generate_texts(model, tok, [it.prompt for it in items], 3, sample=True, seed=5, stop=None)
    b = scoring.generate_texts(model, tok, [it.prompt for it in items], 3, sample=True, seed=5, stop=None)
    assert a == b
    # batched left-padded greedy generation == one prompt at a time
    one = [scoring.generate_texts(model, tok, [it.prompt], 3, batch=1, stop=None)[0] for it in items]
    assert scoring.generate_texts(model, tok, [it.prompt for it in items] , 3, batch=2, stop=None) == one


# ------------------------------------------------------------------------- bits per character

def test_text_bpc_counts_every_character_and_matches_the_loss(model, tok):
    texts = ["Open the file.", "Откройте файл."]
    r = scoring.text_bpc(model, tok, texts)
    assert r["chars"] == sum(map(len, texts))
    nll = 0.0
    for t in texts:
        ids = torch.tensor([[tok.eos_token_id] + scoring.encode(tok, t) + [tok.eos_token_id]])
        with torch.no_grad():
            nll += float(model(input_ids=ids, labels=ids, num_items_in_batch=1).loss)
    assert r["bpc"] == pytest.approx(nll / math.log(2) / r["chars"], rel=1e-5)
    assert r["char_ppl"] == pytest.approx(2 ** r["bpc"])
    long = scoring.text_bpc(model, tok, ["Open the file. " * 20])  # longer than the 128-token context: windows
    assert long["tokens"] == len(scoring.encode(tok, "Open the file. " * 20)) + 1


def test_text_bpc_carries_a_bootstrap_interval_over_texts(model, tok):
    """Issue 24: held-out bits/char had no interval. It is the ratio-of-sums bootstrap over the
    texts, each text's bits computed from its own loss."""
    from bvvlab.core.intervals import ratio_interval

    texts = ["Open the file.", "Откройте файл.", "Save the document as PDF.", "Закройте окно.", "Print it."]
    r = scoring.text_bpc(model, tok, texts)
    bits = []
    for t in texts:
        ids = torch.tensor([[tok.eos_token_id] + scoring.encode(tok, t) + [tok.eos_token_id]])
        with torch.no_grad():
            bits.append(float(model(input_ids=ids, labels=ids, num_items_in_batch=1).loss) / math.log(2))
    iv = ratio_interval(bits, [len(t) for t in texts])
    assert r["bpc_low"] == pytest.approx(iv["low"], rel=1e-5) and r["bpc_high"] == pytest.approx(iv["high"], rel=1e-5)
    assert r["bpc_low"] < r["bpc"] < r["bpc_high"]


def test_heldout_texts_come_from_test_splits():
    from bvvlab.corpus.parallel_text import parallel_pairs

    h = scoring.heldout_texts(2000)
    assert set(h) == {"en", "ru", "zh", "mixed"}
    train = {r["en"] for r in parallel_pairs("libreoffice-en-ru", "train")}
    assert h["en"] and not set(h["en"]) & train


# ------------------------------------------------------------------------- loaders

def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_user_task_file_answers_by_index_letter_or_text(tmp_path, model, tok):
    p = _jsonl(tmp_path / "t.jsonl", [{"question": "Cat?", "choices": ["кошка", "дом"], "answer": 0},
                                      {"question": "Dog?", "choices": ["red", "dog", "table"], "answer": "B"},
                                      {"question": "Red?", "choices": ["red", "dog"], "answer": "red"}])
    t = eval_tasks.load_task_file(p)
    assert [it.answer for it in t.items] == [0, 1, 0]
    assert t.items[0].context == "Question: Cat?\nAnswer:" and t.items[0].choices == [" кошка", " дом"]
    assert t.chance == pytest.approx((1 / 2 + 1 / 3 + 1 / 2) / 3)
    assert t.gen[1].prompt == "Question: Dog?\nOptions:\nA) red\nB) dog\nC) table\nAnswer:" and t.gen[1].answer == "B"
    rows = scoring.evaluate_task(model, tok, t)
    assert {r["metric"] for r in rows} == {"acc", "acc_norm"} and all(r["n"] == 3 for r in rows)


HUB_ROWS = {
    "mmlu": [{"question": "2+2?", "subject": "math", "choices": ["3", "4", "5", "6"], "answer": 1}],
    "arc_easy": [{"id": "x", "question": "Q?", "choices": {"text": ["a", "b", "c", "d"], "label": ["1", "2", "3", "4"]},
                  "answerKey": "3"}],
    "commonsense_qa": [{"id": "y", "question": "Where?", "question_concept": "c",
                        "choices": {"label": list("ABCDE"), "text": ["v", "w", "x", "y", "z"]}, "answerKey": "E"}],
    "squad_v2": [{"id": "s", "title": "t", "context": "Paris is in France.", "question": "Where?",
                  "answers": {"text": ["France"], "answer_start": [12]}},
                 {"id": "u", "title": "t", "context": "c", "question": "q", "answers": {"text": [], "answer_start": []}},
                 {"id": "l", "title": "t", "context": "c", "question": "q",
                  "answers": {"text": ["far too long"], "answer_start": [0]}}],
    "opus100_en_ru": [{"translation": {"en": "Open the file.", "ru": "Откройте файл."}}],
}


def test_hub_loaders_on_local_files_in_hub_format(tmp_path):
    t = eval_tasks.hub_task("mmlu", _jsonl(tmp_path / "mmlu.jsonl", HUB_ROWS["mmlu"]))
    assert t.items[0].answer == 1 and t.gen[0].answer == "B" and t.max_new_tokens == 1 and t.chance == 0.25
    assert t.gen[0].prompt == "Question: 2+2?\nOptions: A) 3 B) 4 C) 5 D) 6\nAnswer:"
    t = eval_tasks.hub_task("arc_easy", _jsonl(tmp_path / "arc.jsonl", HUB_ROWS["arc_easy"]))
    assert t.items[0].answer == 2 and t.gen[0].answer == "3" and "\n3) c\n" in t.gen[0].prompt and t.max_new_tokens == 2
    t = eval_tasks.hub_task("commonsense_qa", _jsonl(tmp_path / "csqa.jsonl", HUB_ROWS["commonsense_qa"]))
    assert t.items[0].answer == 4 and t.chance == 0.2
    t = eval_tasks.hub_task("squad_v2", _jsonl(tmp_path / "sq.jsonl", HUB_ROWS["squad_v2"]))
    assert len(t.gen) == 1 and t.gen[0].answer == ["France"] and t.gen[0].match == "substring"  # answerable, <= 8 chars
    t = eval_tasks.hub_task("opus100_ru_en", _jsonl(tmp_path / "op.jsonl", HUB_ROWS["opus100_en_ru"]))
    assert t.items == [("Откройте файл.", "Open the file.")] and t.tgt_lang == "en"


@pytest.mark.slow
def test_offline_suites_are_current_and_never_training_text(tmp_path):
    from bvvlab.corpus.parallel_text import parallel_pairs

    man = suites.build_offline_suites(tmp_path / "eval")
    for f in man["files"]:
        assert (tmp_path / "eval" / f).read_bytes() == (suites.SUITE_DIR / f).read_bytes(), \
            f"data/eval/{f} is stale: run python scripts/build_eval_suites.py"
    tasks = {t.name: t for t in suites.offline_suite()}
    test_ids = {r["id"] for r in parallel_pairs("libreoffice-en-ru", "test")}
    tr = tasks["libreoffice-en-ru"]
    assert len(tr.items) == 128 and {json.loads(x)["id"] for x in
                                      (suites.SUITE_DIR / "libreoffice-en-ru.jsonl").read_text().splitlines()[1:]} <= test_ids
    held = set(man["holdout_concepts"])
    for name in ("concepts-word-en-ru", "concepts-category", "concepts-odd-one-out"):
        a, b = tasks[f"{name}/trained"], tasks[f"{name}/heldout"]
        assert a.chance == b.chance == 0.25 and all(len(it.choices) == 4 for it in a.items + b.items)
        assert {it.meta.get("concept") for it in b.items} <= held
    rows = [json.loads(x) for x in (suites.SUITE_DIR / "concepts-word-en-ru.heldout.jsonl").read_text().splitlines()[1:]]
    assert rows and all(r["concept"] in held and len(set(r["choices"])) == 4 for r in rows)


# ------------------------------------------------------------------------- bad input, one line each

def test_bad_task_files_are_one_line(tmp_path):
    cases = {"empty": ([], "is empty"),
             "nochoices": ([{"question": "Q?", "answer": 0}], "has no choices"),
             "badanswer": ([{"question": "Q?", "choices": ["a", "b"], "answer": "c"}], "not among the 2 choices")}
    for name, (rows, words) in cases.items():
        p = _jsonl(tmp_path / f"{name}.jsonl", rows)
        with pytest.raises(eval_tasks.EvalError, match=words) as ei:
            eval_tasks.load_task_file(p)
        assert "\n" not in str(ei.value)
    with pytest.raises(eval_tasks.EvalError, match="index"):
        eval_tasks.load_task_file(_jsonl(tmp_path / "idx.jsonl", [{"question": "Q?", "choices": ["a", "b"], "answer": 2}]))


def test_tokenizer_model_vocab_mismatch_is_one_line(tok):
    torch.manual_seed(0)
    cfg = config_from_preset("tiny", vocab_size=len(tok) + 3)
    other = BVVForCausalLM.from_glyphs(cfg, torch.randn(len(tok) + 3, cfg.hidden_size))
    with pytest.raises(eval_tasks.EvalError, match=f"tokenizer has {len(tok)} tokens but the model's vocab_size is"):
        scoring.score_choices(other, tok, ITEMS[:1])


def test_hub_name_offline_names_the_local_file_alternative(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(eval_tasks.EvalError, match=r"offline.*--suite mmlu=PATH.jsonl") as ei:
        eval_tasks.hub_task("mmlu")
    assert "\n" not in str(ei.value)


# ------------------------------------------------------------------------- the command

@pytest.mark.slow
def test_eval_command_compares_two_checkpoints(tmp_path, tok, capsys, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    a, b = tmp_path / "a", tmp_path / "b"
    save_checkpoint(make_model(tok, seed=0), tok, a)
    save_checkpoint(make_model(tok, seed=1), tok, b)
    task = _jsonl(tmp_path / "mine.jsonl", [{"question": "Cat?", "choices": ["кошка", "дом"], "answer": 0}] * 3)
    out = tmp_path / "report"
    rc = cli_main(["eval", str(a), str(b), "--suite", f"{task},concepts-category/heldout,bpc", "--limit", "5",
                   "--bpc-chars", "300", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert {r["model"] for r in rows} == {"a", "b"}
    assert {(r["task"], r["metric"]) for r in rows} >= {("mine", "acc"), ("concepts-category/heldout", "acc_norm"),
                                                        ("heldout-zh", "bpc")}
    acc = [r for r in rows if r["task"] == "concepts-category/heldout" and r["metric"] == "acc"]
    assert all(r["n"] == 5 and r["chance"] == 0.25 and r["low"] <= r["mean"] <= r["high"] for r in acc)
    assert (out / "results.md").read_text().startswith("| model | task |")
    assert (out / "plotly.min.js").exists() and 'src="plotly.min.js"' in (out / "results.html").read_text()
    joint = tmp_path / "joint"  # lm-evaluation-harness's tokenisation, recorded in results.json
    assert cli_main(["eval", str(a), "--suite", str(task), "--tokenisation", "joint", "--out", str(joint)]) == 0
    assert json.loads((joint / "results.json").read_text())["tokenisation"] == "joint"
    rc = cli_main(["eval", str(a), "--suite", "mmlu", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "mmlu=PATH.jsonl" in err


def test_translation_and_generative_tasks_give_tidy_rows(tmp_path, model, tok):
    """The offline translation suite and a SQuAD-format generative task through evaluate_task:
    BLEU/chrF rows from the generated text (scored by sacrebleu), the protocol's two intervals."""
    import sacrebleu

    tr = next(t for t in suites.offline_suite() if t.name == "libreoffice-en-ru")
    tr.max_new_tokens = 4
    rows = {r["metric"]: r for r in scoring.evaluate_task(model, tok, tr, limit=3)}
    hyps = scoring.generate_texts(model, tok, [eval_tasks.translation_prompt(s, "en", "ru") for s, _ in tr.items[:3]], 4)
    assert rows["bleu"]["mean"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [[r for _, r in tr.items[:3]]]).score)
    assert rows["chrf"]["n"] == 3 and rows["chrf"]["low"] <= rows["chrf"]["mean"] <= rows["chrf"]["high"]
    sq = eval_tasks.hub_task("squad_v2", _jsonl(tmp_path / "sq.jsonl", HUB_ROWS["squad_v2"]))
    rows = scoring.evaluate_task(model, tok, sq, runs=2, sample=True)
    assert [r["interval"] for r in rows] == ["1.96 sigma/sqrt(2) over runs", "bootstrap over questions"]
    assert all(r["metric"] == "substring_protocol" and r["n"] == 1 for r in rows)


# ------------------------------------------------------------------------- fused checkpoints

@pytest.fixture(scope="module")
def fused_dir(tok, tmp_path_factory):
    """Two tiny experts on one frozen matrix (different seeds and depth), fused (bayes_decay)."""
    from bvvlab.train.fusion import fuse

    root = tmp_path_factory.mktemp("fused-eval")
    a = save_checkpoint(make_model(tok, seed=0), tok, root / "a")
    b = save_checkpoint(make_model(tok, seed=1, glyph_seed=0, num_hidden_layers=3), tok, root / "b")
    fuse([a, b], "bayes_decay", root / "fused", names=["a", "b"])
    return root


@pytest.mark.parametrize("method", ["bayes", "bayes_decay", "entropy"])
def test_fused_cached_batched_scores_equal_each_full_sequence(fused_dir, tok, method):
    """The Bayesian evidence of a fused model rides on the KV cache: it must follow the cache when
    score_choices repeats a shared prefix and a context once per choice (reorder_cache), and left
    padding must add none; so the batched scores equal every sequence scored alone."""
    from bvvlab.models.loader import load

    lm = load(fused_dir / "fused")
    fused, tok2 = lm.model, lm.tokenizer
    fused.config.method = method
    want = scoring.score_full_sequences(fused, tok2, ITEMS)
    for batch, share in ((1, True), (32, True), (32, False)):
        got = scoring.score_choices(fused, tok2, ITEMS, batch=batch, share_prefix=share)
        np.testing.assert_allclose(np.concatenate(got), np.concatenate(want), rtol=1e-5, atol=1e-4)


def test_eval_command_takes_a_fused_checkpoint(fused_dir, tmp_path, capsys, monkeypatch):
    """`bvvlab eval` loads a fused directory like any checkpoint (bvvlab.models.loader.load): finite
    bits/char and accuracies beside its experts'."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    out = tmp_path / "report"
    rc = cli_main(["eval", str(fused_dir / "fused"), str(fused_dir / "a"), "--suite",
                   "concepts-category/heldout,bpc", "--limit", "4", "--bpc-chars", "200", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    rows = json.loads((out / "results.json").read_text())["rows"]
    mine = [r for r in rows if r["model"] == "fused"]
    assert {(r["task"], r["metric"]) for r in mine} >= {("concepts-category/heldout", "acc"), ("heldout-ru", "bpc"),
                                                        ("heldout-mixed", "bpc")}
    assert all(math.isfinite(r["mean"]) for r in mine)
    bpc = {r["task"]: r["mean"] for r in mine if r["metric"] == "bpc"}
    assert all(0 < v < 64 for v in bpc.values()), bpc


def test_left_pad_puts_tokens_at_the_right_end():
    ids, mask = scoring.left_pad([[5, 6, 7], [8], []], pad=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8], [0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]


def test_figure_puts_bits_per_char_accuracies_and_bleu_on_their_own_axes():
    """One axis for bits/char (~28) and accuracies (0-1) flattened the accuracies and their
    chance lines (issue 24): each unit has its panel, the chance ticks sit on the accuracy one."""
    from bvvlab.eval import runner as R

    def row(model, task, metric, mean, chance=None):
        return {"model": model, "task": task, "metric": metric, "mean": mean, "low": None if chance is None else mean - .1,
                "high": None if chance is None else mean + .1, "interval": "bootstrap", "n": 9, "chance": chance}

    rows = [row("a", "heldout-zh", "bpc", 28.0), row("a", "cat", "acc", 0.3, 0.25), row("b", "cat", "acc", 0.28, 0.25),
            row("a", "tr", "chrf", 12.0), row("a", "tr", "bleu", 3.0)]
    fig = R.figure(rows)
    axes = {(t.type, t.name): set() for t in fig.data}
    for t in fig.data:
        axes[(t.type, t.name)].add((t.yaxis, tuple(t.x)))
    assert axes[("bar", "a")] == {("y", ("heldout-zh bpc",)), ("y2", ("cat acc",)), ("y3", ("tr chrf", "tr bleu"))}
    assert axes[("bar", "b")] == {("y2", ("cat acc",))} and axes[("scatter", "chance")] == {("y2", ("cat acc",))}
    assert [a.text for a in fig.layout.annotations] == [label for _, label in R.PANELS]
    assert sorted(t.name for t in fig.data if t.showlegend is not False) == ["a", "b", "chance"]
    only_bpc = R.figure(rows[:1])
    assert {t.yaxis for t in only_bpc.data} == {"y"} and len(only_bpc.layout.annotations) == 1
