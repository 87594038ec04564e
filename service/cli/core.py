"""`arena config`, `arena serve`, `arena worker`, `arena jobs`."""

from __future__ import annotations

import asyncio

import click

from service.config import redact_url
from service.cli.common import ListingGroup, call_with_queue, cancel_job, echo_json, open_store, settings


@click.command("config")
@click.option("--json", "json_out", is_flag=True, help="Print as JSON.")
def config_cmd(json_out: bool) -> None:
    """Print the effective settings (ARENA_* and REDIS_URL)."""
    values = settings().describe()
    if json_out:
        echo_json(values)
        return
    width = max(map(len, values))
    for name, value in values.items():
        click.echo(f"{name.ljust(width)}  {value}")


@click.command("serve")
@click.option("--host", default=None, help="Bind address (ARENA_HOST, default 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (ARENA_PORT, default 8000).")
@click.option("--worker/--no-worker", default=None, help="Run a job worker in-process (default: on in embedded mode).")
def serve_cmd(host: str | None, port: int | None, worker: bool | None) -> None:
    """Run the HTTP service (and, by default in embedded mode, a worker)."""
    import uvicorn

    from service.app import create_app
    from service.runtime import redis_url

    s = settings()
    in_process = s.embedded if worker is None else worker
    with redis_url(s, keep_up=True) as url:
        app = create_app(s, url, worker=in_process)
        if app.state.token_generated:
            click.echo(f"admin token (generated, kept in {s.data_dir / 'admin_token'}): {app.state.admin_token}")
        where = "embedded Redis" if s.embedded else "REDIS_URL"
        click.echo(f"serving on http://{host or s.host}:{port or s.port}  ({where} {redact_url(url)}; worker {'on' if in_process else 'off'})")
        if not _aof_enabled(url):
            click.echo("warning: this Redis keeps no append-only file (appendonly no): votes are acknowledged "
                       "without being on disk, and a crash loses the latest ones", err=True)
        if s.public_reads:
            click.echo("reads: public (ARENA_PUBLIC_READS=1): datasets, runs, evals and reports need no token")
        else:
            viewers = len(s.viewer_token_list)
            click.echo(f"reads: datasets, runs, evals and reports need the admin token{f' or one of {viewers} viewer tokens' if viewers else ''} "
                       "(sign in at /login; ARENA_PUBLIC_READS=1 opens them on a private install)")
        # The client's address is the socket peer unless ARENA_TRUSTED_PROXY_HEADER says
        # otherwise: uvicorn must not rewrite it from X-Forwarded-For on its own.
        uvicorn.run(app, host=host or s.host, port=port or s.port, log_level="warning", proxy_headers=False)


@click.command("worker")
@click.option("--concurrency", default=1, show_default=True, help="Jobs run at once by this worker.")
def worker_cmd(concurrency: int) -> None:
    """Run a job worker on the queue."""
    from service.jobs import build_worker, run_worker
    from service.runtime import redis_url

    s = settings()
    with redis_url(s, keep_up=True) as url:
        w = build_worker(url, s, concurrency=concurrency)
        click.echo(f"worker {w.id} on {redact_url(url)}")
        asyncio.run(run_worker(w))


@click.group("jobs", cls=ListingGroup)
def jobs_cmd() -> None:
    """List, show and cancel jobs."""


@jobs_cmd.command("list")
@click.option("--kind", default=None)
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "json_out", is_flag=True)
def jobs_list(kind: str | None, limit: int, json_out: bool) -> None:
    """Recent jobs, newest first."""
    with open_store() as store:
        rows = store.list_jobs(limit=limit, kind=kind)
    if json_out:
        echo_json(rows)
        return
    for j in rows:
        click.echo(f"{j.id}  {j.kind:<8} {j.status:<10} {j.progress:>4.0%}  {j.error or j.message}")


@jobs_cmd.command("show")
@click.argument("job_id")
def jobs_show(job_id: str) -> None:
    """One job's record as JSON."""
    from service.jobs import reconcile_jobs

    s = settings()
    with open_store(s) as store:
        store.get_job(job_id)
        call_with_queue(store, s, reconcile_jobs, [job_id])
        echo_json(store.get_job(job_id))


@jobs_cmd.command("cancel")
@click.argument("job_id")
def jobs_cancel(job_id: str) -> None:
    """Cancel a queued or running job."""
    s = settings()
    with open_store(s) as store:
        job = cancel_job(store, s, job_id)
    click.echo(f"{job.id}: {job.status}{' (stopping at the next step)' if job.status == 'running' else ''}")


@click.group("server")
def server_cmd() -> None:
    """The data dir's embedded Redis-compatible server (used when REDIS_URL is unset)."""


@server_cmd.command("status")
@click.option("--json", "json_out", is_flag=True)
def server_status(json_out: bool) -> None:
    """Whether the embedded server runs, on which port, and which processes hold it."""
    from service.redis_server import EmbeddedRedis

    s = settings()
    if s.redis_url:
        raise click.ClickException("REDIS_URL is set: this install uses that server, not an embedded one")
    server = EmbeddedRedis(s.data_dir)
    state = {"running": server.running(), "pid": server.pid(), "leases": server.live_leases(),
             "dir": str(server.dir)}
    if json_out:
        echo_json(state)
        return
    if not state["running"]:
        click.echo(f"embedded server: not running ({server.dir})")
        return
    click.echo(f"embedded server: running, pid {state['pid']}, {len(state['leases'])} process(es) using it")


@server_cmd.command("stop")
def server_stop() -> None:
    """Stop the embedded server (flushing its append-only file), whoever still uses it."""
    from service.redis_server import EmbeddedRedis

    s = settings()
    if s.redis_url:
        raise click.ClickException("REDIS_URL is set: this install uses that server, not an embedded one")
    server = EmbeddedRedis(s.data_dir)
    if not server.running():
        click.echo("embedded server: not running")
        return
    users = server.live_leases()
    server.stop()
    click.echo(f"embedded server stopped{f' ({len(users)} process(es) were still using it)' if users else ''}")


def _aof_enabled(url: str) -> bool:
    import redis

    try:
        return bool(int(redis.Redis.from_url(url, socket_timeout=5).info("persistence").get("aof_enabled", 0)))
    except redis.RedisError:
        return True  # unreachable: the app says so at the first request; do not warn wrongly
