"""`POST /api/compare`: one prompt, several candidates' answers side by side.

Like the OpenAI-compatible routes, it needs an API key (the admin token or one of
`ARENA_API_KEYS`): it returns named candidates' answers.
"""

from __future__ import annotations

import msgspec
from litestar import Request, post
from litestar.params import JSONBody

from service.compare import CompareRequest, compare
from service.routes.auth import API_KEY


@post("/api/compare", summary="Every named candidate's answer to one prompt (cached unless no_cache)", status_code=200, **API_KEY)
async def compare_candidates(request: Request, data: JSONBody[CompareRequest]) -> dict:
    return msgspec.to_builtins(await compare(request.app.state.serving, data))
