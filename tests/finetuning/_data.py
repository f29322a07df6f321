"""Small synthetic labelled files for the finetuning tests (words from the tiny checkpoint's vocabulary, see
conftest.py): a learnable sentiment CSV, a CoNLL NER file, a part-of-speech file with plain tags."""
import random


def sentiment_csv(path, n, seed):
    rng = random.Random(seed)
    pos, neg = ["good", "great", "love", "fine"], ["bad", "awful", "hate", "meh"]
    filler = ["the", "movie", "food", "service", "was", "today", "a"]
    lines = ["text,label"]
    for i in range(n):
        label = rng.choice(["pos", "neg"])
        words = rng.sample(filler, 3) + [rng.choice(pos if label == "pos" else neg)] + rng.sample(filler, 2)
        rng.shuffle(words)
        lines.append(f"{' '.join(words)} {i},{label}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def ner_conll(path, n, seed):
    rng = random.Random(seed)
    people, places = ["john", "mary"], ["london", "paris", "new york"]
    out = []
    for _ in range(n):
        who, where = rng.choice(people), rng.choice(places).split()
        toks = [(who, "B-PER"), ("visited", "O")] + [(w, ("B-LOC" if k == 0 else "I-LOC")) for k, w in enumerate(where)]
        toks += [("today", "O")] if rng.random() < 0.5 else [("and", "O"), (rng.choice(people), "B-PER")]
        out.append("\n".join(f"{w}\t{t}" for w, t in toks))
    path.write_text("\n\n".join(out) + "\n", encoding="utf-8")
    return path


POS = {"the": "DT", "a": "DT", "movie": "NN", "film": "NN", "food": "NN", "service": "NN", "was": "VBD",
       "is": "VBZ", "good": "JJ", "bad": "JJ", "great": "JJ", "awful": "JJ", "john": "NNP", "mary": "NNP",
       "london": "NNP", "paris": "NNP", "visited": "VBD", "today": "NN", "and": "CC", "it": "PRP"}


def pos_conll(path, n, seed):
    """Sentences of words with their part-of-speech tags (plain tags, one per word)."""
    rng = random.Random(seed)
    templates = [["the", "N", "was", "J"], ["P", "visited", "P", "today"], ["it", "is", "a", "J", "N"],
                 ["P", "and", "P", "visited", "P"]]
    pick = {"N": ["movie", "film", "food", "service"], "J": ["good", "bad", "great", "awful"],
            "P": ["john", "mary", "london", "paris"]}
    out = []
    for _ in range(n):
        words = [rng.choice(pick[w]) if w in pick else w for w in rng.choice(templates)]
        out.append("\n".join(f"{w}\t{POS[w]}" for w in words))
    path.write_text("\n\n".join(out) + "\n", encoding="utf-8")
    return path
