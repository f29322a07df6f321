"""The resume rule (bertforge.train.resume) and --extend-steps. Variants covered: same settings (incl. micro batch,
ranks, precision changed: allowed); another data folder, tokenizer, objective, global batch, learning rate, steps,
token budget, seed, data identity: each refused in one line naming the flag, the checkpoint value and the new one; a
larger --steps (or --tokens) without --extend-steps: refused with a pointer to --extend-steps and both values;
numbers equal as int / float accepted; --extend-steps: larger than the checkpoint's total -> the extension (old and
new totals, recorded with the step), equal to an earlier extension -> a plain continuation, smaller or equal to the
planned total -> refused, left out on an extended run -> refused; --extend-steps without --resume, not larger than
--steps, or with the two-phase recipe: refused by the config; a finished run resumed unchanged is a no-op line, an
extended one goes on; the schedule after an extension (warmup kept, decay stretched) and the optimizer's rate set
from it. End to end (CLI): 4 steps, a no-op resume (no engine built), --steps 8 refused, --extend-steps 8: steps 5-8 at the recomputed
rates (> 0), no duplicate metrics lines, config.json lists the extension. Finetuning's resume checks:
tests/finetuning/test_out_and_resume.py."""
import json

import pytest
import torch

from bertforge.config.pretrain import PretrainConfig
from bertforge.errors import ConfigError
from bertforge.optim import schedule_factor, sync_lr, warmup_decay
from bertforge.train.resume import (ResumePlan, check_extension, check_resume, continue_schedule, finished_noop,
                                    plan_resume, record_extension)

SAVED = PretrainConfig().to_flat()


def test_allowed_changes_pass():
    new = dict(SAVED, micro_batch=SAVED["micro_batch"] * 2, precision="bf16", kernels="none", log_every=7,
               lr=float(SAVED["lr"]))
    check_resume(SAVED, new)
    assert check_extension(SAVED, new, 1000) is None


@pytest.mark.parametrize("name,flag,value", [("data_dir", "--data", "other/data"), ("tokenizer", "--tokenizer", "tok"),
                                             ("objective", "--objective", "mlm"),
                                             ("global_batch", "--global-batch", 512), ("lr", "--lr", 5e-3),
                                             ("steps", "--steps", 10), ("token_budget", "--tokens", 10**6),
                                             ("seed", "--seed", 99), ("data_identity", "--data-identity", "v2-abc")])
def test_other_changes_refused_in_one_line(name, flag, value):
    saved = dict(SAVED, data_identity="v2-123")
    with pytest.raises(ConfigError) as err:
        check_resume(saved, dict(saved, **{name: value}), where="run/checkpoints/step_00000010")
    msg = str(err.value)
    assert msg.startswith(f"--resume: {flag} is {value!r} but run/checkpoints/step_00000010 was trained with "
                          f"{saved[name]!r}") and "\n" not in msg
    assert "--extend-steps" not in msg  # fewer steps, a token budget from none: nothing to extend


@pytest.mark.parametrize("name,value,hint", [("steps", 2000, "--extend-steps 2000"), ("token_budget", 10**9,
                                                                                       "--extend-steps N")])
def test_longer_run_without_extend_steps_points_to_it(name, value, hint):
    saved = dict(SAVED, token_budget=10**6) if name == "token_budget" else SAVED
    with pytest.raises(ConfigError) as err:
        check_resume(saved, dict(saved, **{name: value}), where="ck")
    msg = str(err.value)
    assert f"is {value!r} but ck was trained with {saved[name]!r}" in msg and hint in msg and "\n" not in msg


def test_extension_totals():
    assert check_extension(SAVED, dict(SAVED, extend_steps=1500), 1000, "ck") == (1000, 1500)
    extended = dict(SAVED, extend_steps=1500)
    assert check_extension(extended, dict(extended), 1000, "ck") is None  # continuing the extended run
    assert check_extension(extended, dict(SAVED, extend_steps=2000), 1000, "ck") == (1500, 2000)
    with pytest.raises(ConfigError, match=r"^--resume: --extend-steps is 1200 but ck's run already has 1500 steps"):
        check_extension(extended, dict(SAVED, extend_steps=1200), 1000, "ck")
    with pytest.raises(ConfigError, match=r"^--resume: --extend-steps is not given but ck belongs to a run "
                                          r"extended to 1500 steps; pass --extend-steps 1500"):
        check_extension(extended, dict(SAVED), 1000, "ck")
    old = {k: v for k, v in SAVED.items() if k != "extend_steps"}  # a checkpoint from before the field
    assert check_extension(old, dict(SAVED, extend_steps=1200), 1000, "ck") == (1000, 1200)


def test_extend_steps_config_checks():
    with pytest.raises(ConfigError, match=r"^--extend-steps 8 lengthens a run being resumed; add --resume"):
        PretrainConfig.from_flat(steps=4, extend_steps=8)
    with pytest.raises(ConfigError, match=r"^--extend-steps 4 must be larger than the run's planned total of 4"):
        PretrainConfig.from_flat(steps=4, extend_steps=4, resume=True)
    from bertforge.config.names import normalize, schema

    assert normalize({"extend-steps": "300"}, schema("pretrain"), "run.yaml") == {"extend_steps": 300}  # file / API
    cfg = PretrainConfig.from_flat(steps=100, warmup_ratio=0.1, extend_steps=300, resume=True)
    assert (cfg.planned_steps(), cfg.total_steps(), cfg.warmup()) == (100, 300, 10)  # the planned run's warmup
    from bertforge.training.phases import phase_configs

    with pytest.raises(ConfigError, match=r"^--extend-steps 300 lengthens one run, not the two-phase recipe"):
        phase_configs(cfg, {"steps": 10})


def test_finished_run_is_a_noop():
    assert "nothing to do" in finished_noop(True, None, "run", 10) and "N > 10" in finished_noop(True, None, "r", 10)
    assert finished_noop(True, (10, 20), "run") is None
    assert finished_noop(False, None, "run") is None


def test_plan_records_each_extension_once():
    meta = {"train_config": dict(SAVED, steps=4), "finished": True, "step": 4, "extended": []}
    plan = plan_resume(meta, dict(SAVED, steps=4, extend_steps=8), "ck", 4)
    assert plan.noop is None and plan.extension == (4, 8)
    assert plan.extended == [{"step": 4, "from_steps": 4, "to_steps": 8}]
    later = {"train_config": dict(SAVED, steps=4, extend_steps=8), "finished": False, "step": 6,
             "extended": plan.extended}  # preempted at step 6, resumed with the same command
    again = plan_resume(later, dict(SAVED, steps=4, extend_steps=8), "ck", 4)
    assert again.extension is None and again.extended == plan.extended and again.noop is None
    done = dict(later, finished=True, step=8)
    assert "N > 8" in plan_resume(done, dict(SAVED, steps=4, extend_steps=8), "ck", 4).noop
    assert record_extension(plan.extended, 8, (8, 12))[-1] == {"step": 8, "from_steps": 8, "to_steps": 12}


@pytest.mark.parametrize("decay", ["poly", "linear", "cosine", "constant"])
def test_extended_schedule_keeps_warmup_and_stretches_decay(decay):
    """After 4 of 4 steps (rate 0 restored), extended to 8: the next rate is the 8-step schedule's at step 4, warmup
    steps unchanged, and the rates of steps 5-8 are those of a run planned for 8 steps with the same warmup."""
    param = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([param], lr=0.5)
    old = warmup_decay(opt, 2, 4, decay)
    for _ in range(4):
        opt.step()
        old.step()
    state = old.state_dict()
    assert opt.param_groups[0]["lr"] == (0.5 if decay == "constant" else pytest.approx(0.0))
    new = warmup_decay(opt, 2, 8, decay)
    new.load_state_dict(state)
    logged = []
    plan = ResumePlan(extension=(4, 8), extended=[{"step": 4, "from_steps": 4, "to_steps": 8}])
    continue_schedule(new, plan, logged.append, warmup=2, decay=decay)
    rates = []
    for _ in range(4):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        new.step()
    assert rates == [0.5 * schedule_factor(s, 2, 8, decay) for s in range(4, 8)] and min(rates) > 0
    assert len(logged) == 1 and "warmup unchanged (2 steps)" in logged[0] and "end at step 8" in logged[0]
    assert f"{rates[0]:.6g}" in logged[0]


def test_sync_lr_leaves_an_unchanged_schedule_bit_equal():
    param = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([param], lr=1e-3)
    sched = warmup_decay(opt, 3, 10, "poly", power=2.0)
    for _ in range(5):
        opt.step()
        sched.step()
    before = opt.param_groups[0]["lr"]
    assert sync_lr(sched) == [before] and opt.param_groups[0]["lr"] == before


def test_pretrain_resume_follows_the_rule(tmp_path):
    """The trainer's call site, end to end: 4 steps; resumed unchanged: a no-op (no new metrics lines); --steps 8:
    one line pointing to --extend-steps; --extend-steps 8: steps 5-8 at the 8-step schedule's rates (warmup kept),
    no duplicate metrics lines, config.json keeps --steps 4 (a new run from it: no --resume, no
    --extend-steps) and lists the extension."""
    import subprocess

    from tests.training.conftest import REPO, worker_env
    from tests.train.test_checkpoint_verify import _cli

    run = tmp_path / "run"
    launch = lambda *extra: subprocess.run(_cli(run, "--steps", "4", "--eval-every", "2", "--warmup-steps", "1",
                                                *extra), env=worker_env(), cwd=REPO, capture_output=True, text=True,
                                           timeout=300)
    first = launch()
    assert first.returncode == 0, first.stderr[-3000:]
    before = (run / "metrics.jsonl").read_text()
    again = launch("--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "the run finished; nothing to do" in again.stderr and (run / "metrics.jsonl").read_text() == before
    assert "--extend-steps N with N > 4" in again.stderr
    engine = "parallelize: DeepSpeed engine"  # decided from meta.json: no engine built to say nothing to do
    assert engine in first.stderr and engine not in again.stderr and "resumed from" not in again.stderr
    bad = launch("--steps", "8", "--resume")
    errors = [line for line in bad.stderr.splitlines() if line.startswith("bertforge pretrain: error:")]
    assert bad.returncode == 2 and len(errors) == 1, bad.stderr[-2000:]
    assert errors[0].startswith("bertforge pretrain: error: --resume: --steps is 8 but ")
    assert "trained with 4" in errors[0]
    assert "keep --steps 4 and pass --extend-steps 8" in errors[0]
    assert (run / "metrics.jsonl").read_text() == before

    longer = launch("--resume", "--extend-steps", "8")
    assert longer.returncode == 0, longer.stderr[-3000:]
    assert "--extend-steps 8: the run goes on from step 4 to 8 steps (it had 4)" in longer.stderr
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    keys = [(x["step"], x["split"]) for x in lines]
    assert len(keys) == len(set(keys)), keys  # no duplicate lines
    assert (run / "metrics.jsonl").read_text().startswith(before)  # the first 4 steps' lines kept as they were
    lr = {x["step"]: x["lr"] for x in lines if x["split"] == "train"}
    assert sorted(lr) == list(range(1, 9))
    for step in range(5, 9):  # lr of step s: the 8-step schedule with the run's 1 warmup step, at s - 1
        assert lr[step] == pytest.approx(1e-3 * schedule_factor(step - 1, 1, 8, "poly"), rel=1e-12) and lr[step] > 0
    assert [x["step"] for x in lines if x["split"] == "eval"] == [2, 4, 6, 8]
    config = json.loads((run / "config.json").read_text())
    # config.json repeats the run as planned (`--config`): no resume, no extension; the extensions listed apart
    assert config["train"]["steps"] == 4 and config["train"]["extend_steps"] == 0 and not config["train"]["resume"]
    assert config["extended"] == [{"step": 4, "from_steps": 4, "to_steps": 8}]
