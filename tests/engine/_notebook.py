"""A notebook session in one process (run by tests/engine/test_api.py): two `bertforge.pretrain` calls, one
`bertforge.finetune` and one `bertforge.predict`, each followed by a check that the process is as it was before —
no launcher variable, the same environment, no process group. Prints one JSON line of results. Argument: a
scratch folder."""
import json
import os
import string
import sys
from pathlib import Path

import bertforge
import bertforge.errors

LAUNCHER = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
REVIEWS = Path(__file__).resolve().parents[1] / "finetuning" / "data" / "reviews.csv"
TINY = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64, "num_hidden_layers": 1}


def tiny_checkpoint(root: Path) -> Path:
    """A 1-layer hidden-32 BERT in Hugging Face format with a character vocabulary (the words of reviews.csv)."""
    import torch

    from bertforge.config.model import tiny
    from bertforge.hf import export_hf
    from bertforge.model import BertModel

    words = sorted({w.lower().strip(".,!?") for line in REVIEWS.read_text().splitlines()[1:]
                    for w in line.rsplit(",", 1)[0].split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *string.ascii_lowercase, *string.digits,
             *[f"##{c}" for c in string.ascii_lowercase + string.digits], *[w for w in words if len(w) > 1]]
    (root / "tok").mkdir(parents=True)
    (root / "tok" / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    torch.manual_seed(0)
    config = tiny(**TINY, vocab_size=len(dict.fromkeys(vocab)), max_position_embeddings=64)
    return export_hf(BertModel(config), root / "model", tokenizer_dir=root / "tok")


def check_clean(before: dict, after_what: str) -> None:
    import torch.distributed as dist

    left = {k: os.environ[k] for k in LAUNCHER if k in os.environ}
    changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
    assert not left, f"{after_what} left launcher variables {left}"
    assert not changed, f"{after_what} changed the environment: {changed}"
    assert not dist.is_initialized(), f"{after_what} left a process group"


def main(root: Path) -> None:
    model_dir = tiny_checkpoint(root)
    before = dict(os.environ)
    synthetic = {"synthetic_vocab": 64, "preset": "tiny", "model": TINY, "max_seq_length": 32, "micro_batch": 4,
                 "global_batch": 4, "log_every": 1, "eval_samples": 4, "progress": False, "export_hf": False}
    first = bertforge.pretrain(synthetic, steps=2, output_dir=str(root / "p1"))
    check_clean(before, "the first pretrain")
    second = bertforge.pretrain({**synthetic, "objective": "mlm"}, steps=3, lr=5e-4, output_dir=str(root / "p2"),
                                phase2_steps=1, phase2_max_seq_length=48)  # BERT's two phases, the second at 48
    check_clean(before, "the second pretrain")
    try:
        bertforge.pretrain(data=str(root / "missing"), output_dir=str(root / "p3"), progress=False)
        raise AssertionError("a pretrain on a missing dataset did not fail")
    except bertforge.errors.UserError as exc:
        failure = str(exc)
    check_clean(before, "a failed pretrain")
    summary = bertforge.finetune("classify", model=str(model_dir), data=str(REVIEWS), out=str(root / "clf"),
                                 epochs=1, global_batch=8, max_seq_length=32, threads=1, progress=False)
    check_clean(before, "finetune")
    rows = bertforge.predict(root / "clf" / "seed-1", REVIEWS, max_seq_length=32)
    check_clean(before, "predict")
    print(json.dumps({"first": [first.status, first.step, sorted(first.eval)], "second": [second.status, second.step, [p.step for p in second.phases],
                                 Path(second.output_dir).relative_to(root).as_posix()],
                      "second_lr": second.config["lr"], "failure": failure, "finetune": [summary["status"], sorted(summary)],
                      "predictions": len(rows), "labels": sorted({r["label"] for r in rows}),
                      "classes": sorted(rows[0]["probabilities"])}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
