"""`evaluators._parallel.in_background`: a task in a forked process, its result or its
error handed back, and the process never outliving the caller's interest in it."""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import time

import pytest

from evaluators._parallel import in_background


def test_the_result_comes_back_from_the_forked_process():
    parent = os.getpid()
    task = in_background(lambda: (os.getpid() != parent, list(range(100_000))))
    forked, values = task()
    assert forked and values == list(range(100_000))
    assert multiprocessing.active_children() == []


def test_the_task_error_is_raised_in_the_caller():
    def fail():
        raise ValueError("bad record at line 3")

    with pytest.raises(ValueError, match="bad record at line 3") as caught:
        in_background(fail)()
    assert any("in the background process" in note for note in caught.value.__notes__)


def test_an_error_that_does_not_pickle_is_still_reported():
    class Local(Exception):  # a local class cannot be pickled
        pass

    def fail():
        raise Local("x")

    with pytest.raises(RuntimeError, match="could not be sent back"):
        in_background(fail)()


def test_a_killed_process_is_an_error_not_a_hang():
    task = in_background(lambda: os.kill(os.getpid(), signal.SIGKILL))
    with pytest.raises(RuntimeError, match="died before it answered"):
        task()


def _waits():
    time.sleep(600)


def test_leaving_by_an_error_kills_the_process():
    with pytest.raises(KeyError):
        with in_background(_waits):
            raise KeyError("caller failed")
    assert multiprocessing.active_children() == []


def test_a_dropped_task_does_not_outlive_its_handle():
    task = in_background(_waits)
    pid = task._process.pid
    del task
    gc.collect()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped
