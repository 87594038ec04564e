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


class Unauthorized(ArenaError):
    status = 401


class RateLimited(ArenaError):
    status = 429


class Unavailable(ArenaError):
    status = 503
    exit_code = 2


class Forbidden(ArenaError):
    status = 403
