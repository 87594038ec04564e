"""Errors that are part of the interface: each says what went wrong, where, and what was expected.

Routes turn them into problem-details responses with the status below; the CLI prints
`error: <message>` and exits non-zero.
"""

from __future__ import annotations


class ArenaError(Exception):
    """Base class. `status` is the HTTP status; `exit_code` the CLI's."""

    status = 400
    exit_code = 1

    def __init__(self, message: str, **extra: object) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class InvalidInput(ArenaError):
    """Well-formed request, content that cannot be used (422 Unprocessable Content; the
    OpenAI-compatible `/v1` answers 400 as OpenAI does)."""

    status = 422


class NotFound(ArenaError):
    status = 404


class Conflict(ArenaError):
    status = 409


class TooLarge(ArenaError):
    status = 413


class UnsupportedMediaType(ArenaError):
    status = 415


class Unauthorized(ArenaError):
    status = 401


class RateLimited(ArenaError):
    status = 429


class Unavailable(ArenaError):
    status = 503
    exit_code = 2


class Forbidden(ArenaError):
    status = 403


def stop_if_cancelled() -> None:
    """Call in a background loop's `except` clauses and before it sleeps: re-raise the
    task's cancellation when another error took its place, or a call swallowed it.

    Library code can turn a cancellation into an error of its own (Python 3.11's
    `asyncio.timeout` turns one that meets its deadline into TimeoutError, which redis-py
    raises as its TimeoutError), and a loop that logs errors and tries again would then run
    on after its owner cancelled it: the server's shutdown waited for it forever, its
    refresher logging that the store was gone."""
    import asyncio

    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
