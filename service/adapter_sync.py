"""The remote generation server follows the arena: candidates' adapters loaded on a vLLM
server (`ARENA_GENERATION_URL`) as they are trained and activated, unloaded when retired.

- Activating a candidate loads its adapter first (`register_candidates`); a refusal is the
  activation's error, and nothing is marked active.
- A finished training run loads its new candidate, so evals need no restart.
- Deactivating unloads (`unregister_candidates`); the arena stops matching it whatever the
  server says. When the server cannot be told (down, overloaded, refusing us), a pending
  unload is kept in Redis (`PendingUnload`) and asked again by every reconcile and every
  later deactivation, until the server unloads it or is found without it; activating the
  candidate again cancels it.
- vLLM forgets runtime adapters when it restarts: `reconcile_adapters` (at startup and every
  `ARENA_REMOTE_ADAPTER_SYNC_S` in `arena serve`, or `arena adapters --sync`) retries the
  pending unloads, then loads every active candidate the server misses, and
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
from service.domain import Candidate, PendingUnload, now
from service.errors import ArenaError, NotFound, stop_if_cancelled
from service.generation import RemoteBackend
from service.generation.remote_adapters import RemoteAdapters, serves_from

log = logging.getLogger("arena.adapter_sync")


class SyncReport(msgspec.Struct, kw_only=True):
    """What a reconcile did: adapters loaded now, those the server already had, and the
    candidates it could not load with the server's reason; retired adapters unloaded now
    (pending unloads done) and those still pending with what the server said."""

    loaded: list[str] = msgspec.field(default_factory=list)
    present: list[str] = msgspec.field(default_factory=list)
    failed: dict[str, str] = msgspec.field(default_factory=dict)
    unloaded: list[str] = msgspec.field(default_factory=list)
    unload_failed: dict[str, str] = msgspec.field(default_factory=dict)


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


def _load_all(adapters: RemoteAdapters, settings: Settings, candidates: list[Candidate], *, stop_at_error: bool,
              listed: dict[str, str | None] | None = None) -> SyncReport:
    report = SyncReport()
    listed = adapters.loaded() if listed is None else listed
    for cand in candidates:
        path = remote_adapter_path(settings, cand.adapter_dir)
        try:
            if serves_from(listed, cand.name, path):
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


class _Unloads(msgspec.Struct):
    """What asking the server to unload adapters came to, by name: unloaded now; not there
    (restarted since, or never loaded), or there from a path not ours; failed, and why."""

    unloaded: list[str] = msgspec.field(default_factory=list)
    absent: list[str] = msgspec.field(default_factory=list)
    failed: dict[str, str] = msgspec.field(default_factory=dict)


def _unload_all(adapters: RemoteAdapters, listed: dict[str, str | None], paths: dict[str, str]) -> _Unloads:
    """Unload each name in `paths` (name → the path we gave) that the server has from that
    path. One it has from another path is not ours to unload."""
    done = _Unloads()
    for name, path in paths.items():
        if not serves_from(listed, name, path):
            done.absent.append(name)
            continue
        try:
            (done.unloaded if adapters.unload(name) else done.absent).append(name)
        except ArenaError as exc:
            done.failed[name] = exc.message
    return done


async def _pending_here(store, active: Iterable[str]) -> dict[str, PendingUnload]:
    """The pending unloads, by name. A candidate active again is no longer to unload: its
    record goes. Those kept while another URL was configured are asked of this one (the same
    server under a new address unloads them; a new server does not have them, and they go)."""
    active, pending = set(active), {}
    for record in await store.pending_unloads():
        if record.name in active:
            await store.drop_pending_unload(record.name)
        else:
            pending[record.name] = record
    return pending


async def _settle(store, settings: Settings, done: _Unloads, paths: dict[str, str],
                  pending: dict[str, PendingUnload]) -> None:
    """Drop the pending unloads that are done; keep (or count another attempt on) the failed."""
    for name in done.unloaded + done.absent:
        if name in pending:
            await store.drop_pending_unload(name)
    for name, reason in done.failed.items():
        before = pending.get(name)
        await store.keep_pending_unload(PendingUnload(
            name=name, path=paths[name], server=settings.generation_url, since=before.since if before else now(),
            attempts=before.attempts + 1 if before else 1, error=reason))


def _retry_note(settings: Settings) -> str:
    """How a pending unload will be asked again."""
    if settings.remote_adapter_sync_s > 0:
        return (f"kept as a pending unload: `arena serve` asks the server again every {settings.remote_adapter_sync_s} s "
                "(`arena adapters` lists it)")
    return "kept as a pending unload: asked again when `arena serve` starts, or now with `arena adapters --sync`"


async def unregister_candidates(store, settings: Settings, names: Iterable[str], *,
                                backend: RemoteBackend | None = None) -> list[str]:
    """Unload the adapters of the candidates among `names` that the server has from our path
    (one it has from elsewhere is not ours to unload), and retry the pending unloads while at
    it. Never raises for the server: an adapter it could not unload is kept as a pending
    unload, and named in the warnings returned."""
    if not settings.generation_url:
        return []
    candidates = await _candidates(store, names)
    pending = await _pending_here(store, await store.active_models())
    paths = {name: record.path for name, record in pending.items()}
    paths.update({c.name: remote_adapter_path(settings, c.adapter_dir) for c in candidates})
    if not paths:
        return []

    def run() -> _Unloads:
        try:
            with _adapters(settings, backend) as adapters:
                return _unload_all(adapters, adapters.loaded(), paths)
        except ArenaError as exc:  # the listing failed: the server is down or refuses us
            return _Unloads(failed={name: exc.message for name in paths})

    done = await asyncio.to_thread(run)
    await _settle(store, settings, done, paths, pending)
    retried = [name for name in done.unloaded if name in pending]
    if retried:
        log.info("pending unloads done on %s: %s", settings.generation_url, ", ".join(retried))
    asked = {c.name for c in candidates}
    warnings = [f"{reason}; {_retry_note(settings)}" for name, reason in done.failed.items() if name in asked]
    for warning in warnings:  # the caller shows them (the CLI's warning lines, the answer's `warnings`)
        log.info("unloading a retired adapter: %s", warning)
    return warnings


async def reconcile_adapters(store, settings: Settings, *, backend: RemoteBackend | None = None) -> SyncReport:
    """Retry the pending unloads, then load every active candidate's adapter the server
    lacks (after a restart of it, or an activation it missed). Never raises for the server:
    failures are in the report, and unloads that failed again stay pending."""
    if not settings.generation_url:
        return SyncReport()
    active = await store.active_models()
    candidates = await _candidates(store, active)
    pending = await _pending_here(store, active)
    paths = {name: record.path for name, record in pending.items()}
    if not candidates and not paths:
        return SyncReport()

    def run() -> tuple[SyncReport, _Unloads]:
        try:
            with _adapters(settings, backend) as adapters:
                listed = adapters.loaded()
                done = _unload_all(adapters, listed, paths)
                return _load_all(adapters, settings, candidates, stop_at_error=False, listed=listed), done
        except ArenaError as exc:  # the listing failed: the server is down or refuses us
            return SyncReport(failed={c.name: exc.message for c in candidates}), _Unloads(failed=dict.fromkeys(paths, exc.message))

    report, done = await asyncio.to_thread(run)
    await _settle(store, settings, done, paths, pending)
    report.unloaded, report.unload_failed = done.unloaded, done.failed
    if report.loaded:
        log.info("reconcile loaded adapters on %s: %s", settings.generation_url, ", ".join(report.loaded))
    if report.unloaded:
        log.info("reconcile unloaded retired adapters on %s: %s", settings.generation_url, ", ".join(report.unloaded))
    for name, reason in report.failed.items():
        log.warning("reconcile could not load %s: %s", name, reason)
    for name, reason in report.unload_failed.items():
        log.warning("reconcile could not unload retired %s (attempt %d): %s", name, pending[name].attempts + 1, reason)
    return report


async def adapter_states(store, settings: Settings, *, backend: RemoteBackend | None = None) -> tuple[dict[str, str], str | None]:
    """Where each active candidate stands on the generation server: "loaded" (from its
    path), "missing", "elsewhere" (that name from another path), or "unknown" when the
    server cannot be listed; and that listing's error (None when it answered)."""
    candidates = await _candidates(store, await store.active_models())

    def run() -> dict[str, str | None]:
        with _adapters(settings, backend) as adapters:
            return adapters.loaded()

    try:
        listed = await asyncio.to_thread(run)
    except ArenaError as exc:
        return {c.name: "unknown" for c in candidates}, exc.message

    def state(cand: Candidate) -> str:
        if serves_from(listed, cand.name, remote_adapter_path(settings, cand.adapter_dir)):
            return "loaded"
        return "elsewhere" if cand.name in listed else "missing"

    return {c.name: state(c) for c in candidates}, None


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
