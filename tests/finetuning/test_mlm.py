"""Domain-adaptive MLM on a tiny model: held-out masked accuracy improves, masks are fixed across before/after."""
import json
import random

from bertforge.cli import main

WORDS = "the a is was of and to in it good bad great awful fine john mary london paris google today".split()


def test_mlm_improves_held_out_accuracy(tiny_ckpt, tmp_path, capsys):
    rng = random.Random(0)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    # a "domain": a few fixed phrases, so the masked words are predictable from context. Within this test's 64
    # steps the tiny model learns the domain's unigram distribution, not yet the context (that takes hundreds of
    # steps), so it predicts the most frequent word: "the", three times as frequent as any other. Two words tied for
    # first make the held-out accuracy a coin flip between their held-out frequencies, decided by the dropout draws.
    phrases = ["the food and the service", "the film and the movie", "john met the new apple", "mary visited the city"]
    for d in range(18):
        text = "\n\n".join(" ".join(rng.choice(phrases) for _ in range(4)) for _ in range(6))
        (corpus / f"doc{d}.txt").write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    rc = main(["finetune", "mlm", "--model", str(tiny_ckpt), "--corpus", str(corpus), "--format", "txt-file",
               "--held-out", "0.34", "--max-seq-length", "24", "--epochs", "8", "--lr", "5e-3", "--global-batch", "8",
               "--threads", "1", "--no-progress", "--out", str(out)])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    before, after = summary["before"], summary["test"]
    env = summary["environment"]  # provenance (engine/provenance.py)
    assert env["world_size"] == 1 and env["torch"] and env["bertforge"]["version"] and env["hosts"]
    assert after["mlm_acc"]["mean"] > before["mlm_acc"] + 0.2
    assert after["perplexity"]["mean"] < before["perplexity"]
    # the unigram baseline of the same masks, printed beside the result (as pretraining does)
    baseline = before["mlm_unigram_acc"]
    assert 0 < baseline < 1 and after["mlm_unigram_acc"]["mean"] == baseline
    assert f"(unigram baseline {baseline:.4f}" in capsys.readouterr().out
    assert (out / "seed-1" / "model.safetensors").is_file()


def test_fixed_eval_masks_are_deterministic(tiny_ckpt):
    from bertforge.finetuning.mlm import build_task
    from bertforge.data.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_ckpt)
    docs = [" ".join(random.Random(i).choices(WORDS, k=60)) for i in range(9)]
    a = build_task(tok, docs, 32, 0.34, 0, None, None)
    b = build_task(tok, docs, 32, 0.34, 0, None, None)
    assert a.test == b.test and a.dev == b.dev
    masked = [l for f in a.test for l in f["mlm_labels"] if l != -100]
    top = max(masked.count(t) for t in set(masked))
    assert a.unigram_accuracy("test") == top / len(masked)
    total = sum(len(f["mlm_labels"]) - 2 for f in a.test)
    assert 0.1 < len(masked) / total < 0.2


def test_short_texts_are_packed_into_full_sequences_with_no_token_dropped(tiny_ckpt):
    from bertforge.data.tokenizer import load_tokenizer
    from bertforge.finetuning.mlm import build_task

    tok = load_tokenizer(tiny_ckpt)
    rng = random.Random(3)
    docs = [" ".join(rng.choices(WORDS, k=rng.randint(2, 5))) for _ in range(120)]  # titles, queries, short posts
    n_tokens = sum(len(tok.encode(d, add_special_tokens=False).ids) for d in docs)
    task = build_task(tok, docs, 32, 0.1, 0, None, None)
    seqs = [f["input_ids"] for part in (task.train, task.dev, task.test) for f in part]
    assert len(task.train) >= 10 and all(len(f["input_ids"]) == 32 for f in task.train[:-1])  # full, tail shorter
    # each of the 3 parts: [CLS] its documents' tokens, one [SEP] between consecutive documents [SEP], cut in blocks
    assert sum(len(s) - 2 for s in seqs) == n_tokens + len(docs) - 3


def test_training_masks_follow_the_example_not_the_micro_batch(tiny_ckpt):
    """With per-example keys, an example's training mask is the same whether it lands in a micro batch of 8 or in
    the second half of one of 16 (so --micro-batch, also on resume, leaves finetune mlm's run unchanged)."""
    import numpy as np
    from bertforge.data.tokenizer import load_tokenizer
    from bertforge.finetuning.mlm import build_task

    tok = load_tokenizer(tiny_ckpt)
    docs = [" ".join(random.Random(i).choices(WORDS, k=60)) for i in range(40)]
    task = build_task(tok, docs, 32, 0.2, 0, None, None)
    feats = task.train[:16]
    keys = np.arange(16)
    whole = task.collate(feats, seed=(1, 0, keys))
    halves = [task.collate(feats[i:i + 8], seed=(1, i // 8, keys[i:i + 8])) for i in (0, 8)]
    assert whole["mlm_labels"][8:].tolist() == halves[1]["mlm_labels"].tolist()
    assert whole["mlm_labels"][:8].tolist() == halves[0]["mlm_labels"].tolist()
    assert (whole["mlm_labels"] != -100).any()
