"""Corrections over HTTP: a reviewer submits one after voting (JSON API, or the arena page's
form), the admin lists them and accepts or rejects each (JSON API, or the `/corrections`
page). The page forms are CSRF-checked like `/arena/vote`; the page's buttons need a read
session opened with the admin token (`/login`), the API the admin bearer token."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect, Template

from service import battles, corrections, reviewers
from service.csrf import check_form, check_same_origin
from service.errors import ArenaError, Forbidden, NotFound
from service.routes.arena_pages import _page
from service.routes.auth import ADMIN, PAGE_VIEWER, is_admin
from service.store import Store


class CorrectionRequest(msgspec.Struct, forbid_unknown_fields=True):
    """`text`: the corrected answer; `based_on`: "a"/"b" when it edits that answer, null when written fresh."""

    text: str
    based_on: Literal["a", "b"] | None = None


class DecisionRequest(msgspec.Struct, forbid_unknown_fields=True):
    note: str | None = None


def _mine(c: corrections.Correction) -> dict[str, Any]:
    """What the reviewer gets back: their correction and its status (no reviewer list, no notes of others)."""
    return {k: v for k, v in msgspec.to_builtins(c).items() if k in ("id", "battle_id", "text", "based_on", "status", "created_at", "updated_at")}


@post("/api/battles/{battle_id:str}/corrections", summary="After your vote: submit a corrected answer (replaces your pending one)",
      status_code=201)
async def submit_correction(request: Request, store: Store, battle_id: str, data: CorrectionRequest) -> Response:
    settings = request.app.state.settings
    check_same_origin(request)
    reviewer = await reviewers.identify(request, store, settings, new=False)
    correction = await corrections.submit_correction(store, settings, battle_id, reviewer=reviewer.id, text=data.text,
                                                     based_on=data.based_on)
    return Response(_mine(correction), status_code=201, cookies=list(reviewer.cookies))


@get("/api/corrections", summary="Corrections, newest first (pending, accepted or rejected)", **ADMIN)
async def list_corrections(store: Store, status: Literal["pending", "accepted", "rejected"] | None = None) -> list[dict]:
    return [msgspec.to_builtins(c) for c in await corrections.list_corrections(store, status)]


@post("/api/corrections/{correction_id:str}/accept", summary="Accept a pending correction (final)", status_code=200, **ADMIN)
async def accept_correction(store: Store, correction_id: str, data: DecisionRequest | None = None) -> dict:
    decided = await corrections.decide_correction(store, correction_id, accept=True, by="admin", note=data.note if data else None)
    return msgspec.to_builtins(decided)


@post("/api/corrections/{correction_id:str}/reject", summary="Reject a pending correction (final)", status_code=200, **ADMIN)
async def reject_correction(store: Store, correction_id: str, data: DecisionRequest | None = None) -> dict:
    decided = await corrections.decide_correction(store, correction_id, accept=False, by="admin", note=data.note if data else None)
    return msgspec.to_builtins(decided)


# --- pages ------------------------------------------------------------------------------


@post("/arena/correction", include_in_schema=False)
async def correction_form(
    request: Request, store: Store, data: Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
) -> Template:
    """The arena page's correction form (works without JavaScript): answered with the
    revealed battle and the stored correction, or the form again with the error."""
    settings = request.app.state.settings
    context: dict[str, Any] = {"battle": None, "reveal": None, "error": None, "allow_prompt": True,
                               "correction_text": data.get("text", "")}
    try:
        check_form(request, data)
        record = await store.get_battle(data.get("battle_id", ""))
        context["battle"] = battles.public_view(record)
        reveal = await battles.reveal_if_voted(store, record)
        context["reveal"] = reveal
        reviewer = await reviewers.identify(request, store, settings, new=False)
        correction = await corrections.submit_correction(store, settings, record["id"], reviewer=reviewer.id,
                                                         text=data.get("text", ""), based_on=data.get("based_on") or None)
        context["reveal"] = {**(reveal or {}), "choice": correction.choice}
        context["correction"] = correction
    except ArenaError as exc:
        context["error"] = exc.message
        return _page(request, "arena.html", context, exc.status)
    return _page(request, "arena.html", context, 201, reviewer.cookies)


@get("/corrections", include_in_schema=False, **PAGE_VIEWER)
async def corrections_page(request: Request, store: Store, status: str | None = "pending") -> Template:
    status = status if status in corrections.STATUSES else None
    items = await corrections.list_corrections(store, status)
    return _page(request, "corrections.html", {"corrections": items, "status": status, "admin": await is_admin(request),
                                               "statuses": corrections.STATUSES})


@post("/corrections/{correction_id:str}/{decision:str}", include_in_schema=False)
async def decide_form(
    request: Request, store: Store, correction_id: str, decision: str,
    data: Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response:
    """The `/corrections` page's accept/reject buttons: CSRF-checked, admin session only."""
    check_form(request, data)
    if decision not in ("accept", "reject"):
        raise NotFound(f"no action {decision[:20]!r}: a correction is accepted or rejected")
    if not await is_admin(request):
        raise Forbidden("deciding on corrections needs the admin: sign in at /login with the admin token")
    await corrections.decide_correction(store, correction_id, accept=decision == "accept", by="admin",
                                        note=(data.get("note") or "").strip() or None)
    back = data.get("status") if data.get("status") in corrections.STATUSES else "all"
    return Redirect(f"/corrections?status={back}", status_code=303)
