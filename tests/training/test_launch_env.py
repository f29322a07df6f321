"""SLURM variables count only inside an srun step; a rendezvous that times out is one line saying how many ranks
joined and which launcher was expected."""
import os

from bertforge import distributed as D

KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_STEP_ID", "SLURM_PROCID",
        "SLURM_NTASKS", "SLURM_LOCALID", "TORCHELASTIC_RUN_ID")


def _env(monkeypatch, **values):
    for k in KEYS:
        monkeypatch.delenv(k, raising=False)
    for k, v in values.items():
        monkeypatch.setenv(k, v)


def test_sbatch_without_srun_is_one_process(monkeypatch):
    _env(monkeypatch, SLURM_PROCID="0", SLURM_NTASKS="2")  # an sbatch --ntasks=2 script, no srun
    D.prepare_env()
    assert os.environ["WORLD_SIZE"] == "1" and os.environ["RANK"] == "0"


def test_srun_step_maps_slurm_ranks(monkeypatch):
    _env(monkeypatch, SLURM_STEP_ID="0", SLURM_PROCID="1", SLURM_NTASKS="2", SLURM_LOCALID="1")
    D.prepare_env()
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("1", "2", "1")


def test_rendezvous_timeout_is_one_line(monkeypatch):
    from bertforge.deepspeed import rendezvous_failure

    _env(monkeypatch, RANK="0", WORLD_SIZE="2", MASTER_ADDR="10.0.0.1", MASTER_PORT="29500", SLURM_STEP_ID="0")
    # torch's TCPStore message on rank 0 (torch/csrc/distributed/c10d/TCPStore.cpp)
    torch_says = ("Timed out after 601 seconds waiting for clients. 1/2 clients joined. (server process ... "
                  "traceback of many lines)")
    line = rendezvous_failure(torch_says, 600)
    assert line.startswith("rendezvous at 10.0.0.1:29500 timed out after 600s: 1 of 2 ranks joined; the other "
                           "ranks were to be started by srun") and "\n" not in line
    _env(monkeypatch, RANK="1", WORLD_SIZE="2", MASTER_ADDR="10.0.0.1", MASTER_PORT="29500", TORCHELASTIC_RUN_ID="x")
    line = rendezvous_failure("connect() timed out", 600)
    assert "rank 1 of 2 found no rank 0 at 10.0.0.1:29500" in line and "torchrun" in line


def test_rendezvous_timeout_end_to_end():
    """A rank 0 whose peer never comes: DeepSpeed's join times out into the one line (a subprocess: ~8 s)."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in KEYS}
    env.update(RANK="0", WORLD_SIZE="2", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
               SLURM_STEP_ID="0", DS_ACCELERATOR="cpu")
    code = ("import sys\nfrom bertforge import deepspeed as ds\nfrom bertforge.errors import TrainingError\n"
            "try:\n    ds.init_distributed(3)\nexcept TrainingError as e:\n    print(e); sys.exit(3)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 3, out.stderr[-2000:]
    assert out.stdout.strip().startswith(f"rendezvous at 127.0.0.1:{port} timed out after 3s: 1 of 2 ranks joined")
