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
from service.errors import RateLimited
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


#: Live followers (SSE streams) one API process serves per job, and in all: each holds a
#: connection and polls Redis, so an unbounded number is a cheap way to exhaust the server.
MAX_FOLLOWERS_PER_JOB = 16
MAX_FOLLOWERS = 256
_followers: dict[str, int] = {}


async def follow(store: Store, job_id: str) -> ServerSentEvent:
    """The job's progress as server-sent events (`/api/jobs/{id}/events`, `/api/runs/{id}/events`);
    429 past the follower caps."""
    await store.get_job(job_id)
    if _followers.get(job_id, 0) >= MAX_FOLLOWERS_PER_JOB or sum(_followers.values()) >= MAX_FOLLOWERS:
        raise RateLimited(f"job {job_id} already has the most live followers this server serves; "
                          "poll GET /api/jobs/{id} instead, or try again later")
    _followers[job_id] = _followers.get(job_id, 0) + 1

    async def gen() -> AsyncIterator[str]:
        try:
            async for item in job_event_stream(store, job_id):
                yield msgspec.json.encode(item["event"]).decode()
        finally:
            _followers[job_id] -= 1
            if not _followers[job_id]:
                del _followers[job_id]

    return ServerSentEvent(gen())


@get("/api/jobs/{job_id:str}/events", summary="Server-sent events of a job's progress", **VIEWER)
async def job_events(store: Store, job_id: str) -> ServerSentEvent:
    return await follow(store, job_id)
