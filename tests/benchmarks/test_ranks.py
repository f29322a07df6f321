"""benchmarks/_ranks.py `run_ranks`: results of every rank come back; a rank that aborts in teardown after reporting
leaves the results standing with one note on stderr; a rank that dies before reporting ends the run with one line
naming it and its exit code (instead of waiting for the timeout)."""
import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from _ranks import run_ranks  # noqa: E402


def _body(rank, world, store, mode, queue):
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    if mode == "die-early":
        if rank == 1:
            os._exit(3)
    else:
        dist.all_reduce(torch.ones(2))
    queue.put((rank, {"rank": rank, "world": world}))
    if mode == "abort-after" and rank == 1:
        queue.close()
        queue.join_thread()  # the result is in the pipe before the abort
        os.abort()
    if mode == "linger" and rank == 0:
        queue.close()
        queue.join_thread()
        time.sleep(600)


def test_results_of_every_rank():
    assert run_ranks(_body, 2, ("ok",)) == {0: {"rank": 0, "world": 2}, 1: {"rank": 1, "world": 2}}


def test_abort_in_teardown_after_reporting_keeps_results(capfd):
    got = run_ranks(_body, 2, ("abort-after",))
    assert sorted(got) == [0, 1]
    err = capfd.readouterr().err
    assert "rank 1 of 2 exited with code -6 in process-group teardown after reporting its result" in err


def test_lingering_rank_is_killed_with_a_note(capfd):
    t0 = time.monotonic()
    got = run_ranks(_body, 2, ("linger",), teardown_s=2)
    assert sorted(got) == [0, 1] and time.monotonic() - t0 < 60
    assert "rank 0 of 2 still in process-group teardown after 2 s" in capfd.readouterr().err


def test_rank_dying_before_reporting_is_one_line():
    t0 = time.monotonic()
    with pytest.raises(SystemExit) as info:
        run_ranks(_body, 2, ("die-early",), timeout_s=300)
    assert str(info.value).startswith("rank 1 of 2 exited with code 3 before reporting its result")
    assert time.monotonic() - t0 < 120
