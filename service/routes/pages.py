"""Server-rendered pages (Jinja, autoescaped; no JS framework build step)."""

from __future__ import annotations

import json
from pathlib import Path

from litestar import Request, get
from litestar.response import Template

from service.i18n import for_request
from service.plots import line_chart
from service.routes.runs import _run_view
from service.store import Store
from service.routes.auth import PAGE_VIEWER

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


def page(request: Request, name: str, context: dict) -> Template:
    """A viewer page in the request's language (see `service.i18n`)."""
    strings, cookies = for_request(request)
    return Template(name, context={**context, **strings}, cookies=list(cookies))


@get("/runs", include_in_schema=False, **PAGE_VIEWER)
async def runs_page(request: Request, store: Store) -> Template:
    return page(request, "runs.html", {"runs": await store.list_jobs(limit=100, kind="train")})


@get("/runs/{run_id:str}", include_in_schema=False, **PAGE_VIEWER)
async def run_page(request: Request, store: Store, run_id: str) -> Template:
    from service.public_paths import PathRedactor

    run = PathRedactor()(await _run_view(request, store, run_id))  # no server path on the page either
    curve = run["loss_curve"]
    chart = line_chart({
        "train loss": [(p["step"], p["loss"]) for p in curve if p.get("loss") is not None],
        "eval loss": [(p["step"], p["eval_loss"]) for p in curve if p.get("eval_loss") is not None],
    })
    return page(request, "run.html", {
        "run": run, "chart": chart, "config": json.dumps(run["params"].get("config", {}), indent=2),
        "result": json.dumps(run.get("result") or {}, indent=2),
    })
