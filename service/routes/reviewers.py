"""Reviewers (admin): invites and their revocation, the list with vote counts, exclusion (and the recount it needs)."""

from __future__ import annotations

import msgspec
from litestar import Request, delete, get, post

from service import leaderboards, reviewers
from service.domain import check_name
from service.routes.auth import ADMIN
from service.store import Store


class InviteRequest(msgspec.Struct, forbid_unknown_fields=True):
    reviewer: str


@post("/api/reviewers/invites", summary="Invite a reviewer: a token, shown once, and the link to open", status_code=201, **ADMIN)
async def create_invite(request: Request, store: Store, data: InviteRequest) -> dict:
    token = await reviewers.create_invite(store, data.reviewer)
    return {"reviewer": data.reviewer, "token": token, "link": f"{str(request.base_url).rstrip('/')}/arena?token={token}"}


@get("/api/reviewers", summary="Reviewers with their human votes and whether they are excluded", **ADMIN)
async def list_reviewers(store: Store) -> list[dict]:
    return await leaderboards.reviewer_stats(store)


@get("/api/reviewers/suspicious", summary="Reviewers whose votes look unlike honest ones (improbable under the board, one side, too fast, all ties), with the figures", **ADMIN)
async def suspicious_reviewers(store: Store, min_votes: int = 20) -> list[dict]:
    return await reviewers.suspicious_reviewers(store, min_votes=max(1, min_votes))


@post("/api/reviewers/{reviewer:str}/exclude", summary="Refuse a reviewer's votes from now on and recount the boards without their past ones", status_code=200, **ADMIN)
async def exclude_reviewer(store: Store, reviewer: str) -> dict:
    check_name(reviewer, "reviewer")  # an invited name or an anonymous id
    await store.exclude_reviewer(reviewer)
    return {"reviewer": reviewer, "excluded": True, "counted": await store.rebuild_aggregates()}


@delete("/api/reviewers/{reviewer:str}/exclude", summary="Count a reviewer's votes again", status_code=200, **ADMIN)
async def include_reviewer(store: Store, reviewer: str) -> dict:
    check_name(reviewer, "reviewer")
    await store.include_reviewer(reviewer)
    return {"reviewer": reviewer, "excluded": False, "counted": await store.rebuild_aggregates()}


@delete("/api/reviewers/{reviewer:str}/invites", summary="Revoke every invite token of a reviewer", status_code=200, **ADMIN)
async def revoke_invites(store: Store, reviewer: str) -> dict:
    return {"reviewer": reviewer, "revoked": await store.revoke_invites(reviewer)}
