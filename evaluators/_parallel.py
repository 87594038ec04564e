"""Forked helpers: how many processes to use, and one task run beside the caller.

A forked child inherits the task (nothing is pickled but its result). Workers of
`_checks_scan` are handed their job through a module global under `FORK_LOCK`, so that
two threads never hand over at once; `in_background` forks under the same lock.
"""

from __future__ import annotations

import os
import threading
import traceback
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
FORK_LOCK = threading.Lock()


def worker_count(workers: int | None) -> int:
    """`workers`, or by default the CPUs this process may use."""
    if workers is not None:
        return workers
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _run_and_send(task: Callable[[], object], sender) -> None:
    try:
        outcome: tuple[bool, object] = (True, task())
    except BaseException as error:  # handed to the caller, which raises it
        error.add_note("in the background process:\n" + "".join(traceback.format_exception(error)))
        outcome = (False, error)
    try:
        sender.send(outcome)
    except Exception as error:  # a result or an exception that does not pickle
        sender.send((False, RuntimeError(f"the background task's {'result' if outcome[0] else 'error'} could not be sent back: {error}")))


def _kill(process) -> None:
    if process.is_alive():
        process.kill()
    process.join()


class Background(Generic[T]):
    """`task()` running in a forked process. Call it for the result (an exception the
    task raised is raised here); `cancel()` kills the process. A caller that leaves by an
    exception must cancel: `with in_background(task) as result: ...` does, and so does
    dropping the object (the process never outlives it)."""

    def __init__(self, task: Callable[[], T]) -> None:
        import multiprocessing

        context = multiprocessing.get_context("fork")
        self._receiver, sender = context.Pipe(duplex=False)
        with FORK_LOCK:
            self._process = context.Process(target=_run_and_send, args=(task, sender), daemon=True)
            self._process.start()
        sender.close()
        self._done = weakref.finalize(self, _kill, self._process)

    def __call__(self) -> T:
        try:
            ok, value = self._receiver.recv()
        except EOFError:
            self._process.join()
            raise RuntimeError(f"the background process died before it answered (exit code {self._process.exitcode})") from None
        finally:
            self._receiver.close()
            self._process.join(5)  # it exits once it has sent
            self._done()
        if not ok:
            raise value  # type: ignore[misc]
        return value  # type: ignore[return-value]

    def cancel(self) -> None:
        self._receiver.close()
        self._done()

    def __enter__(self) -> Background[T]:
        return self

    def __exit__(self, kind, error, trace) -> None:
        if kind is not None:
            self.cancel()


def in_background(task: Callable[[], T]) -> Background[T]:
    """Start `task()` in a forked process (which inherits everything `task` reads)."""
    return Background(task)
