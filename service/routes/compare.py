"""`POST /api/compare`: one prompt, several candidates' answers side by side.

Like the OpenAI-compatible routes, it needs no token: it stores nothing but the answer cache.
"""

from __future__ import annotations

import msgspec
from litestar import Request, post
from litestar.params import JSONBody

from service.compare import CompareRequest, compare


@post("/api/compare", summary="Every named candidate's answer to one prompt (cached unless no_cache)", status_code=200)
async def compare_candidates(request: Request, data: JSONBody[CompareRequest]) -> dict:
    return msgspec.to_builtins(await compare(request.app.state.serving, data))
