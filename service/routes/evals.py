"""Benchmark runs (evals): start one, list them, read one, and its page."""

from __future__ import annotations

from typing import Any

import msgspec
import yaml
from litestar import Request, get, post
from litestar.response import Template

from service import evals, jobs
from service.errors import InvalidInput, NotFound
from service.routes.auth import ADMIN_BULK, PAGE_VIEWER, VIEWER
from service.store import Store
from service.store.evals import EvalRecord


class EvalRequest(msgspec.Struct, forbid_unknown_fields=True):
    """`task`: the task as YAML text or a JSON object; its dataset must be a registered
    `NAME@VERSION:SPLIT`, unless `docs` carries the documents. `limit`: a count, or a
    fraction in (0, 1)."""

    candidates: list[str] | str
    task: str | dict[str, Any]
    docs: list[dict[str, Any]] | None = None
    limit: int | float | None = None
    apply_chat_template: bool | None = None  # lm-eval's run flags, over the task's own fields
    system_instruction: str | None = None
    fewshot_as_multiturn: bool | None = None


def _summary(record: EvalRecord) -> dict[str, Any]:
    """An eval without its task config and worst samples (for lists)."""
    view = msgspec.to_builtins(record)
    view.pop("task_config")
    for c in view["candidates"]:
        c.pop("worst")
    return view


async def eval_view(request: Request, store: Store, eval_id: str) -> dict[str, Any]:
    """The eval's record with `status: succeeded`, or, while it has none, its job's state."""
    try:
        return {"status": "succeeded", **msgspec.to_builtins(await store.get_eval(eval_id))}
    except NotFound:
        pass
    try:
        job = await store.get_job(eval_id)
    except NotFound:
        raise NotFound(f"no eval {eval_id!r}") from None
    if job.kind != "eval":
        raise NotFound(f"no eval {eval_id!r}")
    await jobs.reconcile_jobs(store, request.app.state.queue, request.app.state.settings, [eval_id])
    job = await store.get_job(eval_id)
    p = job.params
    return {"id": job.id, "status": job.status, "progress": job.progress, "message": job.message, "error": job.error,
            "task": p.get("task", {}).get("task"), "dataset": p.get("dataset"), "task_hash": p.get("task_hash"),
            "candidate_names": p.get("candidates", []), "limit": p.get("limit"), "created_at": job.created_at}


@post("/api/evals", summary="Run a task on one or more candidates (a job; its id is the eval id)", status_code=202, **ADMIN_BULK)
async def create_eval(request: Request, store: Store, data: EvalRequest) -> dict:
    try:
        text = yaml.safe_dump(data.task, sort_keys=False) if isinstance(data.task, dict) else data.task
    except yaml.YAMLError as exc:
        raise InvalidInput(f"task: cannot be written as YAML: {exc}") from None
    task = evals.parse_task_text(text, evals.chat_overrides(
        apply_chat_template=data.apply_chat_template, system_instruction=data.system_instruction,
        fewshot_as_multiturn=data.fewshot_as_multiturn))
    names = data.candidates.split(",") if isinstance(data.candidates, str) else data.candidates
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise InvalidInput("candidates: name at least one candidate")
    job = await evals.start_eval(store, request.app.state.queue, request.app.state.settings, task=task,
                                 candidates=names, limit=data.limit, docs=data.docs, allow_files=False)
    return {**msgspec.to_builtins(job), "page": f"/evals/{job.id}"}


@get("/api/evals", summary="Finished evals, newest first (scores and lineage; no samples)", **VIEWER)
async def list_evals(store: Store) -> list[dict]:
    return [_summary(r) for r in await store.list_evals(limit=100)]


@get("/api/evals/{eval_id:str}", summary="One eval: scores with standard errors, lineage, files and worst samples", **VIEWER)
async def get_eval(request: Request, store: Store, eval_id: str) -> dict:
    return await eval_view(request, store, eval_id)


@get("/api/candidates/{name:str}/evals", summary="Evals that scored a candidate, newest first", **VIEWER)
async def candidate_evals(store: Store, name: str) -> list[dict]:
    await store.get_candidate(name)  # 404 names the known candidates
    return [_summary(r) for r in await store.list_candidate_evals(name)]


@get("/evals/{eval_id:str}", include_in_schema=False, **PAGE_VIEWER)
async def eval_page(request: Request, store: Store, eval_id: str) -> Template:
    view = await eval_view(request, store, eval_id)
    metrics: list[str] = []
    for c in view.get("candidates", []):
        metrics += [m for m in c["metrics"] if m not in metrics]
    from service.public_paths import PathRedactor
    from service.routes.pages import page

    return page(request, "eval.html", {"eval": PathRedactor()(view), "metrics": metrics})
