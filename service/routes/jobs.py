"""Jobs: status, progress events (SSE), cancel."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import msgspec
from litestar import Request, delete, get
from litestar.params import Parameter
from litestar.response import ServerSentEvent

from service import jobs
from service.domain import TERMINAL
from service.routes.auth import ADMIN, VIEWER
from service.store import Store


@get("/api/jobs", summary="Recent jobs, newest first", **VIEWER)
async def list_jobs(store: Store, kind: str | None = None, limit: Annotated[int, Parameter(ge=1, le=500)] = 50) -> list[dict]:
    return [msgspec.to_builtins(j) for j in await store.list_jobs(limit=limit, kind=kind)]


@get("/api/jobs/{job_id:str}", summary="One job's status, progress and result", **VIEWER)
async def get_job(request: Request, store: Store, job_id: str) -> dict:
    await store.get_job(job_id)  # 404 first
    await jobs.reconcile_jobs(store, request.app.state.queue, request.app.state.settings, [job_id])
    return msgspec.to_builtins(await store.get_job(job_id))


@delete("/api/jobs/{job_id:str}", summary="Cancel a job", status_code=200, **ADMIN)
async def cancel_job(request: Request, store: Store, job_id: str) -> dict:
    return msgspec.to_builtins(await jobs.cancel(store, request.app.state.queue, job_id))


async def job_event_stream(store: Store, job_id: str, after: str = "0") -> AsyncIterator[dict]:
    """Events of a job as they come, ending after its terminal status."""
    while True:
        events = await store.read_job_events(job_id, after=after, block_ms=1000)
        for event_id, event in events:
            after = event_id
            yield {"id": event_id, "event": event}
        if not events:
            job = await store.get_job(job_id)
            if job.status in TERMINAL:
                return


@get("/api/jobs/{job_id:str}/events", summary="Server-sent events of a job's progress", **VIEWER)
async def job_events(store: Store, job_id: str) -> ServerSentEvent:
    await store.get_job(job_id)

    async def gen() -> AsyncIterator[str]:
        async for item in job_event_stream(store, job_id):
            yield msgspec.json.encode(item["event"]).decode()

    return ServerSentEvent(gen())
