"""Long work as jobs: a Redis-backed queue (SAQ) plus our own durable job records.

- `enqueue(store, queue, kind, params)` writes a `JobRecord` (queued) and puts a SAQ job
  with the same id on the queue.
- A worker (`run_worker`) runs the handler registered for the kind in a thread, gives it a
  `JobContext` (progress, events, cancellation), heartbeats both SAQ's job and our record,
  and writes the outcome: succeeded / failed (with a reason) / cancelled.
- Delivery is at least once: when a worker dies (even SIGKILL), its heartbeats stop, SAQ's
  sweep re-enqueues the job (handlers are idempotent: training resumes from its last
  checkpoint) or, once retries are used up, aborts it, and `reconcile_jobs` turns our
  record into `failed` with the reason. Both happen within a bounded time
  (about `ARENA_JOB_HEARTBEAT_S` + `ARENA_JOB_SWEEP_S`).

Handlers are plain synchronous functions registered with `@job_handler("kind")` in the
modules listed in `HANDLER_MODULES` (plus any in `ARENA_JOB_MODULES`, comma-separated).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from saq import Queue, Worker
from saq.job import Status as SaqStatus

from service.config import Settings
from service.domain import TERMINAL, JobRecord
from service.errors import ArenaError, Conflict, NotFound, stop_if_cancelled
from service.store import Store

log = logging.getLogger("arena.jobs")

#: Modules whose import registers job handlers.
HANDLER_MODULES: list[str] = ["service.runs", "service.traces", "service.eval_job", "service.judging",
                              "service.judge_calibration"]

Handler = Callable[["JobContext"], "dict[str, Any] | None"]
HANDLERS: dict[str, Handler] = {}


def job_handler(kind: str) -> Callable[[Handler], Handler]:
    """Register `fn(ctx) -> result dict` as the handler for jobs of `kind`."""

    def register(fn: Handler) -> Handler:
        HANDLERS[kind] = fn
        return fn

    return register


def load_handlers() -> dict[str, Handler]:
    extra = [m.strip() for m in os.environ.get("ARENA_JOB_MODULES", "").split(",") if m.strip()]
    for module in HANDLER_MODULES + extra:
        importlib.import_module(module)
    return HANDLERS


class JobCancelled(Exception):
    """Raised inside a handler by `JobContext.check_cancelled()` after a cancel request."""


class JobContext:
    """What a running handler sees. Thread-safe; every method may be called from the handler's thread."""

    def __init__(self, job: JobRecord, settings: Settings, loop: asyncio.AbstractEventLoop, store: Store) -> None:
        self.job = job
        self.job_id = job.id
        self.params = job.params
        self.settings = settings
        self.attempt = job.attempts
        self._loop = loop
        self._store = store
        self.cancel_event = threading.Event()
        self.interrupted = False  # set when the worker shuts down (not a user cancel)

    def call(self, coro: Any) -> Any:
        """Run a Store coroutine on the worker's loop and wait for it (for handlers)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def store(self) -> Store:
        return self._store

    def progress(self, fraction: float, message: str = "", **event: Any) -> None:
        """Record progress in [0, 1] and append an event (streamed to SSE / CLI)."""
        fraction = max(0.0, min(1.0, float(fraction)))
        self.call(self._store.update_job(self.job_id, progress=fraction, message=message, info=event))
        self.call(self._store.add_job_event(self.job_id, {"type": "progress", "progress": fraction, "message": message, **event}))

    def event(self, **event: Any) -> None:
        self.call(self._store.add_job_event(self.job_id, event))

    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def check_cancelled(self) -> None:
        if self.cancel_event.is_set():
            raise JobCancelled(f"job {self.job_id} cancelled")


def make_queue(url: str, settings: Settings) -> Queue:
    from service.store.keys import Keys

    return Queue.from_url(url, name=Keys(settings.key_prefix).queue_name)


async def enqueue(store: Store, queue: Queue, settings: Settings, kind: str, params: dict[str, Any], job_id: str | None = None) -> JobRecord:
    """Create the job record and queue it. `kind` must have a handler in some worker."""
    job = JobRecord(id=job_id or f"job_{secrets.token_hex(8)}", kind=kind, params=params)
    await store.create_job(job)
    await store.add_job_event(job.id, {"type": "status", "status": "queued"})
    await queue.enqueue(
        "run_job",
        job_id=job.id,
        key=job.id,
        timeout=0,  # training has no time limit; liveness comes from the heartbeat
        heartbeat=settings.job_heartbeat_s,
        retries=settings.job_retries,
        ttl=7 * 86400,
    )
    return job


async def cancel(store: Store, queue: Queue, job_id: str) -> JobRecord:
    """Cancel: a queued job is cancelled at once; a running one stops at its next check."""
    job = await store.get_job(job_id)
    if job.status in TERMINAL:
        raise Conflict(f"job {job_id} already {job.status}")
    await store.request_cancel(job_id)
    updated = await store.update_job(job_id, only_if={"queued"}, status="cancelled", finished_at=time.time(), cancel_requested=True, message="cancelled before it started")
    if updated is not None:
        saq_job = await queue.job(job_id)
        if saq_job is not None:
            with contextlib.suppress(Exception):
                await queue.abort(saq_job, "cancelled")
        await store.add_job_event(job_id, {"type": "status", "status": "cancelled"})
        return updated
    return await store.update_job(job_id, cancel_requested=True, message="cancelling") or await store.get_job(job_id)


async def reconcile_jobs(store: Store, queue: Queue, settings: Settings, job_ids: list[str] | None = None) -> list[str]:
    """Fail (or mark re-queued) records left `running` by a worker that stopped heartbeating.

    Returns the ids it changed. Safe to call from any process at any time.
    """
    stale_after = settings.job_heartbeat_s * 2 + settings.job_sweep_s
    changed: list[str] = []
    jobs = [await store.get_job(i) for i in job_ids] if job_ids else await store.list_jobs(limit=200)
    now = time.time()
    for job in jobs:
        if job.status != "running" or (job.heartbeat_at and now - job.heartbeat_at < stale_after):
            continue
        saq_job = await queue.job(job.id)
        saq_status = saq_job.status if saq_job else None
        requeued = saq_status in (SaqStatus.QUEUED, SaqStatus.NEW)
        why = f"re-queued: worker {job.worker} stopped responding"
        if saq_job is not None and saq_status in (SaqStatus.ACTIVE, SaqStatus.ABORTING):
            if await _saq_tracks(queue, job.id):
                continue  # SAQ still thinks it runs; its sweep will decide
            if job.attempts < settings.job_retries:
                # Orphaned: SAQ marks it running but holds it in no list, so no sweep will
                # ever look at it again (SAQ's sweep can abort a job in the instant between
                # a worker dequeuing it and marking it active). Hand it back ourselves.
                await queue.redis.delete(saq_job.abort_id)
                await queue.retry(saq_job, error=why)
                requeued = True
        if requeued:
            if await store.update_job(job.id, only_if={"running"}, status="queued", message=why):
                changed.append(job.id)
        else:
            reason = f"worker {job.worker} stopped responding (no heartbeat for {int(now - (job.heartbeat_at or now))} s) after {job.attempts} attempt(s)"
            if await store.update_job(job.id, only_if={"running"}, status="failed", error=reason, finished_at=now):
                await store.add_job_event(job.id, {"type": "status", "status": "failed", "error": reason})
                changed.append(job.id)
    return changed


async def _saq_tracks(queue: Queue, job_id: str) -> bool:
    """Whether SAQ holds the job in its active or queued list (so its sweep or a worker will
    get to it). Reads the Redis queue's list keys: SAQ has no public call for this."""
    saq_id = queue.job_id(job_id)
    for key in (queue._active, queue._queued):  # type: ignore[attr-defined]
        if await queue.redis.lpos(key, saq_id) is not None:  # type: ignore[attr-defined]
            return True
    return False


async def _run_job(saq_ctx: dict[str, Any], *, job_id: str) -> None:
    """The one SAQ function: runs our handler for the record `job_id`."""
    store: Store = saq_ctx["store"]
    settings: Settings = saq_ctx["settings"]
    worker_id: str = saq_ctx["worker_id"]
    saq_job = saq_ctx["job"]
    try:
        job = await store.get_job(job_id)
    except NotFound:
        return
    if job.status in TERMINAL:
        return  # a redelivery of finished work
    if await store.cancel_requested(job_id):
        await store.update_job(job_id, status="cancelled", finished_at=time.time(), message="cancelled before it started")
        await store.add_job_event(job_id, {"type": "status", "status": "cancelled"})
        return
    handler = HANDLERS.get(job.kind)
    if handler is None:
        await store.update_job(job_id, status="failed", error=f"no handler for job kind {job.kind!r} in worker {worker_id}", finished_at=time.time())
        return
    job = await store.update_job(
        job_id, status="running", started_at=time.time(), heartbeat_at=time.time(), attempts=job.attempts + 1, worker=worker_id, error=None, message="running"
    )
    await store.add_job_event(job_id, {"type": "status", "status": "running", "attempt": job.attempts})
    ctx = JobContext(job, settings, asyncio.get_running_loop(), store)

    async def heartbeat() -> None:
        interval = max(0.5, settings.job_heartbeat_s / 3)
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                await saq_job.update()  # touches SAQ's job so its sweep sees us alive
                await store.update_job(job_id, heartbeat_at=time.time())
                if await store.cancel_requested(job_id):
                    ctx.cancel_event.set()

    beat = asyncio.create_task(heartbeat())
    running = asyncio.get_running_loop().run_in_executor(None, handler, ctx)
    try:
        try:
            result = await asyncio.shield(running)
        except asyncio.CancelledError:
            # The worker is shutting down: stop the handler at its next check and hand the
            # job back to the queue (SAQ re-enqueues it); the next attempt resumes.
            ctx.interrupted = True
            ctx.cancel_event.set()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(running), timeout=60)
            with contextlib.suppress(Exception):
                await store.update_job(job_id, status="queued", message="interrupted by worker shutdown; will resume")
            raise
        await store.update_job(job_id, status="succeeded", result=result or {}, progress=1.0, finished_at=time.time(), message="done")
        await store.add_job_event(job_id, {"type": "status", "status": "succeeded"})
    except JobCancelled:
        await store.update_job(job_id, status="cancelled", finished_at=time.time(), message="cancelled")
        await store.add_job_event(job_id, {"type": "status", "status": "cancelled"})
    except ArenaError as exc:
        await store.update_job(job_id, status="failed", error=exc.message, finished_at=time.time())
        await store.add_job_event(job_id, {"type": "status", "status": "failed", "error": exc.message})
    except Exception as exc:  # noqa: BLE001 - any handler bug becomes a failed job with its reason
        log.exception("job %s failed", job_id)
        reason = f"{type(exc).__name__}: {exc}"
        await store.update_job(job_id, status="failed", error=reason, finished_at=time.time())
        await store.add_job_event(job_id, {"type": "status", "status": "failed", "error": reason})
    finally:
        beat.cancel()
        # Let it end here: a worker whose loop stops right after the last job would
        # otherwise destroy the cancelled task pending (and asyncio says so on stderr).
        with contextlib.suppress(asyncio.CancelledError):
            await beat


def build_worker(url: str, settings: Settings, concurrency: int = 1, worker_id: str | None = None) -> Worker:
    """A SAQ worker running our handlers; start it with `await worker.start()`."""
    load_handlers()
    queue = make_queue(url, settings)
    wid = worker_id or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    store = Store.from_url(url, settings.key_prefix)

    async def startup(ctx: dict[str, Any]) -> None:
        ctx.update(store=store, settings=settings, worker_id=wid)
        await store.worker_heartbeat(wid)

    async def shutdown(ctx: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):
            await store.worker_gone(wid)

    async def sweep_records() -> None:
        await store.worker_heartbeat(wid)
        await reconcile_jobs(store, queue, settings)

    worker = Worker(
        queue,
        functions=[("run_job", _run_job)],
        concurrency=concurrency,
        startup=startup,
        shutdown=shutdown,
        timers={"sweep": settings.job_sweep_s, "abort": 1, "schedule": 1, "worker_info": 10},
        id=wid,
    )
    worker._arena_periodic = sweep_records  # type: ignore[attr-defined]
    worker._arena_sweep_s = settings.job_sweep_s  # type: ignore[attr-defined]
    return worker


async def run_worker(worker: Worker) -> None:
    """Run a worker until cancelled, with our record sweep beside SAQ's."""

    async def periodic() -> None:
        while True:
            try:
                await worker._arena_periodic()  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 - keep sweeping; the next round may succeed
                stop_if_cancelled()
                log.exception("job sweep failed")
            stop_if_cancelled()
            await asyncio.sleep(worker._arena_sweep_s)  # type: ignore[attr-defined]

    side = asyncio.create_task(periodic())
    try:
        await worker.start()
    finally:
        side.cancel()
