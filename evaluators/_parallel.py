"""Forked helpers: how many processes to use, and one task run beside the caller.

Work is handed to a forked child through a module global (the child inherits it; nothing
is pickled but the result), under `FORK_LOCK` so that two threads never hand over at once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
FORK_LOCK = threading.Lock()
_TASK: Callable[[], Any] | None = None


def worker_count(workers: int | None) -> int:
    """`workers`, or by default the CPUs this process may use."""
    if workers is not None:
        return workers
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _run_task() -> Any:
    assert _TASK is not None
    return _TASK()


def in_background(task: Callable[[], T]) -> Callable[[], T]:
    """Start `task()` in a forked process (which inherits everything `task` reads) and
    return a function that waits for its result (an exception `task` raised is raised there)."""
    global _TASK
    import multiprocessing

    with FORK_LOCK:
        _TASK = task
        try:  # a "fork" pool forks its process inside `submit`, while `_TASK` is set
            pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
            future = pool.submit(_run_task)
        finally:
            _TASK = None

    def result() -> T:
        try:
            return future.result()
        finally:
            pool.shutdown()

    return result
