"""The Litestar application, assembled in one factory.

`create_app(settings, redis_url, worker=...)` wires the store, the job queue, the
optional in-process worker, error handling and every route module under
`service/routes/`. OpenAPI is served at `/schema` (`/schema/openapi.json`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urlencode
from collections.abc import AsyncIterator

from litestar import Litestar, Request, Response
from redis import exceptions as redis_errors
from litestar.response import Redirect
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.contrib.jinja import JinjaTemplateEngine
from litestar.openapi import OpenAPIConfig
from litestar.template.config import TemplateConfig
from litestar.openapi.spec import Components, SecurityScheme

from service import jobs
from service.board_cache import board_cache
from service.config import Settings
from service.errors import ArenaError
from service.routes.auth import SMALL_BODY_BYTES, LoginRequired
from service.routes import ROUTE_HANDLERS
from service.routes.pages import TEMPLATES
from service.runtime import admin_token
from service.public_paths import PathRedactor, register_data_dir
from service.store import Store

log = logging.getLogger("arena.app")

PROBLEM = "application/problem+json"
#: How long shutdown waits for each background task (the worker, the refreshers) to stop.
SHUTDOWN_WAIT_S = 10.0


def _problem(status: int, title: str, detail: str, request: Request | None = None, **extra: object) -> Response:
    """Problem details (RFC 9457); on `/v1/` also the `error` object OpenAI clients read."""
    if request is not None and request.url.path.startswith("/v1/") and "error" not in extra:
        from service.openai_compat import openai_error

        extra["error"] = openai_error(status, detail)
    return Response({"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}, status_code=status, media_type=PROBLEM)


def _template_defaults(engine: JinjaTemplateEngine) -> None:
    """English when a page's context brings no catalog (see `service.i18n.page_context`)."""
    engine.engine.globals.update({"_": lambda text: text, "ngettext": lambda one, many, n: one if n == 1 else many,
                                  "lang": "en"})


async def hide_server_paths(response: Response) -> Response:
    """Every JSON answer names artifacts by id: see `service.public_paths`."""
    if isinstance(response.content, (dict, list)):
        response.content = PathRedactor()(response.content)
    return response


def _redact(request: Request, obj):
    return PathRedactor(request.app.state.settings.data_dir)(obj)


def _arena_error(request: Request, exc: ArenaError) -> Response:
    if isinstance(exc, LoginRequired):  # a page: send the browser to sign in, then back
        return Redirect(f"/login?{urlencode({'next': exc.extra.get('next', '/')})}", status_code=303)
    return _problem(exc.status, type(exc).__name__, _redact(request, exc.message), request, **_redact(request, exc.extra))


def _validation_error(request: Request, exc: ValidationException) -> Response:
    # A body or parameter that does not fit the schema: 422, as InvalidInput; /v1 answers 400 as OpenAI does.
    # The detail says which field, as clients show only it ("Validation failed" alone said nothing).
    status = 400 if request.url.path.startswith("/v1/") else 422
    found = [e for e in exc.extra if isinstance(e, dict) and e.get("message")] if isinstance(exc.extra, list) else []
    said = "; ".join((f"{e['key']}: " if e.get("key") not in (None, "data") else "") + str(e["message"]) for e in found[:3])
    detail = f"{exc.detail}: {said}" if said else str(exc.detail)
    return _problem(status, "InvalidInput", _redact(request, detail), request, errors=exc.extra or [])


def _http_error(request: Request, exc: HTTPException) -> Response:
    return _problem(exc.status_code, type(exc).__name__, str(exc.detail), request)


def _store_unreachable(request: Request, exc: Exception) -> Response:
    # Redis restarting or gone: nothing was acknowledged, so the client may retry.
    log.warning("store unreachable on %s %s: %s", request.method, request.url.path, exc)
    return _problem(503, "Unavailable", "the store (Redis) is unreachable or restarting; nothing was saved, try again", request)


def _too_deep(request: Request, exc: RecursionError) -> Response:
    # A body nested past the JSON decoder's depth (1,000 `[`s cost a client nothing).
    log.warning("too deep to read on %s %s: %s", request.method, request.url.path, exc)
    return _problem(400, "InvalidInput", "the request body is nested too deeply to read", request)


def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _problem(500, "InternalError", "the server hit an unexpected error; it is logged", request)


def create_app(settings: Settings, redis_url: str, *, worker: bool = False) -> Litestar:
    """The HTTP app on `redis_url`. With `worker`, a job worker runs in the same process."""
    token, generated = admin_token(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        store = Store.from_url(redis_url, settings.key_prefix)
        queue = jobs.make_queue(redis_url, settings)
        await queue.connect()
        app.state.store = store
        app.state.queue = queue
        from service.serving import Serving

        app.state.serving = Serving(settings, store)
        sync = None
        if settings.generation_url:  # a vLLM server that restarted gets the active adapters back
            from service.adapter_sync import keep_in_sync

            sync = asyncio.create_task(keep_in_sync(store, settings))
        # The boards are refitted here, in the background, never in a vote's request.
        boards = board_cache(store, bootstrap=settings.board_bootstrap)
        refresher = asyncio.create_task(boards.run(store, settings.board_refresh_s)) if settings.board_refresh_s > 0 else None
        # The judges' calibration reads the log: a job computes it, never a request.
        calibration = None
        if settings.calibration_refresh_s > 0:
            from service import judge_calibration

            calibration = asyncio.create_task(judge_calibration.run(store, queue, settings))
        task = None
        if worker:
            w = jobs.build_worker(redis_url, settings)
            w.SIGNALS = []  # the server owns signal handling
            app.state.worker_id = w.id
            task = asyncio.create_task(jobs.run_worker(w))
        try:
            yield
        finally:
            # Each loop stops at its next await; one that does not (see
            # `errors.stop_if_cancelled`) is left behind rather than holding the shutdown.
            for running in (task, sync, refresher, calibration):
                if running:
                    running.cancel()
                    done, _ = await asyncio.wait([running], timeout=SHUTDOWN_WAIT_S)
                    if done and not running.cancelled():
                        running.exception()  # retrieved, as `await` did: the loop logged its own errors
                    elif not done:
                        log.warning("a background task did not stop within %s s of shutdown: %s", SHUTDOWN_WAIT_S, running)
            await queue.disconnect()
            with contextlib.suppress(Exception):  # the store still closes
                app.state.serving.close()
            await store.close()

    async def provide_store(request: Request) -> Store:
        return request.app.state.store

    register_data_dir(settings.data_dir)

    app = Litestar(
        route_handlers=ROUTE_HANDLERS,
        lifespan=[lifespan],
        dependencies={"store": Provide(provide_store)},
        after_request=hide_server_paths,
        exception_handlers={
            ArenaError: _arena_error,
            ValidationException: _validation_error,
            NotFoundException: _http_error,
            HTTPException: _http_error,
            redis_errors.ConnectionError: _store_unreachable,
            redis_errors.TimeoutError: _store_unreachable,
            RecursionError: _too_deep,
            500: _internal_error,
        },
        openapi_config=OpenAPIConfig(
            title="Adapter Arena",
            version="0.1.0",
            path="/schema",
            components=Components(security_schemes={
                "admin": SecurityScheme(type="http", scheme="bearer", description="ARENA_ADMIN_TOKEN: every write"),
                "viewer": SecurityScheme(type="http", scheme="bearer",
                                         description="the admin token or one of ARENA_VIEWER_TOKENS: reads of datasets, "
                                                     "runs, candidates, evals, reports and jobs"),
                "api_key": SecurityScheme(type="http", scheme="bearer",
                                          description="the admin token or one of ARENA_API_KEYS: generation endpoints"),
            }),
        ),
        cors_config=CORSConfig(allow_origins=[]),
        template_config=TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine, engine_callback=_template_defaults),
        request_max_body_size=SMALL_BODY_BYTES,  # the bulk routes lift it: see routes.auth.ADMIN_BULK
        state=State({"settings": settings, "admin_token": token, "token_generated": generated, "redis_url": redis_url, "worker_id": None}),
        debug=False,
    )
    return app
