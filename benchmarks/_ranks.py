"""Run a benchmark body on `world` spawned CPU processes that form one gloo group, and collect one result per rank.

The group meets through a file store in a temporary folder (no TCP store: no server thread inside rank 0, no port to
pick and lose to another process). Each body is called as `target(rank, world, store, *args, queue)`, calls
`torch.distributed.init_process_group("gloo", init_method=f"file://{store}", ...)` itself when world > 1, and ends
with `queue.put((rank, result))`.

Teardown: once every rank has reported, the results stand. A rank that then lingers in process-group teardown past
`teardown_s` is killed, and one that exits non-zero there (gloo's threads can abort at interpreter exit: "terminate
called without an active exception") is reported on stderr in one line; neither changes the numbers. A rank that
exits before reporting ends the run with one line naming the rank and its exit code."""
from __future__ import annotations

import queue as queue_mod
import sys
import tempfile
import time

import torch.multiprocessing as mp


def run_ranks(target, world: int, args: tuple, timeout_s: float = 3600.0, teardown_s: float = 20.0) -> dict:
    """Start `world` processes of `target` and return {rank: result}.

    Raises SystemExit (one line) when a rank exits before putting its result, or when the results are not all in
    after `timeout_s` seconds (the processes are killed first)."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    got: dict = {}
    with tempfile.TemporaryDirectory(prefix="bertforge-ranks-") as tmp:
        procs = [ctx.Process(target=target, args=(r, world, f"{tmp}/store", *args, results)) for r in range(world)]
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout_s
        try:
            while len(got) < world:
                try:
                    rank, result = results.get(timeout=1.0)
                    got[rank] = result
                    continue
                except queue_mod.Empty:
                    pass
                dead = [(r, p.exitcode) for r, p in enumerate(procs) if r not in got and p.exitcode is not None]
                if dead:  # a last look: its result may have arrived just before it exited
                    while True:
                        try:
                            rank, result = results.get(timeout=0.5)
                        except queue_mod.Empty:
                            break
                        got[rank] = result
                    dead = [(r, code) for r, code in dead if r not in got]
                if dead:
                    r, code = dead[0]
                    raise SystemExit(f"rank {r} of {world} exited with code {code} before reporting its result "
                                     "(any error it printed is above)")
                if time.monotonic() > deadline:
                    raise SystemExit(f"ranks {sorted(set(range(world)) - set(got))} of {world} did not report within "
                                     f"{timeout_s:.0f} s")
        finally:
            for r, p in enumerate(procs):
                p.join(timeout=teardown_s if len(got) == world else 0.1)
                if p.is_alive():
                    p.kill()
                    p.join()
                    if len(got) == world:
                        print(f"note: rank {r} of {world} still in process-group teardown after {teardown_s:.0f} s "
                              "with its result in; killed it", file=sys.stderr, flush=True)
                elif p.exitcode and len(got) == world:
                    print(f"note: rank {r} of {world} exited with code {p.exitcode} in process-group teardown after "
                          "reporting its result; the results stand", file=sys.stderr, flush=True)
    return got
