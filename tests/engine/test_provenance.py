"""The `environment` block written into RUN/config.json and finetune summary.json."""
import json
import platform
import subprocess
from pathlib import Path

import torch

from bertforge.provenance import environment, git_commit


def test_environment_names_versions_devices_and_hosts():
    env = environment()
    json.dumps(env)  # serialisable as written
    assert env["python"] == platform.python_version() and env["torch"] == torch.__version__
    assert env["world_size"] == 1 and len(env["hosts"]) == 1
    assert env["devices"] == ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                              if torch.cuda.is_available() else [])
    from importlib.metadata import version

    assert env["deepspeed"] == version("deepspeed")


def test_git_commit_of_a_checkout_and_none_elsewhere(tmp_path):
    repo = Path(__file__).resolve().parents[2]
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert git_commit(repo)["commit"] == head.stdout.strip()
    assert git_commit(tmp_path) is None
