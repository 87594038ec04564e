"""Store: connection handling and the sync facade; resource methods live in mixins."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from service.store.arena import ArenaStore
from service.store.battle_answers import BattleAnswerStore
from service.store.calibration import CalibrationStore
from service.store.corrections import CorrectionStore
from service.store.datasets import DatasetStore
from service.store.evals import EvalStore
from service.store.jobs import JobStore
from service.store.keys import Keys
from service.store.models import ModelStore


class Store(DatasetStore, JobStore, ModelStore, ArenaStore, BattleAnswerStore, EvalStore, CorrectionStore, CalibrationStore):
    """Async access to everything the service keeps in Redis."""

    def __init__(self, redis: aioredis.Redis, prefix: str = "arena", *, readers: aioredis.Redis | None = None) -> None:
        self.redis = redis
        #: The connections blocking reads of answer streams wait on (`read_answer_events`):
        #: a pool of their own, so that readers, however many and however idle, never take
        #: the connections votes and battles need.
        self.readers = readers if readers is not None else redis
        self.keys = Keys(prefix)

    @classmethod
    def from_url(cls, url: str, prefix: str = "arena", *, max_readers: int = 520) -> Store:
        def client(**pool: Any) -> aioredis.Redis:
            return aioredis.Redis.from_url(url, decode_responses=False, health_check_interval=30, **pool)

        return cls(client(), prefix, readers=client(max_connections=max_readers))

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    async def close(self) -> None:
        await self.redis.aclose()
        if self.readers is not self.redis:
            await self.readers.aclose()


class SyncStore:
    """Runs `Store`'s coroutine methods from synchronous code, on a private event loop thread.

    One implementation of every storage operation serves both the async app and the
    synchronous CLI and job threads.
    """

    def __init__(self, url: str, prefix: str = "arena") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sync-store", daemon=True)
        self._thread.start()
        self.url = url
        self.store: Store = self._run(self._make(url, prefix))

    @staticmethod
    async def _make(url: str, prefix: str) -> Store:
        return Store.from_url(url, prefix)

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        attr = getattr(self.store, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._run(attr(*args, **kwargs))

        return call

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self.store.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)


def connect_store(url: str, prefix: str = "arena") -> Store:
    """An async Store on `url` (call from inside the event loop that will use it)."""
    return Store.from_url(url, prefix)
