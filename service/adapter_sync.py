"""The remote generation server follows the arena: candidates' adapters loaded on a vLLM
server (`ARENA_GENERATION_URL`) as they are trained and activated, unloaded when retired.

- Activating a candidate loads its adapter first (`register_candidates`); a refusal is the
  activation's error, and nothing is marked active.
- A finished training run loads its new candidate, so evals need no restart.
- Deactivating unloads (`unregister_candidates`); the arena stops matching it whatever the
  server says.
- vLLM forgets runtime adapters when it restarts: `reconcile_adapters` (at startup and every
  `ARENA_REMOTE_ADAPTER_SYNC_S` in `arena serve`) loads every active candidate it misses, and
  `Serving` loads a candidate the server says it does not know, then asks again.

The server may see the data dir elsewhere (a volume mounted in its container):
`ARENA_REMOTE_ADAPTER_ROOT` is that path, and adapter paths are sent under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

import msgspec

from service.config import Settings
from service.domain import Candidate
from service.errors import ArenaError, NotFound, stop_if_cancelled
from service.generation import RemoteBackend
from service.generation.remote_adapters import RemoteAdapters

log = logging.getLogger("arena.adapter_sync")


class SyncReport(msgspec.Struct, kw_only=True):
    """What a reconcile did: adapters loaded now, those the server already had, and the
    candidates it could not load with the server's reason."""

    loaded: list[str] = msgspec.field(default_factory=list)
    present: list[str] = msgspec.field(default_factory=list)
    failed: dict[str, str] = msgspec.field(default_factory=dict)


def remote_adapter_path(settings: Settings, adapter_dir: str) -> str:
    """`adapter_dir` as the generation server sees it: under `ARENA_REMOTE_ADAPTER_ROOT` in
    place of the data dir when that is set; as is otherwise (one filesystem) or when the
    adapter lies outside the data dir."""
    if not settings.remote_adapter_root:
        return adapter_dir
    try:
        relative = Path(adapter_dir).resolve().relative_to(settings.data_dir.resolve())
    except ValueError:
        return adapter_dir
    return str(PurePosixPath(settings.remote_adapter_root) / PurePosixPath(*relative.parts))


@contextlib.contextmanager
def _adapters(settings: Settings, backend: RemoteBackend | None) -> Iterator[RemoteAdapters]:
    if backend is not None:
        yield RemoteAdapters(backend)
        return
    with RemoteBackend(settings.generation_url, api_key=settings.generation_api_key, retries=1, timeout=30.0,
                       concurrency=1) as own:
        yield RemoteAdapters(own)


async def _candidates(store, names: Iterable[str]) -> list[Candidate]:
    out = []
    for name in dict.fromkeys(names):
        with contextlib.suppress(NotFound):  # a base, or a model the server serves itself
            out.append(await store.get_candidate(name))
    return out


def _load_all(adapters: RemoteAdapters, settings: Settings, candidates: list[Candidate], *, stop_at_error: bool) -> SyncReport:
    report = SyncReport()
    listed = adapters.loaded()
    for cand in candidates:
        path = remote_adapter_path(settings, cand.adapter_dir)
        try:
            if cand.name in listed and listed[cand.name] in (None, path):
                report.present.append(cand.name)
            elif adapters.load(cand.name, path):
                report.loaded.append(cand.name)
            else:
                report.present.append(cand.name)
        except ArenaError as exc:
            if stop_at_error:
                raise
            report.failed[cand.name] = exc.message
    return report


async def register_candidates(store, settings: Settings, names: Iterable[str], *,
                              backend: RemoteBackend | None = None) -> SyncReport:
    """Load on the generation server the adapters of the candidates among `names` (bases
    and names that are no candidate of ours are left alone). Returns the report; raises the
    first failure (`Conflict`, `InvalidInput` quoting the server, `Unavailable`), leaving
    the store as it was. Does nothing without `ARENA_GENERATION_URL`."""
    if not settings.generation_url:
        return SyncReport()
    candidates = await _candidates(store, names)
    if not candidates:
        return SyncReport()

    def run() -> SyncReport:
        with _adapters(settings, backend) as adapters:
            return _load_all(adapters, settings, candidates, stop_at_error=True)

    report = await asyncio.to_thread(run)
    if report.loaded:
        log.info("loaded adapters on %s: %s", settings.generation_url, ", ".join(report.loaded))
    return report


async def unregister_candidates(store, settings: Settings, names: Iterable[str], *,
                                backend: RemoteBackend | None = None) -> list[str]:
    """Unload the adapters of the candidates among `names` that the server has from our path
    (one it has from elsewhere is not ours to unload). Never raises for the server: returns
    one warning per adapter it could not unload."""
    if not settings.generation_url:
        return []
    candidates = await _candidates(store, names)
    if not candidates:
        return []

    def run() -> list[str]:
        warnings = []
        try:
            with _adapters(settings, backend) as adapters:
                listed = adapters.loaded()
                for cand in candidates:
                    if cand.name in listed and listed[cand.name] in (None, remote_adapter_path(settings, cand.adapter_dir)):
                        try:
                            adapters.unload(cand.name)
                        except ArenaError as exc:
                            warnings.append(exc.message)
        except ArenaError as exc:
            warnings.append(exc.message)
        return warnings

    warnings = await asyncio.to_thread(run)
    for warning in warnings:
        log.warning("unloading a retired adapter: %s", warning)
    return warnings


async def reconcile_adapters(store, settings: Settings, *, backend: RemoteBackend | None = None) -> SyncReport:
    """Load every active candidate's adapter the server lacks (after a restart of it, or an
    activation it missed). Never raises for the server: failures are in the report."""
    if not settings.generation_url:
        return SyncReport()
    candidates = await _candidates(store, await store.active_models())
    if not candidates:
        return SyncReport()

    def run() -> SyncReport:
        try:
            with _adapters(settings, backend) as adapters:
                return _load_all(adapters, settings, candidates, stop_at_error=False)
        except ArenaError as exc:  # the listing failed: the server is down or refuses us
            return SyncReport(failed={c.name: exc.message for c in candidates})

    report = await asyncio.to_thread(run)
    if report.loaded:
        log.info("reconcile loaded adapters on %s: %s", settings.generation_url, ", ".join(report.loaded))
    for name, reason in report.failed.items():
        log.warning("reconcile could not load %s: %s", name, reason)
    return report


async def keep_in_sync(store, settings: Settings) -> None:
    """Reconcile now and every `ARENA_REMOTE_ADAPTER_SYNC_S` seconds (0: only now), until
    cancelled. For the app's lifespan."""
    while True:
        try:
            await reconcile_adapters(store, settings)
        except Exception:  # noqa: BLE001 - the store restarting, say: the next round may succeed
            stop_if_cancelled()
            log.exception("adapter reconcile failed")
        if settings.remote_adapter_sync_s <= 0:
            return
        stop_if_cancelled()
        await asyncio.sleep(settings.remote_adapter_sync_s)
