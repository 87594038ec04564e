"""Each process's last fit of every board it was asked for, and the background refresher
that keeps them fresh.

A request serves the cached fit of its (board, category, source); only a board never
fitted in this process is fitted while the request waits. In the API process a refresher
task (`run`, started in the app's lifespan) checks every `ARENA_BOARD_REFRESH_S` seconds
(or, when fits are slow, after three times as long as the last round took, so fits use at
most a quarter of the time) which cached boards had votes counted since their fit and
refits just those, one at a time, in a thread: a vote never waits for a fit, and a board
lags the votes by about the interval plus a round of fits. Without a refresher (the CLI, a notebook) a request refits a
board whose votes changed, since nothing else would.

Boards not asked for in `IDLE_S` seconds are dropped rather than refitted; at most
`MAX_BOARDS` are kept (least recently asked for first out).

A board can be kept at fewer bootstrap rounds than the cache's (`rounds`, its own entry):
the category table's columns are, and are fitted without the flip counts it does not show.
`cached` never fits when a refresher runs: it asks the refresher to (`wanted`), and the
caller shows "computing" meanwhile, so a cold page waits for no column's fit.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import OrderedDict
from typing import Any, NamedTuple

import msgspec
from redis import exceptions as redis_errors

from service.errors import stop_if_cancelled
from service.leaderboards import BOOTSTRAP_ROUNDS, BoardView, fit_board

log = logging.getLogger("arena.boards")

MAX_BOARDS = 32
IDLE_S = 600.0

class BoardKey(NamedTuple):
    """A cached board: the aggregates' slice it is fitted from, and its bootstrap rounds."""

    board: str
    category: str | None
    source: str | None
    rounds: int | None = None  # None: the cache's

    @property
    def aggregates(self) -> tuple[str, str | None, str | None]:
        """(board, category, source): what `store.board_versions` reads the version of."""
        return self.board, self.category, self.source


class _Entry(msgspec.Struct):
    version: str
    view: BoardView
    used_at: float


class BoardCache:
    """Fitted boards by (board, category, source), with the aggregates' version each was
    fitted at."""

    def __init__(self, *, bootstrap: int = BOOTSTRAP_ROUNDS) -> None:
        self.bootstrap = bootstrap
        self.entries: OrderedDict[BoardKey, _Entry] = OrderedDict()
        self.refreshing = False  # a refresher task keeps the entries fresh
        self.fits = 0  # fits made, for tests and benches
        self.wanted: dict[BoardKey, None] = {}  # asked for by `cached`, not fitted yet: the refresher fits them
        self._locks: dict[BoardKey, asyncio.Lock] = {}
        self._ensure_lock = asyncio.Lock()
        self._ensured = False

    async def view(self, store, board: str, category: str | None, source: str | None, *,
                   rounds: int | None = None) -> BoardView:
        """The board's last fit (see the module doc for when it is refitted first)."""
        key = BoardKey(board, category, source, rounds)
        entry = self.entries.get(key)
        if entry is not None:
            entry.used_at = time.monotonic()
            self.entries.move_to_end(key)
            if self.refreshing or (await store.board_versions([key.aggregates]))[0] == entry.version:
                return entry.view
        return await self._refit(store, key, only_if_stale=entry is not None)

    async def cached(self, store, board: str, category: str | None, source: str | None, *,
                     rounds: int | None = None) -> BoardView | None:
        """Like `view`, but while a refresher runs a board never fitted here is not fitted
        now: None, and the refresher's next round fits it."""
        key = BoardKey(board, category, source, rounds)
        if self.refreshing and key not in self.entries:
            self.wanted[key] = None
            return None
        return await self.view(store, board, category, source, rounds=rounds)

    async def refresh(self, store) -> int:
        """Refit every cached board whose votes changed since its fit; drop the idle ones.
        Returns how many were refitted."""
        now = time.monotonic()
        for key in [k for k, e in self.entries.items() if now - e.used_at > IDLE_S]:
            del self.entries[key]
        refitted = 0
        wanted, self.wanted = list(self.wanted), {}
        for key in wanted:
            if key not in self.entries:
                await self._refit(store, key, only_if_stale=False)
                refitted += 1
        keys = [k for k in self.entries if k not in wanted]
        if not keys:
            return refitted
        for key, version in zip(keys, await store.board_versions([k.aggregates for k in keys])):
            entry = self.entries.get(key)
            if entry is not None and entry.version != version:
                await self._refit(store, key, only_if_stale=True)
                refitted += 1
        return refitted

    async def run(self, store, interval_s: float) -> None:
        """Refresh the cached boards every `interval_s` seconds until cancelled (the app's
        lifespan starts this). A failed refresh is logged and retried next time; requests
        keep being served from the last fits meanwhile."""
        self.refreshing = True
        try:
            while True:
                started = time.monotonic()
                try:
                    await self.ensure(store)
                    await self.refresh(store)
                except asyncio.CancelledError:
                    raise
                except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:  # Redis restarting
                    stop_if_cancelled()
                    log.warning("refreshing the leaderboards: the store is unreachable (%s); serving the last fits", exc)
                except Exception:  # a bad fit: logged whole, retried next round
                    stop_if_cancelled()
                    log.exception("refreshing the leaderboards failed; serving the last fits")
                # Fits take at most a quarter of the time: on a busy machine the boards lag
                # a little more rather than the votes slowing down.
                busy = time.monotonic() - started
                stop_if_cancelled()  # a call that swallowed the cancellation whole
                await asyncio.sleep(max(interval_s - busy, 3 * busy))
        finally:
            self.refreshing = False

    async def ensure(self, store) -> None:
        """Build the aggregates once if the store's votes predate them."""
        if self._ensured:
            return
        async with self._ensure_lock:
            if not self._ensured:
                if await store.ensure_aggregates():
                    log.info("rebuilt the leaderboards' aggregates from the votes log")
                self._ensured = True

    async def _refit(self, store, key: BoardKey, *, only_if_stale: bool) -> BoardView:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:  # one fit per board at a time; a second asker takes the first's result
            entry = self.entries.get(key)
            if entry is not None and (not only_if_stale or (await store.board_versions([key.aggregates]))[0] == entry.version):
                return entry.view
            await self.ensure(store)
            board, category, source, rounds = key
            version, view = await fit_board(store, board, category=category, source=source,
                                            bootstrap=self.bootstrap if rounds is None else min(rounds, self.bootstrap),
                                            fragility=rounds is None)
            self.fits += 1
            if view.n_battles == 0 and (category or source):
                # Any string names a filter: an empty one costs nothing to fit and is not
                # kept, so asking for made-up filters cannot push real boards out.
                return view
            self.entries[key] = _Entry(version, view, entry.used_at if entry else time.monotonic())
            self.entries.move_to_end(key)
            while len(self.entries) > MAX_BOARDS:
                evicted, _ = self.entries.popitem(last=False)
                self._locks.pop(evicted, None)
            return view


_caches: weakref.WeakKeyDictionary[Any, BoardCache] = weakref.WeakKeyDictionary()


def board_cache(store, *, bootstrap: int | None = None) -> BoardCache:
    """This process's `BoardCache` for `store` (made on first use; `bootstrap` sets its
    bootstrap rounds when it is made)."""
    cache = _caches.get(store)
    if cache is None:
        cache = _caches[store] = BoardCache(bootstrap=BOOTSTRAP_ROUNDS if bootstrap is None else bootstrap)
    return cache
