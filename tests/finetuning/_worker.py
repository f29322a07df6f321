"""Multi-process worker of the finetuning tests: `python _worker.py SPEC.json` as a plain process or under
`torchrun --nproc_per_node 2`. SPEC is a list of runs, each {"argv": [...bertforge arguments...], "sigterm_at": N
(optional)}; they run one after the other in this process (DeepSpeed and the process group are set up once), each
through the command line's own parser and command function. With sigterm_at, rank 0 sends itself SIGTERM before
optimizer step N + 1, as a preemption would. Each run's exit status goes to SPEC.rank{R}.codes.json."""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bertforge import distributed as D  # noqa: E402


def main(spec_path: Path) -> None:
    from bertforge.cli import main as cli_main
    from bertforge.train.trainer import Trainer

    real_finish, real_step = D.finish, Trainer.train_step
    D.finish = lambda code: None  # every run but the last leaves the process group standing
    codes = []
    for run in json.loads(spec_path.read_text()):
        at = run.get("sigterm_at")

        def train_step(self, *args, _at=at, **kwargs):
            if _at is not None and self.step == _at and self.rank == 0:
                os.kill(os.getpid(), signal.SIGTERM)
            return real_step(self, *args, **kwargs)

        Trainer.train_step = train_step
        codes.append(cli_main(run["argv"]))
    Trainer.train_step = real_step
    Path(f"{spec_path}.rank{D.rank()}.codes.json").write_text(json.dumps(codes))
    real_finish(0)


if __name__ == "__main__":
    D.prepare_env()
    try:
        main(Path(sys.argv[1]))
    except BaseException as exc:
        print(f"worker rank {D.rank()} failed: {D.describe_failure(exc)}", file=sys.stderr, flush=True)
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
