"""Run a test module's `main()` in a process of its own, with none of a launcher's variables: a single-process
DeepSpeed run that must not join (or collide with) the test session's process group."""
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import _LAUNCHER_VARS

ROOT = Path(__file__).resolve().parents[2]


def run_main_alone(module: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`from <module> import main; main()` under a fresh python from the repository root; its completed process."""
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_VARS}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-c", f"from {module} import main; main()"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
