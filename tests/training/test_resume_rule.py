"""The resume rule (bertforge.train.resume). Variants covered: same settings (incl. micro batch, ranks,
precision changed: allowed); another data folder, tokenizer, objective, global batch, learning rate, steps without
--extend-steps, seed: each refused in one line naming the flag, the checkpoint value and the new one; numbers equal
as int / float accepted; --extend-steps with more steps returns the change (recorded), with fewer steps refused; a
finished run resumed unchanged is a no-op line, an extended one goes on; finetune's data identity."""
import pytest

from bertforge.config.pretrain import PretrainConfig
from bertforge.errors import ConfigError
from bertforge.train.resume import check_resume, finished_noop, record_change

SAVED = PretrainConfig().to_flat()


def test_allowed_changes_pass():
    new = dict(SAVED, micro_batch=SAVED["micro_batch"] * 2, precision="bf16", kernels="none", log_every=7,
               lr=float(SAVED["lr"]))
    assert check_resume(SAVED, new) == {}


@pytest.mark.parametrize("name,value", [("data_dir", "other/data"), ("tokenizer", "other/tok"),
                                        ("objective", "mlm"), ("global_batch", 512), ("lr", 5e-3),
                                        ("steps", 10**6), ("seed", 99), ("data_identity", "v2-abc")])
def test_other_changes_refused_in_one_line(name, value):
    saved = dict(SAVED, data_identity="v2-123")
    with pytest.raises(ConfigError) as err:
        check_resume(saved, dict(saved, **{name: value}), where="run/checkpoints/step_00000010")
    msg = str(err.value)
    flag = "--" + name.replace("_", "-")
    assert msg.startswith(f"--resume: {flag} is {value!r} but run/checkpoints/step_00000010 was trained with "
                          f"{saved[name]!r}") and "\n" not in msg


def test_extend_steps():
    new = dict(SAVED, steps=SAVED["steps"] + 100)
    changes = check_resume(SAVED, new, allow={"extend_steps"})
    assert changes == {"steps": (SAVED["steps"], SAVED["steps"] + 100)}
    assert record_change([], 40, changes) == [{"step": 40, "setting": "steps", "from": SAVED["steps"],
                                                "to": SAVED["steps"] + 100}]
    with pytest.raises(ConfigError, match="must be larger"):
        check_resume(SAVED, dict(SAVED, steps=1), allow={"extend_steps"})
    with pytest.raises(ConfigError, match="--lr"):  # extending steps does not open the learning rate
        check_resume(SAVED, dict(new, lr=1.0), allow={"extend_steps"})


def test_finished_run_is_a_noop():
    assert "nothing to do" in finished_noop(True, {}, "run")
    assert finished_noop(True, {"steps": (10, 20)}, "run") is None
    assert finished_noop(False, {}, "run") is None


def test_pretrain_resume_follows_the_rule(tmp_path):
    """The trainer's call site: a finished run resumed unchanged is a no-op (no new metrics lines); another
    --global-batch or --steps is one line naming the setting and both values."""
    import subprocess

    from tests.training.conftest import REPO, worker_env
    from tests.train.test_checkpoint_verify import _cli

    run = tmp_path / "run"
    first = subprocess.run(_cli(run, "--steps", "2", "--eval-every", "2"), env=worker_env(), cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    before = (run / "metrics.jsonl").read_text()
    again = subprocess.run(_cli(run, "--steps", "2", "--eval-every", "2", "--resume"), env=worker_env(), cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "the run finished; nothing to do" in again.stderr and (run / "metrics.jsonl").read_text() == before
    bad = subprocess.run(_cli(run, "--steps", "4", "--eval-every", "2", "--resume"), env=worker_env(), cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    errors = [line for line in bad.stderr.splitlines() if line.startswith("bertforge: error:")]
    assert bad.returncode == 2 and len(errors) == 1, bad.stderr[-2000:]
    assert errors[0].startswith("bertforge: error: --resume: --steps is 4 but ") and "trained with 2" in errors[0]
    assert (run / "metrics.jsonl").read_text() == before
