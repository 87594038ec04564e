"""Settings, read once from the environment (prefix `ARENA_`, plus `REDIS_URL`).

`arena config` prints the effective values. Nothing else in the code reads
`os.environ` for these names.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec


class Settings(msgspec.Struct, kw_only=True):
    data_dir: Path
    redis_url: str | None
    key_prefix: str = "arena"
    admin_token: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_bytes: int = 64 * 1024 * 1024
    job_heartbeat_s: int = 30
    job_sweep_s: int = 10
    job_retries: int = 2
    generation_url: str | None = None
    generation_api_key: str | None = None
    max_new_tokens_cap: int = 512
    adapter_cache_size: int = 8
    reviewer_mode: str = "open"  # "open" (cookie-bound anonymous id) or "invite"
    votes_per_minute: int = 60

    @property
    def embedded(self) -> bool:
        """True when no REDIS_URL is given and the service runs its own Redis-compatible server."""
        return not self.redis_url

    def describe(self) -> dict[str, str]:
        """Effective settings as env-var name → value, with secrets masked."""
        out: dict[str, str] = {}
        for field in msgspec.structs.fields(self):
            value = getattr(self, field.name)
            name = "REDIS_URL" if field.name == "redis_url" else f"ARENA_{field.name.upper()}"
            if field.name in ("admin_token", "generation_api_key") and value:
                value = "***"
            out[name] = "" if value is None else str(value)
        return out


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def load_settings() -> Settings:
    """Settings from the environment. Raises `ValueError` naming the variable on a bad value."""
    kwargs: dict[str, object] = {
        "data_dir": Path(_env("ARENA_DATA_DIR", ".arena")).resolve(),
        "redis_url": _env("REDIS_URL"),
    }
    defaults = Settings(data_dir=Path("."), redis_url=None)
    for field in msgspec.structs.fields(Settings):
        if field.name in kwargs:
            continue
        raw = _env(f"ARENA_{field.name.upper()}")
        if raw is None:
            continue
        current = getattr(defaults, field.name)
        if isinstance(current, bool):
            kwargs[field.name] = raw.lower() in ("1", "true", "yes", "on")
        elif isinstance(current, int):
            try:
                kwargs[field.name] = int(raw)
            except ValueError:
                raise ValueError(f"ARENA_{field.name.upper()}={raw!r}: expected an integer") from None
        else:
            kwargs[field.name] = raw
    if kwargs.get("reviewer_mode", "open") not in ("open", "invite"):
        raise ValueError(f"ARENA_REVIEWER_MODE={kwargs['reviewer_mode']!r}: expected 'open' or 'invite'")
    return Settings(**kwargs)  # type: ignore[arg-type]
