"""Fuzz every API operation from the OpenAPI schema: no input may produce a 5xx.

Generated requests go, with the admin token, to a real server over loopback; stored
data must still be readable afterwards.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings

# Streaming endpoints never end on their own; they are tested elsewhere.
SKIP = {("GET", "/api/jobs/{job_id}/events")}


def test_no_input_produces_a_server_error(live_server):
    admin = live_server.client(admin=True)
    admin.post("/api/datasets", files={"file": ("d.jsonl", b'{"prompt": "q", "completion": "a"}\n')}, data={"name": "keep"})
    schema = schemathesis.openapi.from_url(f"{live_server.url}/schema/openapi.json")
    checked = 0
    for result in schema.get_all_operations():
        op = result.ok()
        if (op.method.upper(), op.path) in SKIP:
            continue

        @given(case=op.as_strategy())
        @hsettings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            response = case.call(base_url=live_server.url, headers={"Authorization": "Bearer test-admin-token"}, timeout=30)
            assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"

        check()
        checked += 1
    assert checked >= 5
    page = admin.get("/api/datasets/keep/records").json()
    assert page["total"] == 1  # fuzzing lost nothing


@pytest.mark.parametrize("who", ["nobody", "viewer"])
def test_protected_operations_refuse_without_the_right_token(settings, who):
    """The fuzz without a token (every protected operation 401, never 5xx) and with a viewer
    token (every write 403, generation 401): what the schema declares is what the server enforces."""
    import msgspec

    from tests.redis_fixtures import LiveServer

    server = LiveServer(msgspec.structs.replace(settings, viewer_tokens="viewer-fuzz-token")).start()
    try:
        schema = schemathesis.openapi.from_url(f"{server.url}/schema/openapi.json")
        headers = {"Authorization": "Bearer viewer-fuzz-token"} if who == "viewer" else {}
        checked = 0
        for result in schema.get_all_operations():
            op = result.ok()
            security = {name for req in op.definition.raw.get("security") or [] for name in req}
            if (op.method.upper(), op.path) in SKIP or not security:
                continue
            if who == "nobody":
                expected = {401}
            elif "viewer" in security:
                continue  # a viewer may read: the first test fuzzes what reads return
            elif "admin" in security:
                expected = {403}  # known, but not allowed to write
            else:
                expected = {401}  # generation needs an API key; a read token is not one

            @given(case=op.as_strategy())
            @hsettings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def check(case):
                response = case.call(base_url=server.url, headers=headers, timeout=30)
                assert response.status_code in expected, \
                    f"{who}: {case.method} {case.formatted_path}: {response.status_code} {response.text[:200]}"

            check()
            checked += 1
        assert checked >= 10
    finally:
        server.stop()
