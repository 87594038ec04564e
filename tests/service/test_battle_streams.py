"""A battle's two answers stream to the reviewer it was dealt to, over real HTTP: both sides
in order to `done`, resumable, refused to everyone else, never naming a model; no vote
until both are complete; a failure ends both streams with an anonymous message."""

from __future__ import annotations

import json
import re
import threading

import httpx
import msgspec
import pytest

from tests.redis_fixtures import LiveServer
from tests.scripted_openai import ScriptedOpenAI

ANSWERS = {
    "lora-left": lambda prompt: "alpha beta gamma delta epsilon zeta eta theta",
    "lora-right": lambda prompt: "uno dos tres cuatro cinco seis siete ocho nueve",
    "lora-broken": lambda prompt: "this answer breaks after its first word",
}


@pytest.fixture
def scripted():
    server = ScriptedOpenAI(ANSWERS).start()
    server.broken.add("lora-broken")
    server.stream_delay_s = 0.08
    yield server
    server.stop()


def start(settings, scripted, models) -> LiveServer:
    server = LiveServer(msgspec.structs.replace(settings, generation_url=scripted.url, min_vote_s=0.0)).start()
    admin = server.client(admin=True)
    assert admin.post("/api/arena/active", json={"models": models}).status_code == 200
    assert admin.post("/api/arena/prompts", json={"prompts": [{"prompt": "Count to nine."}]}).status_code == 201
    return server


def events_of(client: httpx.Client, path: str, headers: dict | None = None) -> tuple[list[tuple[str, int, dict]], str]:
    """The (event, id, data) triples of an SSE response (keep-alive comments skipped), and its raw text."""
    with client.stream("GET", path, headers=headers or {}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = "".join(response.iter_text())
    events = []
    for block in raw.replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if line and not line.startswith(":"))
        if fields:
            events.append((fields["event"], int(fields["id"]), json.loads(fields["data"])))
    return events, raw


def deal_on_the_page(client: httpx.Client) -> tuple[str, str]:
    page = client.get("/arena")
    assert page.status_code == 200
    found = re.search(r'data-battle="([^"]+)"', page.text)
    assert found, page.text[page.text.find("<main"):][:1500]
    return found.group(1), page.text


def test_both_answers_stream_to_the_reviewer_and_no_one_else(settings, scripted):
    server = start(settings, scripted, ["lora-left", "lora-right"])
    try:
        reviewer = server.client()
        battle_id, page = deal_on_the_page(reviewer)
        # The page comes before the answers: no answer yet, and no vote until both are complete.
        assert 'data-complete="0"' in page and page.count(' disabled>') == 4 and 'id="wait-note"' in page
        assert not any(name in page for name in ANSWERS)
        early = reviewer.post(f"/api/battles/{battle_id}/vote", json={"choice": "a"})
        assert early.status_code == 409 and "not complete" in early.json()["detail"]
        assert reviewer.get(f"/api/battles/{battle_id}").json()["complete"] is False

        # Nobody else reads them: another reviewer (403), no identity (401), an unknown battle (404).
        stranger = server.client()
        deal_on_the_page(stranger)  # a reviewer of their own, with their own cookie
        path = f"/api/battles/{battle_id}/answers/a"
        assert stranger.get(path).status_code == 403
        assert httpx.get(f"{server.url}{path}").status_code == 401
        assert reviewer.get(f"/api/battles/{'x' * 22}/answers/a").status_code == 404
        assert reviewer.get(f"/api/battles/{battle_id}/answers/c").status_code == 422

        # Both sides at once, as the page reads them.
        streams: dict[str, tuple] = {}

        def read(side: str) -> None:
            with httpx.Client(base_url=server.url, cookies=reviewer.cookies, timeout=30) as client:
                streams[side] = events_of(client, f"/api/battles/{battle_id}/answers/{side}")

        readers = [threading.Thread(target=read, args=(side,)) for side in "ab"]
        for thread in readers:
            thread.start()
        for thread in readers:
            thread.join(timeout=60)
        battle = reviewer.get(f"/api/battles/{battle_id}").json()
        assert battle["complete"] is True
        for side in "ab":
            events, raw = streams[side]
            kinds = [kind for kind, _, _ in events]
            assert kinds[-1] == "done" and set(kinds[:-1]) == {"text"} and len(kinds) > 2  # grew in several pieces
            assert [seq for _, seq, _ in events] == list(range(1, len(events) + 1))
            assert "".join(data["text"] for kind, _, data in events if kind == "text") == battle[f"answer_{side}"]
            assert all(set(data) <= {"text"} for _, _, data in events)  # text only: no ids, counts or names
            assert not any(name in raw for name in ANSWERS)
        assert {battle["answer_a"], battle["answer_b"]} == {ANSWERS["lora-left"](""), ANSWERS["lora-right"]("")}

        # A reconnecting reader resumes after the last event it had.
        events, _ = streams["a"]
        resumed, _ = events_of(reviewer, f"/api/battles/{battle_id}/answers/a", headers={"Last-Event-ID": "2"})
        assert resumed == events[2:]

        # Both complete: the vote counts, once, and reveals the names.
        vote = reviewer.post(f"/api/battles/{battle_id}/vote", json={"choice": "b"})
        assert vote.status_code == 200 and {vote.json()["model_a"], vote.json()["model_b"]} == {"lora-left", "lora-right"}
        # The page now shows the battle whole at once, as before streaming.
        shown = reviewer.get(f"/arena?battle={battle_id}").text
        assert 'data-complete="1"' in shown and "data-stream" not in shown
    finally:
        server.stop()


def test_a_battle_dealt_by_the_api_streams_its_stored_answers(settings, scripted):
    scripted.stream_delay_s = 0.0
    server = start(settings, scripted, ["lora-left", "lora-right"])
    try:
        reviewer = server.client()
        battle = reviewer.post("/api/battles").json()  # waits for both answers
        assert battle["complete"] is True and battle["answer_a"] and battle["answer_b"]
        for side in "ab":
            events, _ = events_of(reviewer, f"/api/battles/{battle['id']}/answers/{side}")
            assert events[-1][0] == "done"
            assert "".join(data["text"] for kind, _, data in events if kind == "text") == battle[f"answer_{side}"]
    finally:
        server.stop()


def test_a_failed_answer_ends_both_streams_without_naming_anyone(settings, scripted):
    server = start(settings, scripted, ["lora-left", "lora-broken"])
    try:
        reviewer = server.client()
        battle_id, _ = deal_on_the_page(reviewer)
        for side in "ab":
            events, raw = events_of(reviewer, f"/api/battles/{battle_id}/answers/{side}")
            assert events[-1][0] == "failed" and "could not answer" in events[-1][2]["message"]
            assert not any(name in raw for name in ANSWERS)
        view = reviewer.get(f"/api/battles/{battle_id}").json()
        assert view["complete"] is False and "could not answer" in view["failed"]
        refused = reviewer.post(f"/api/battles/{battle_id}/vote", json={"choice": "a"})
        assert refused.status_code == 409
        # The page does not show the failed battle again: a reload deals a new one.
        assert deal_on_the_page(reviewer)[0] != battle_id
    finally:
        server.stop()
