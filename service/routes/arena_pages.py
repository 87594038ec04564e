"""The arena pages: `/arena` (vote) and `/leaderboard`. Server-rendered; a little vanilla JS
adds the answers as they are written (one `EventSource` per side), fetch voting, keyboard
shortcuts and live refresh, and both pages work without it (plain form POSTs; a battle
still being answered reloads itself until it is complete). Answers are escaped before any formatting (`arena.markdown`), and a
strict Content-Security-Policy allows only this page's own nonce'd script, so model output
cannot run code even if some escaping were missed."""

from __future__ import annotations

import secrets
from typing import Annotated, Any
from urllib.parse import urlencode

from litestar import Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect, Template

from service import battles, judge_calibration, leaderboards, reviewers
from service.csrf import check_form, form_token
from service.i18n import for_request
from service.errors import ArenaError, NotFound, Unauthorized
from service.category_boards import GROUPS, category_boards, check_category
from service.leaderboard_charts import ci_chart, win_rate_heatmap
from service.store import Store


def _headers(nonce: str) -> dict[str, str]:
    csp = (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; img-src 'self' data:; "
           "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
    return {"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
            "Cache-Control": "no-store"}


def _page(request: Request, name: str, context: dict[str, Any], status: int = 200, cookies: tuple = ()) -> Template:
    nonce = secrets.token_urlsafe(16)
    token, csrf_cookies = form_token(request, request.app.state.settings)
    strings, lang_cookies = for_request(request)
    return Template(name, context={**context, **strings, "nonce": nonce, "csrf": token}, status_code=status,
                    headers=_headers(nonce), cookies=list(cookies) + list(csrf_cookies) + list(lang_cookies))


@get("/arena", include_in_schema=False)
async def arena_page(request: Request, store: Store, battle: str | None = None, token: str | None = None) -> Template | Response:
    settings = request.app.state.settings
    if token and token.strip():
        return await _invite_page(request, store, token)
    try:
        reviewer = await reviewers.identify(request, store, settings)
    except ArenaError as exc:
        return _page(request, "arena.html", {"error": exc.message, "battle": None, "allow_prompt": False}, exc.status)
    context: dict[str, Any] = {"battle": None, "reveal": None, "error": None, "allow_prompt": True, "reviewer": reviewer.id}
    status = 200
    try:
        if battle:
            record = await store.get_battle(battle)
            context["reveal"] = await battles.reveal_if_voted(store, record)
        else:  # a reload shows the same unvoted battle again rather than generating another
            record = await store.pending_battle(reviewer.id)
            if record is None or record.get("failed"):
                record, _ = await battles.deal_battle(store, request.app.state.serving, settings, reviewer=reviewer.id,
                                                      address=reviewers.client_address(request, settings))
                await store.set_pending_battle(reviewer.id, record["id"], battles.BATTLE_TTL_S)
        context["battle"] = battles.public_view(record)
    except ArenaError as exc:
        context["error"], status = exc.message, exc.status if isinstance(exc, NotFound) else 200
    return _page(request, "arena.html", context, status, reviewer.cookies)


async def _invite_page(request: Request, store: Store, token: str) -> Template:
    """An invite link asks before it signs the browser in. Opening it changes nothing: a
    page on another site could send the browser to the link of an invite of its own (its
    votes would then count as that reviewer's), and mail scanners that open links would
    use up the single-use token before its reviewer does."""
    name = await store.reviewer_for_token(reviewers.hash_token(token.strip()))
    if name is None:
        return _page(request, "arena.html", {"error": reviewers.USED_INVITE, "battle": None, "allow_prompt": False}, 401)
    session = request.cookies.get(reviewers.TOKEN_COOKIE, "").strip()
    current = await store.reviewer_for_token(reviewers.hash_token(session)) if session else None
    invite = {"token": token.strip(), "reviewer": name, "current": current}
    return _page(request, "arena.html", {"invite": invite, "battle": None, "allow_prompt": False, "error": None})


@post("/arena/join", include_in_schema=False)
async def arena_join(
    request: Request, store: Store, data: Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
) -> Template | Response:
    """The invite page's button: the token is exchanged for a session kept in a cookie (the
    link is used up), and the browser goes on to the arena without it in the address."""
    try:
        check_form(request, data)
        token = str(data.get("token", "")).strip()
        if not token:
            raise Unauthorized(reviewers.USED_INVITE)
        reviewer = await reviewers.identify(request, store, request.app.state.settings, url_token=token)
    except ArenaError as exc:
        return _page(request, "arena.html", {"error": exc.message, "battle": None, "allow_prompt": False}, exc.status)
    return Redirect("/arena", status_code=303, cookies=list(reviewer.cookies))


@post("/arena", include_in_schema=False)
async def arena_own_prompt(
    request: Request, store: Store, data: Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
) -> Template | Response:
    settings = request.app.state.settings
    try:
        check_form(request, data)
        reviewer = await reviewers.identify(request, store, settings)
        record, _ = await battles.deal_battle(store, request.app.state.serving, settings, reviewer=reviewer.id,
                                              prompt_text=data.get("prompt", ""), address=reviewers.client_address(request, settings))
    except ArenaError as exc:
        return _page(request, "arena.html", {"error": exc.message, "battle": None, "allow_prompt": True, "prompt": data.get("prompt", "")}, exc.status)
    return Redirect(f"/arena?battle={record['id']}", status_code=303, cookies=list(reviewer.cookies))


@post("/arena/vote", include_in_schema=False)
async def arena_vote_form(
    request: Request, store: Store, data: Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
) -> Template:
    """The vote without JavaScript: a plain form POST, answered with the revealed battle."""
    settings = request.app.state.settings
    battle_id = data.get("battle_id", "")
    context: dict[str, Any] = {"battle": None, "reveal": None, "error": None, "allow_prompt": True}
    try:
        check_form(request, data)
        record = await store.get_battle(battle_id)
        context["battle"] = battles.public_view(record)
        reviewer = await reviewers.identify(request, store, settings, new=False)
        reveal = await battles.cast_vote(store, settings, battle_id, data.get("choice", ""), reviewer=reviewer.id,
                                         reason=data.get("reason") or None, address=reviewers.client_address(request, settings))
        context["reveal"] = {"model_a": reveal.model_a, "model_b": reveal.model_b, "choice": reveal.choice}
    except ArenaError as exc:
        context["error"] = exc.message
        return _page(request, "arena.html", context, exc.status)
    return _page(request, "arena.html", context, 200, reviewer.cookies)


@get("/leaderboard", include_in_schema=False)
async def leaderboard_page(request: Request, store: Store, category: str | None = None, source: str | None = None,
                           by: str | None = None, by_board: str | None = None) -> Template:
    source, error, status = source or None, None, 200
    try:
        category = await check_category(store, category, source)
        by_category = await category_boards(store, by_board or "human", by=by or None)
    except ArenaError as exc:  # a bad filter: say so, and show the unfiltered boards
        category, by, error, status = None, None, exc.message, exc.status
        by_category = await category_boards(store, "human")
    boards = []
    for board, title in (("human", "Human votes"), ("judge", "LLM / reference judges")):
        view = await leaderboards.board_view(store, board, category=category, source=source)
        boards.append({"view": view, "title": title, "ci_chart": ci_chart(view.rows), "heatmap": win_rate_heatmap(view.models, view.win_rates)})
    summary = await leaderboards.arena_summary(store, category=category, source=source)
    judge_runs = [j for j in await store.list_jobs(limit=10, kind="judge") if j.result]
    calibration = await judge_calibration.calibration_view(store)  # as stored: a job computes it
    query = urlencode({k: v for k, v in (("category", category), ("source", source)) if v})
    return _page(request, "leaderboard.html", {"boards": boards, "summary": summary, "category": category, "source": source,
                                               "query": f"?{query}" if query else "", "by_category": by_category,
                                               "by": by or "", "groups": GROUPS, "error": error,
                                               "judge_runs": judge_runs, "votes": await store.vote_count(),
                                               "calibration": calibration}, status)
