"""A small process pool (spawn) that knows which task each worker runs, so a worker that dies — killed by the
out-of-memory killer, say — stops the pool at once with a `WorkerDied` naming its task, instead of the task never
returning (multiprocessing.Pool hangs forever on a lost task; concurrent.futures cannot say which task was lost).

Each worker has its own pipe; the main process sends one task at a time to an idle worker and waits on the pipes
and the processes' sentinels together (multiprocessing.connection.wait). A worker may report what it is working on
with `note(text)` (e.g. the shard it is writing); the main process keeps the latest note per worker for the error.
An exception raised by a task is re-raised in the main process (its message unchanged)."""
from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
from multiprocessing.connection import wait
from typing import Any, Callable, Iterable, Iterator

_CONN = None  # the worker's end of its pipe (worker processes only)


class WorkerDied(RuntimeError):
    """A worker process ended while running a task."""

    def __init__(self, pid: int, exitcode: int | None, task: Any, note: str | None):
        self.how = (f"was killed by {signal.Signals(-exitcode).name}" if exitcode is not None and exitcode < 0
                    and -exitcode in signal.valid_signals() else f"exited with status {exitcode}")
        super().__init__(f"worker process {pid} {self.how} while working on {note or task!r}")
        self.pid, self.exitcode, self.task, self.note = pid, exitcode, task, note


def note(text: str) -> None:
    """From inside a task: tell the main process what this worker is working on (no-op outside a pool)."""
    if _CONN is not None:
        _CONN.send(("note", text))


def _worker(conn, initializer: Callable | None, initargs: tuple, fn: Callable) -> None:
    global _CONN
    _CONN = conn
    if initializer is not None:
        initializer(*initargs)
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        key, task = msg
        try:
            result = ("done", key, fn(task))
        except BaseException as exc:  # noqa: BLE001 - sent back and re-raised in the main process
            try:
                pickle.dumps(exc)
                result = ("error", key, exc)
            except Exception:  # noqa: BLE001 - an exception that does not pickle travels as text
                result = ("error", key, RuntimeError(f"{type(exc).__name__}: {exc}"))
        conn.send(result)


class WorkerPool:
    """`workers` spawn processes running `fn(task)`; `initializer(*initargs)` runs once in each.

    `run(tasks)` yields (key, result) as tasks finish (in completion order). Raises WorkerDied when a worker ends
    while it holds a task, and re-raises a task's exception; both stop every worker first."""

    def __init__(self, workers: int, fn: Callable, initializer: Callable | None = None, initargs: tuple = ()):
        ctx = mp.get_context("spawn")
        self.procs, self.conns = [], []
        for _ in range(workers):
            ours, theirs = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(theirs, initializer, initargs, fn), daemon=True)
            p.start()
            theirs.close()
            self.procs.append(p)
            self.conns.append(ours)

    def run(self, tasks: Iterable[tuple[Any, Any]]) -> Iterator[tuple[Any, Any]]:
        todo = iter(tasks)
        busy: dict[int, tuple[Any, str | None]] = {}  # worker -> (key, latest note)

        def feed(w: int) -> None:
            item = next(todo, None)
            if item is not None:
                busy[w] = (item[0], None)
                try:
                    self.conns[w].send(item)
                except OSError:  # the worker died while idle
                    self._died(w, item[0], None)

        for w in range(len(self.procs)):
            feed(w)
        by_conn = {c: w for w, c in enumerate(self.conns)}
        by_sentinel = {p.sentinel: w for w, p in enumerate(self.procs)}
        while busy:
            for ready in wait([self.conns[w] for w in busy] + [self.procs[w].sentinel for w in busy]):
                w = by_conn.get(ready, by_sentinel.get(ready))
                if w not in busy:
                    continue
                try:
                    if ready is not self.conns[w] and not self.conns[w].poll():
                        raise EOFError
                    kind, key, *rest = self.conns[w].recv()
                except (EOFError, OSError, pickle.UnpicklingError):  # gone, or killed while sending
                    self._died(w, *busy.pop(w))
                if kind == "note":
                    busy[w] = (busy[w][0], key)
                    continue
                del busy[w]
                if kind == "error":
                    self.close(kill=True)
                    raise rest[0]
                feed(w)
                yield key, rest[0]

    def _died(self, w: int, key: Any, last: str | None) -> None:
        proc = self.procs[w]
        proc.join(timeout=5)
        pid, exitcode = proc.pid, proc.exitcode
        self.close(kill=True)
        raise WorkerDied(pid, exitcode, key, last)

    def close(self, kill: bool = False) -> None:
        """Stop the workers (politely, or with SIGKILL) and wait for them."""
        for w, p in enumerate(self.procs):
            if kill:
                if p.is_alive():
                    os.kill(p.pid, signal.SIGKILL)
            else:
                try:
                    self.conns[w].send(None)
                except OSError:
                    pass
        for p, c in zip(self.procs, self.conns):
            p.join(timeout=None if not kill else 10)
            c.close()
        self.procs, self.conns = [], []

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        if self.procs:
            self.close(kill=exc[0] is not None)
