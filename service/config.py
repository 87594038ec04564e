"""Settings, read once from the environment (prefix `ARENA_`, plus `REDIS_URL`).

`arena config` prints the effective values. Nothing else in the code reads
`os.environ` for these names.
"""

from __future__ import annotations

import math
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
    # A vLLM generation server follows the arena (see README "Scale-out"): the data dir as
    # that server sees it (a volume in its container), and how often to reload what it forgot.
    remote_adapter_root: str | None = None
    # Reload what vLLM forgot and retry pending unloads this often; 0: only at startup (a
    # missing adapter still loads on first use).
    remote_adapter_sync_s: int = 30
    max_new_tokens_cap: int = 512
    max_prompt_chars: int = 100_000  # a prompt longer than this is refused before it is tokenized
    max_correction_chars: int = 8000  # a reviewer's corrected answer longer than this is refused
    adapter_cache_size: int = 8
    reviewer_mode: str = "open"  # "open" (cookie-bound anonymous id) or "invite"
    votes_per_minute: int = 60
    # Arena integrity (see README "Threat model").
    api_keys: str | None = None  # comma-separated keys for /v1/* and /api/compare, besides the admin token
    battle_temperature: float = 0.7
    battle_top_p: float = 1.0
    min_vote_s: float = 2.0  # votes sooner than this after the battle was dealt are refused
    votes_per_minute_per_address: int = 60
    # Battles dealt to one client address a minute (each costs two generations); 0: no limit.
    battles_per_minute_per_address: int = 60
    trusted_proxy_header: str | None = None  # e.g. X-Forwarded-For; read only from trusted_proxies
    trusted_proxies: str | None = None  # comma-separated peer addresses allowed to set that header
    # Who may read (see README "Roles"): viewer tokens besides the admin token, or everyone.
    viewer_tokens: str | None = None  # comma-separated read-only tokens
    public_reads: bool = False  # 1: datasets, runs, evals, reports and jobs readable without a token
    # LLM judges at a URL: the key is the server's, never named by a request (see README "Judges").
    judge_api_key: str | None = None  # sent to URL judges that no profile names
    judge_profiles: str | None = None  # JSON {"name": {"url": ..., "model": ..., "api_key": ...}}
    judge_allowed_hosts: str | None = None  # comma-separated host[:port]; unset: any host
    # Leaderboards (see README "Leaderboards at scale"): each API process refits a board in
    # the background at most this often, and only when votes were counted since its last
    # fit; requests are served the last fit meanwhile. 0: no refresher, a request refits a
    # board whose votes changed (the CLI's behaviour).
    board_refresh_s: float = 3.0
    board_bootstrap: int = 500  # bootstrap rounds of a board's 95% CI
    calibration_refresh_s: float = 30.0  # how often the API checks whether the judges' calibration is due (0: never)
    calibration_min_votes: int = 50  # votes counted since the last calibration that make it due
    calibration_min_interval_s: float = 600.0  # at least this long from one calibration job's end to the next one's queueing
    locale: str = "en"  # the pages' language when the browser asks for none we have: en or zh_CN

    @property
    def judge_host_list(self) -> frozenset[str]:
        """Hosts (`host` or `host:port`, lower case) URL judges may be on; empty: any."""
        return frozenset(h.strip().lower() for h in (self.judge_allowed_hosts or "").split(",") if h.strip())

    @property
    def judge_profile_map(self) -> dict[str, dict[str, str]]:
        """`ARENA_JUDGE_PROFILES` decoded (checked by `load_settings`)."""
        return parse_judge_profiles(self.judge_profiles) if self.judge_profiles else {}

    @property
    def api_key_list(self) -> list[str]:
        """The keys of `ARENA_API_KEYS` (the admin token is accepted besides them)."""
        return [k.strip() for k in (self.api_keys or "").split(",") if k.strip()]

    @property
    def viewer_token_list(self) -> list[str]:
        """The read-only tokens of `ARENA_VIEWER_TOKENS` (the admin token reads too)."""
        return [k.strip() for k in (self.viewer_tokens or "").split(",") if k.strip()]

    @property
    def trusted_proxy_list(self) -> frozenset[str]:
        """Peer addresses whose `trusted_proxy_header` is believed."""
        return frozenset(a.strip() for a in (self.trusted_proxies or "").split(",") if a.strip())

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
            if field.name in ("admin_token", "generation_api_key", "api_keys", "viewer_tokens", "judge_api_key",
                              "judge_profiles") and value:
                value = "***"
            elif field.name in ("redis_url", "generation_url") and value:
                value = redact_url(value)
            out[name] = "" if value is None else str(value)
        return out


def parse_judge_profiles(raw: str) -> dict[str, dict[str, str]]:
    """`ARENA_JUDGE_PROFILES`: a JSON object of profile name → {"url", "model"[, "api_key"]}.
    Raises `ValueError` naming what is wrong (never echoing a key)."""
    import json

    try:
        profiles = json.loads(raw)
    except ValueError:
        raise ValueError("ARENA_JUDGE_PROFILES: not valid JSON; expected {\"name\": {\"url\": ..., \"model\": ...}}") from None
    if not isinstance(profiles, dict):
        raise ValueError("ARENA_JUDGE_PROFILES: expected a JSON object of profile names")
    for name, profile in profiles.items():
        if not isinstance(profile, dict) or not all(isinstance(profile.get(k), str) for k in ("url", "model")) or \
                not str(profile["url"]).startswith(("http://", "https://")) or set(profile) - {"url", "model", "api_key"}:
            raise ValueError(f"ARENA_JUDGE_PROFILES: profile {name!r}: expected url (http/https), model and "
                             "optionally api_key, all strings")
    return profiles


def redact_url(url: str) -> str:
    """`url` with its password (and a username-only secret) shown as `***`, for printing."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    if parts.password is None and not (parts.username and "@" in parts.netloc):
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username if parts.password is not None and parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}" if parts.password is not None else f"***@{host}"))


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
        elif isinstance(current, float):
            try:
                kwargs[field.name] = float(raw)
            except ValueError:
                raise ValueError(f"ARENA_{field.name.upper()}={raw!r}: expected a number") from None
            if not math.isfinite(kwargs[field.name]) or kwargs[field.name] < 0:
                raise ValueError(f"ARENA_{field.name.upper()}={raw!r}: expected a number >= 0")
        else:
            kwargs[field.name] = raw
    if kwargs.get("reviewer_mode", "open") not in ("open", "invite"):
        raise ValueError(f"ARENA_REVIEWER_MODE={kwargs['reviewer_mode']!r}: expected 'open' or 'invite'")
    if kwargs.get("trusted_proxy_header") and not kwargs.get("trusted_proxies"):
        raise ValueError("ARENA_TRUSTED_PROXY_HEADER is set but ARENA_TRUSTED_PROXIES is empty: "
                         "name the proxy addresses whose header is believed")
    if kwargs.get("judge_profiles"):
        parse_judge_profiles(str(kwargs["judge_profiles"]))
    if not 0 < float(kwargs.get("battle_top_p", 1.0)) <= 1:  # type: ignore[arg-type]
        raise ValueError(f"ARENA_BATTLE_TOP_P={kwargs['battle_top_p']!r}: expected a number in (0, 1]")
    return Settings(**kwargs)  # type: ignore[arg-type]
