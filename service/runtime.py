"""Where the pieces meet: which Redis to use, and the admin token."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from service.config import Settings, redact_url
from service.redis_server import EmbeddedRedis


log = logging.getLogger("arena.redis")

#: Seconds between a long-running process's checks that the embedded server's process lives.
WATCH_S = 1.0


@contextlib.contextmanager
def redis_url(settings: Settings, *, keep_up: bool = False) -> Iterator[str]:
    """The Redis URL to use: `REDIS_URL`, or the data dir's embedded server, started if
    needed and leased for the duration: it stops when its last user is done (see
    `service.redis_server`), never under another process still using it. With `keep_up`
    (`arena serve`, `arena worker`) a server whose process dies is started again, on the
    same URL, within about `WATCH_S` seconds."""
    if settings.redis_url:
        yield settings.redis_url
        return
    server = EmbeddedRedis(settings.data_dir)
    url = server.acquire()
    try:
        with _sigterm_exits(), (_kept_up(server) if keep_up else contextlib.nullcontext()):
            yield url
    finally:
        server.release()


@contextlib.contextmanager
def _kept_up(server: EmbeddedRedis) -> Iterator[None]:
    """A watchdog thread that restarts the server when its process is gone (`revive`): until
    then requests get 503s that say the store is unreachable, and the AOF (fsynced before
    every reply) brings back every acknowledged write."""
    done = threading.Event()

    def watch() -> None:
        while not done.wait(WATCH_S):
            try:
                if server.revive():
                    log.warning("the embedded Redis server had stopped; started it again on %s", redact_url(server.url))
            except Exception as exc:  # retried next time; requests get 503 meanwhile
                log.warning("the embedded Redis server is down and did not restart: %s", exc)

    watcher = threading.Thread(target=watch, name="embedded-redis-watchdog", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    """While a lease is held, SIGTERM (docker stop, systemd, compose) exits through Python, so
    the lease is dropped. Its default action ends the process on the spot, and uvicorn
    re-raises a SIGTERM it caught once its graceful shutdown is done: without this,
    `arena serve` stopped that way left its lease and, as the last user, an orphaned server."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield  # someone else handles SIGTERM here (or cannot, off the main thread)
        return
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def admin_token(settings: Settings) -> tuple[str, bool]:
    """The admin bearer token and whether it was generated just now.

    `ARENA_ADMIN_TOKEN` when set; otherwise a token generated once and kept (mode 0600) in
    `<data dir>/admin_token`, printed by `arena serve` the first time.
    """
    if settings.admin_token:
        return settings.admin_token, False
    path: Path = settings.data_dir / "admin_token"
    if path.exists():
        return path.read_text().strip(), False
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, True
