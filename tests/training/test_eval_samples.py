"""--eval-samples (held-out samples: the same for any --micro-batch and number of ranks) replaced --eval-batches
(held-out micro batches): the old name is refused in one line naming the new one, as a flag, a config file's key
and a Python keyword; a --resume of a checkpoint written with the old name scores the samples its run scored, and
says so."""
import json
import shutil

import pytest
import torch

from bertforge.cli import main
from bertforge.config.pretrain import PretrainConfig
from bertforge.errors import ConfigError

TINY = ["--synthetic-vocab", "64", "--model", "hidden_size=32", "--model", "num_attention_heads=2", "--model",
        "intermediate_size=64", "--model", "num_hidden_layers=1", "--max-seq-length", "32", "--no-progress",
        "--no-export-hf"]


def _one_line_error(capsys, argv) -> str:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    return err.strip()


def test_the_old_name_is_refused_naming_the_new_one(capsys, tmp_path):
    import bertforge

    err = _one_line_error(capsys, ["pretrain", *TINY, "--eval-batches", "3"])
    assert err.startswith("bertforge pretrain: error: --eval-batches is replaced by --eval-samples: the held-out set "
                          "is a number of samples"), err
    path = tmp_path / "old.yaml"
    path.write_text("micro_batch: 8\neval_batches: 5\n")
    err = _one_line_error(capsys, ["pretrain", *TINY, "--config", str(path)])
    assert err.startswith(f"bertforge pretrain: error: {path}: eval_batches is replaced by eval_samples: ") \
        and err.endswith("(5 micro batches of 8 were the first 40 samples)"), err
    with pytest.raises(ConfigError, match=r"^bertforge\.pretrain\(\): eval_batches is replaced by eval_samples"):
        bertforge.pretrain(eval_batches=2)
    with pytest.raises(ConfigError, match="^eval_batches is replaced by eval_samples"):
        PretrainConfig.from_flat(eval_batches=2)


@pytest.mark.parametrize("given, scored", [([], 12), (["--eval-samples", "5"], 5)])
def test_resuming_a_checkpoint_of_eval_batches_scores_its_samples(tmp_path, caplog, monkeypatch, given, scored):
    run = tmp_path / "run"
    argv = ["pretrain", *TINY, "--micro-batch", "4", "--global-batch", "4", "--steps", "3", "--save-every", "2",
            "--eval-every", "0", "--output-dir", str(run)]
    assert main(argv) == 0
    shutil.rmtree(run / "checkpoints" / "step_00000003")
    meta_path = run / "checkpoints" / "step_00000002" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["train_config"].pop("eval_samples")
    meta["train_config"]["eval_batches"] = 3  # the old setting: 3 micro batches of 4
    meta_path.write_text(json.dumps(meta))
    caplog.clear()
    with caplog.at_level("INFO", logger="bertforge"):
        assert main([*argv, "--resume", *given, "--report-to", "mlflow"]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["eval_samples"] == scored
    from mlflow import MlflowClient  # the trackers get the settings the resume runs with

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=(run / "mlruns").as_uri())
    (found,) = client.search_runs([client.get_experiment_by_name("bertforge").experiment_id])
    assert found.data.params["eval_samples"] == str(scored)
    lines = [r.getMessage() for r in caplog.records if "held-out micro batches of 4" in r.getMessage()]
    assert len(lines) == 1 and f"--eval-samples {scored}" in lines[0], caplog.text


def test_synthetic_held_out_samples_do_not_depend_on_micro_batch_ranks_or_masking():
    from bertforge.data.synthetic import SyntheticSource

    def rows(micro, world, mask):
        sources = [SyntheticSource(97, 24, micro, rank=r, world=world, seed=3, mask=mask) for r in range(world)]
        shares = [list(s.held_out_batches(11)) for s in sources]
        batches = [shares[k % world][k // world] for k in range(sum(map(len, shares)))]
        return [torch.cat([getattr(b, key) for b in batches]) for key in ("input_ids", "mlm_labels")]

    ids, labels = rows(4, 1, True)
    assert ids.shape[0] == 11 and (labels != -100).any()
    for micro, world, mask in ((3, 1, True), (5, 2, True), (2, 3, False)):
        got_ids, got_labels = rows(micro, world, mask)
        assert torch.equal(got_ids, ids) and torch.equal(got_labels, labels), (micro, world, mask)
