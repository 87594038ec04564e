"""Training runs and candidates."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from litestar import Request, delete, get, post
from litestar.response import ServerSentEvent

from service import jobs, runs
from service.errors import NotFound
from service.routes.auth import ADMIN, VIEWER
from service.routes.jobs import follow
from service.store import Store


class RunRequest(msgspec.Struct, forbid_unknown_fields=True):
    """An SFT run (`data`), or with `method` "dpo" a DPO run from the candidate `parent` on
    `pairs` (preference pairs as `arena battles export --format dpo` writes them) or on
    the arena's votes (`preferences`: "arena:human", "arena:judge" or "arena:all")."""

    base: str
    name: str
    data: str | None = None
    config: dict[str, Any] = {}
    method: Literal["sft", "dpo"] = "sft"
    parent: str | None = None
    preferences: str | None = None
    pairs: list[dict[str, Any]] | None = None


async def _start(request: Request, store: Store, data: RunRequest):
    from service.errors import InvalidInput

    app = request.app.state
    if data.method == "sft":
        if data.data is None or data.parent or data.preferences or data.pairs is not None:
            raise InvalidInput("an SFT run takes `data` (a dataset NAME[@VERSION]), not parent/preferences/pairs")
        return await runs.start_run(store, app.queue, app.settings, base=data.base, data=data.data, name=data.name, config=data.config)
    from service.dpo_runs import PreferenceSource, arena_source, start_dpo_run
    from service.preferences import parse_preferences

    if data.data is not None or data.parent is None or (data.preferences is None) == (data.pairs is None):
        raise InvalidInput("a DPO run takes `parent` (the SFT candidate) and one of `pairs` or `preferences` "
                           "(\"arena:human\", \"arena:judge\" or \"arena:all\"), not `data`")
    if data.pairs is not None:
        pairs = parse_preferences(b"".join(msgspec.json.encode(p) + b"\n" for p in data.pairs), source="pairs")
        source = PreferenceSource(kind="file", name="request")
    else:
        kind, _, board = data.preferences.partition(":")
        if kind != "arena":
            raise InvalidInput(f"preferences {data.preferences!r}: expected arena:human, arena:judge or arena:all")
        pairs, source = None, arena_source(board or "human")
    return await start_dpo_run(store, app.queue, app.settings, base=data.base, parent=data.parent, name=data.name,
                               source=source, pairs=pairs, config=data.config)


async def _run_view(request: Request, store: Store, run_id: str) -> dict:
    job = await store.get_job(run_id)
    if job.kind != "train":
        raise NotFound(f"no run {run_id!r}")
    await jobs.reconcile_jobs(store, request.app.state.queue, request.app.state.settings, [run_id])
    job = await store.get_job(run_id)
    events = [e for _, e in await store.read_job_events(run_id, count=100000)]
    curve = runs.loss_curve(request.app.state.settings, events, run_id)
    view = msgspec.to_builtins(job)
    view.update(step=job.info.get("step", 0), max_steps=job.info.get("max_steps"), loss=job.info.get("loss"), loss_curve=curve)
    return view


@post("/api/runs", summary="Enqueue a training run", status_code=202, **ADMIN)
async def create_run(request: Request, store: Store, data: RunRequest) -> dict:
    return msgspec.to_builtins(await _start(request, store, data))


@get("/api/runs", summary="Training runs, newest first", **VIEWER)
async def list_runs(store: Store) -> list[dict]:
    return [msgspec.to_builtins(j) for j in await store.list_jobs(limit=100, kind="train")]


@get("/api/runs/{run_id:str}", summary="A run's status, step, loss and loss curve", **VIEWER)
async def get_run(request: Request, store: Store, run_id: str) -> dict:
    return await _run_view(request, store, run_id)


@delete("/api/runs/{run_id:str}", summary="Cancel a run", status_code=200, **ADMIN)
async def cancel_run(request: Request, store: Store, run_id: str) -> dict:
    job = await store.get_job(run_id)
    if job.kind != "train":
        raise NotFound(f"no run {run_id!r}")
    return msgspec.to_builtins(await jobs.cancel(store, request.app.state.queue, run_id))


@get("/api/runs/{run_id:str}/events", summary="Server-sent events: one per logging step, then the final status", **VIEWER)
async def run_events(store: Store, run_id: str) -> ServerSentEvent:
    return await follow(store, run_id)


@get("/api/candidates", summary="Candidates: name, base, dataset version, key metrics", **VIEWER)
async def list_candidates(store: Store) -> list[dict]:
    return [msgspec.to_builtins(c) for c in await store.list_candidates()]


@get("/api/candidates/{name:str}", summary="One candidate with its lineage", **VIEWER)
async def get_candidate(store: Store, name: str) -> dict:
    return msgspec.to_builtins(await store.get_candidate(name))


@get("/api/bases", summary="Registered base models", **VIEWER)
async def list_bases(store: Store) -> list[dict]:
    return [msgspec.to_builtins(b) for b in await store.list_bases()]
