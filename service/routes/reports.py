"""Data-debugging reports: start a trace, read its report (JSON, or the HTML page)."""

from __future__ import annotations

from pathlib import Path

import msgspec
from litestar import Request, get, post
from litestar.response import Response

from service import traces
from service.errors import NotFound
from service.routes.auth import ADMIN, PAGE_VIEWER, VIEWER
from service.store import Store


class TraceRequest(msgspec.Struct, forbid_unknown_fields=True):
    candidate: str
    evals: list[str] = []
    battles: bool = False
    top: int = 50
    threshold: float = 1.0
    metric: str | None = None
    gold: bool = True  # False: trace the bad outputs alone, ignoring the evals' gold answers
    checkpoints: int | None = None  # at most this many, spread over training
    refused: bool = False  # only failures whose output is a refusal


@post("/api/reports", summary="Trace a candidate's failures to its training records (a job)", status_code=202, **ADMIN)
async def create_report(request: Request, store: Store, data: TraceRequest) -> dict:
    job = await traces.start_trace(store, request.app.state.queue, request.app.state.settings, candidate=data.candidate,
                                   evals=data.evals, battles=data.battles, top=max(1, min(data.top, 1000)),
                                   threshold=data.threshold, metric=data.metric, gold=data.gold,
                                   checkpoints=data.checkpoints, refused=data.refused)
    return msgspec.to_builtins(job)


@get("/api/reports", summary="Reports (trace jobs), newest first", **VIEWER)
async def list_reports(store: Store) -> list[dict]:
    return [msgspec.to_builtins(j) for j in await store.list_jobs(limit=100, kind="trace")]


@get("/api/reports/{report_id:str}", summary="A report's job status and, when done, report.json", **VIEWER)
async def get_report(request: Request, store: Store, report_id: str) -> dict:
    job = await store.get_job(report_id)
    if job.kind != "trace":
        raise NotFound(f"no report {report_id!r}")
    view = {"job": msgspec.to_builtins(job), "report": None}
    if job.status == "succeeded":
        view["report"] = traces.load_report(request.app.state.settings, report_id)
    return view


@get("/reports/{report_id:str}", include_in_schema=False, **PAGE_VIEWER)
async def report_page(request: Request, store: Store, report_id: str) -> Response:
    job = await store.get_job(report_id)
    if job.kind != "trace":
        raise NotFound(f"no report {report_id!r}")
    path = traces.report_dir(request.app.state.settings, report_id) / "report.html"
    if job.status != "succeeded" or not path.exists():
        from html import escape

        from service.public_paths import PathRedactor

        error = PathRedactor(request.app.state.settings.data_dir).text(job.error or "")
        body = f"<!doctype html><meta http-equiv='refresh' content='3'><p>Report {escape(report_id)}: {escape(job.status)} ({job.progress:.0%}) {escape(error)}</p>"
        return Response(body, media_type="text/html")
    return _report_in_language(request, report_id, path)


#: The report page runs no script and loads nothing: its text comes from training records
#: and model output, so the browser is told to run and fetch nothing even if some slipped
#: past the template's escaping (the plot is inline SVG, the styles inline).
REPORT_HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                  "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
                  "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}


def _report_in_language(request: Request, report_id: str, page: Path) -> Response:
    """The report page in the reader's language (`service.i18n`), rendered again from
    report.json and its plot; a report written before the plot was kept apart is served
    as it was written."""
    from evaluators.reports import PLOT_FILE, render_html
    from service.i18n import for_request

    plot = page.with_name(PLOT_FILE)
    if not plot.exists():
        return Response(page.read_text(), media_type="text/html", headers=REPORT_HEADERS)
    context, cookies = for_request(request)
    report = traces.load_report(request.app.state.settings, report_id)
    switch = {"locale": context["other_locale"], "name": context["other_locale_name"]}
    html = render_html(report, plot=plot.read_text(), gettext=context["_"], lang=context["lang"], switch=switch)
    return Response(html, media_type="text/html", cookies=list(cookies), headers=REPORT_HEADERS)
