"""Judging sweeps (admin): enqueue a `judge` job; list them with their results."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, get, post

from service import judging
from service.prompts import parse_prompt_record
from service.routes.auth import ADMIN_BULK, VIEWER
from service.store import Store


class JudgeRequest(msgspec.Struct, forbid_unknown_fields=True):
    """`judge`: an OpenAI-compatible URL (with `judge_model`), a judge profile of the server's
    settings, `reference[:METRIC]` or a candidate name. `prompts`: "pool", "human",
    "dataset:NAME[@V]" or a list of prompt objects. A URL judge's API key is the server's
    (`ARENA_JUDGE_API_KEY` or the profile's); a request cannot name or send one."""

    judge: str
    candidates: list[str]
    prompts: str | list[Any] = "pool"
    judge_model: str | None = None
    allow_both_bad: bool = False
    graded: bool = False  # Arena-Hard's five-point verdicts; a strong one counts as 3 votes
    max_tokens: int = 512
    n: int = 200
    concurrency: int = 4


@post("/api/judge", summary="Judge candidates pairwise (both orders) as a job; verdicts go to the judge board", status_code=202, **ADMIN_BULK)
async def start_judge(request: Request, store: Store, data: JudgeRequest) -> dict:
    spec = judging.parse_judge_spec(data.judge, model=data.judge_model, allow_both_bad=data.allow_both_bad,
                                     max_tokens=data.max_tokens, settings=request.app.state.settings, graded=data.graded)
    if isinstance(data.prompts, str):
        source = judging.parse_prompt_source(data.prompts)
    else:
        items = [parse_prompt_record(p, f"prompts[{i}]", source="api") for i, p in enumerate(data.prompts)]
        source = {"kind": "inline", "items": [msgspec.to_builtins(p) for p in items]}
    job = await judging.start_judging(store, request.app.state.queue, request.app.state.settings, judge=spec,
                                      candidates=data.candidates, prompts=source, n=data.n, concurrency=data.concurrency)
    return msgspec.to_builtins(job)


@get("/api/judge", summary="Judging jobs, newest first, with their results (inconsistent pairs, errors, agreement)", **VIEWER)
async def list_judge_jobs(store: Store) -> list[dict]:
    return [msgspec.to_builtins(j) for j in await store.list_jobs(limit=50, kind="judge")]
