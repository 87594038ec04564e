"""`GET /health`: is Redis reachable, is a worker alive."""

from __future__ import annotations

from litestar import Request, get

from service.store import Store


@get("/health", summary="Service health: Redis and workers")
async def health(request: Request, store: Store) -> dict:
    try:
        redis_ok = await store.ping()
    except Exception as exc:  # noqa: BLE001 - health must answer, not raise
        return {"status": "degraded", "redis": {"ok": False, "error": str(exc)}, "workers": []}
    workers = await store.live_workers()
    settings = request.app.state.settings
    durable = await store.votes_durable()
    return {
        "status": "ok",
        # votes_durable: a vote's 200 is sent only once it is fsynced to the append-only file;
        # false when the server keeps none (a REDIS_URL server with appendonly no).
        "redis": {"ok": redis_ok, "embedded": settings.embedded, "votes_durable": durable},
        "workers": workers,
        "in_process_worker": request.app.state.worker_id,
    }
