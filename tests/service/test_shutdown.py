"""The service's background loops stop when cancelled, even when a call lost the
cancellation: swallowed it, or turned it into an error of its own (Python 3.11's
`asyncio.timeout` turns a cancellation that meets its deadline into TimeoutError; redis-py
raises it as its TimeoutError). The loops log errors and try again; one that lost its
cancellation ran on, and the server's shutdown waited for it forever (seen in the suite:
a stopped server's refresher logging "the store is unreachable" once its Redis was gone)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from redis import exceptions as redis_errors

from service.config import Settings


class CancellationToTimeout:
    """A store (and queue) whose every call waits, and on cancellation raises redis-py's
    TimeoutError instead of letting the cancellation through."""

    def __getattr__(self, name: str):
        async def call(*args, **kwargs):
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                raise redis_errors.TimeoutError("Timeout reading from socket") from None

        return call


class CancellationSwallowed:
    """A store whose every call, cancelled, returns as if nothing happened (a cleanup path
    that catches BaseException)."""

    def __getattr__(self, name: str):
        async def call(*args, **kwargs):
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                return None

        return call


def _loops(settings: Settings, store):
    from service.adapter_sync import keep_in_sync
    from service.board_cache import BoardCache
    from service.judge_calibration import run as calibration
    from service.jobs import run_worker

    class Worker:  # SAQ's worker as `run_worker` drives it: its periodic sweep is the loop
        _arena_sweep_s = 0.01
        _arena_periodic = store.sweep

        async def start(self) -> None:
            await asyncio.sleep(30)

    return {
        "board refresher": lambda: BoardCache().run(store, 0.01),
        "judge calibration": lambda: calibration(store, store, settings),
        "adapter sync": lambda: keep_in_sync(store, settings),
        "job sweep": lambda: run_worker(Worker()),
    }


@pytest.mark.parametrize("store", [CancellationToTimeout(), CancellationSwallowed()], ids=["became-an-error", "swallowed"])
@pytest.mark.parametrize("loop", ["board refresher", "judge calibration", "adapter sync", "job sweep"])
def test_a_background_loop_stops_when_cancelled_even_if_a_call_lost_the_cancellation(tmp_path: Path, loop, store, caplog):
    settings = Settings(data_dir=tmp_path, redis_url="redis://127.0.0.1:1/0", calibration_refresh_s=0.01,
                        generation_url="http://127.0.0.1:1/v1", remote_adapter_sync_s=0.01)

    async def main() -> None:
        task = asyncio.create_task(_loops(settings, store)[loop]())
        await asyncio.sleep(0.1)  # inside its first store call
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=5)
        await asyncio.sleep(0.1)  # a loop the task started (the worker's sweep) gets its cancellation too
        running = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
        assert done and task.cancelled() and not running, running  # before: the loop ran on

    # Not `asyncio.run`: its cleanup would wait forever for a loop that does not stop.
    event_loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.WARNING):
            event_loop.run_until_complete(main())
    finally:
        event_loop.close()
