"""The arena's setup (admin): which candidates compete, and the prompt pool."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, get, post

from service import battles
from service.errors import InvalidInput
from service.prompts import parse_prompt_record, prompts_from_dataset
from service.routes.auth import ADMIN, ADMIN_BULK
from service.store import Store


class ActiveRequest(msgspec.Struct, forbid_unknown_fields=True):
    models: list[str]
    active: bool = True


class PromptsRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Either `prompts` (objects with `prompt`/`text`, optional `reference`, `category`,
    `source`) or `dataset` (NAME[@VERSION]; its held-out split, or `split: all`)."""

    prompts: list[Any] | None = None
    dataset: str | None = None
    split: str = "test"
    category: str | None = None
    source: str | None = None


@get("/api/arena", summary="How many candidates compete (never which), prompt pool size, reviewer mode and vote limits")
async def arena_state(request: Request, store: Store) -> dict:
    settings = request.app.state.settings
    return {"active_count": len(await store.active_models()), "prompts": await store.prompt_count(),
            "reviewer_mode": settings.reviewer_mode, "votes_per_minute": settings.votes_per_minute,
            "votes_per_minute_per_address": settings.votes_per_minute_per_address, "min_vote_s": settings.min_vote_s}


@get("/api/arena/active", summary="Which candidates compete (admin: reviewers see only a count), and retired adapters "
     "the generation server has yet to unload", **ADMIN)
async def active_models(store: Store) -> dict:
    pending = await store.pending_unloads()
    return {"active": await store.active_models(), **({"pending_unloads": msgspec.to_builtins(pending)} if pending else {})}


@post("/api/arena/active", summary="Mark candidates as competing (or not)", status_code=200, **ADMIN)
async def set_active(request: Request, store: Store, data: ActiveRequest) -> dict:
    if not data.models:
        raise InvalidInput("models: name at least one candidate")
    changed = await battles.set_active(store, request.app.state.settings, data.models, data.active)
    return {"active": changed.active, **({"warnings": changed.warnings} if changed.warnings else {})}


@post("/api/arena/prompts", summary="Add prompts to the pool (a list, or a dataset's held-out split)", status_code=201, **ADMIN_BULK)
async def add_prompts(request: Request, store: Store, data: PromptsRequest) -> dict:
    if (data.prompts is None) == (data.dataset is None):
        raise InvalidInput("send either `prompts` (a list) or `dataset` (NAME[@VERSION])")
    if data.dataset is not None:
        prompts = await prompts_from_dataset(store, request.app.state.settings, data.dataset, split=data.split, category=data.category)
    else:
        prompts = [parse_prompt_record(p, f"prompts[{i}]", source=data.source or "api", category=data.category) for i, p in enumerate(data.prompts or [])]
    if not prompts:
        raise InvalidInput("no prompts to add")
    total = await store.add_prompts([msgspec.to_builtins(p) for p in prompts])
    return {"added": len(prompts), "total": total}
