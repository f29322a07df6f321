"""A 2-step pretraining run and a 1-epoch finetune run with every tracker on (run by tests/train/test_trackers.py),
in one process, recording every warning. Prints one JSON line: the warnings' messages and whether the environment
came back unchanged. Arguments: a scratch folder, then the --report-to value."""
import json
import os
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.engine._notebook import REVIEWS, TINY, tiny_checkpoint  # noqa: E402


def main(root: Path, report_to: str) -> None:
    import bertforge

    model_dir = tiny_checkpoint(root)
    before = dict(os.environ)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bertforge.pretrain(synthetic_vocab=64, preset="tiny", model=TINY, max_seq_length=32, micro_batch=4,
                           global_batch=4, steps=2, log_every=1, eval_samples=4, progress=False, export_hf=False,
                           report_to=report_to, output_dir=str(root / "pretrain"))
        bertforge.finetune("classify", model=str(model_dir), data=str(REVIEWS), out=str(root / "classify"),
                           epochs=2, min_steps=0, global_batch=8, max_seq_length=32, threads=1, progress=False, log_every=1,
                           report_to=report_to)
    changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
    print(json.dumps({"warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
                      "environment_changed": changed}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
