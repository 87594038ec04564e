"""Where the pieces meet: which Redis to use, and the admin token."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from service.config import Settings
from service.redis_server import EmbeddedRedis


@contextlib.contextmanager
def redis_url(settings: Settings) -> Iterator[str]:
    """The Redis URL to use: `REDIS_URL`, or the data dir's embedded server, started if
    needed and leased for the duration: it stops when its last user is done (see
    `service.redis_server`), never under another process still using it."""
    if settings.redis_url:
        yield settings.redis_url
        return
    server = EmbeddedRedis(settings.data_dir)
    url = server.acquire()
    try:
        yield url
    finally:
        server.release()


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
