"""The Redis a bench runs against: the given URL (or `REDIS_URL`'s), else the embedded
server in a temporary directory, stopped when the bench is done."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def bench_redis(name: str, url: str | None = None, *, directory: Path | None = None, appendonly: bool = True,
                from_env: bool = True) -> Iterator[str]:
    """The URL of the Redis to use: `url`, else `REDIS_URL` (with `from_env`), else an
    embedded server in `directory` (default: a new temporary one named after the bench),
    with its append-only file turned off unless `appendonly`."""
    url = url or (os.environ.get("REDIS_URL") if from_env else None)
    if url:
        yield url
        return
    from service.redis_server import EmbeddedRedis

    embedded = EmbeddedRedis((directory or Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))) / "redis")
    url = embedded.start()
    try:
        if not appendonly:
            import redis

            client = redis.Redis.from_url(url)
            client.config_set("appendonly", "no")
            client.close()
        yield url
    finally:
        embedded.stop()
