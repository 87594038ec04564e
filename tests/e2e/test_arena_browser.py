"""The arena in a real browser: Debian's chromium driven by playwright.

One test votes with a click and a keyboard shortcut, sees the reveal, and watches the
leaderboard (open in another tab) update by itself; one watches both answers grow side by
side with voting closed until both are complete; another serves answers full of
`<script>` / `<img onerror>` and checks that nothing runs. Screenshots go to a tmp dir,
and, with ARENA_UPDATE_SCREENSHOTS=1, the arena and leaderboard shots are copied to docs/ for the README.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import msgspec
import pytest

from tests.redis_fixtures import LiveServer
from tests.scripted_openai import ScriptedOpenAI, answers_in

CHROMIUM = Path("/usr/bin/chromium")
DOCS = Path(__file__).resolve().parents[2] / "docs"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt-get install chromium); CI installs it"),
]

ANSWERS = {
    "lora-r16": lambda p: "To reverse a list in Python:\n\n```python\nitems = [1, 2, 3]\nitems.reverse()\n```\n\nOr make a reversed copy:\n\n- `items[::-1]`\n- `list(reversed(items))`",
    "lora-r8": lambda p: "Use **`items.reverse()`**; it reverses the list in place and returns `None`.",
    "base": lambda p: "A list is a sequence. Lists are sequences of items.",
}
ATTACKS = {
    "evil-a": lambda p: ("<script>window.__pwned = 'script'</script>\n"
                         "<img src=x onerror=\"window.__pwned = 'img'\">\n"
                         "```\n</code></pre><script>window.__pwned = 'fence'</script>\n```"),
    "evil-b": lambda p: ("**<svg onload=\"window.__pwned = 'svg'\">**\n"
                         "- <iframe src=\"javascript:window.__pwned = 'iframe'\"></iframe>\n"
                         "`<body onload=\"window.__pwned = 'body'\">`"),
}


def fair(messages):
    a, b = answers_in(messages)
    return "[[A]]" if len(a) > len(b) else "[[B]]"


@pytest.fixture(scope="module")
def scripted():
    server = ScriptedOpenAI({**ANSWERS, **ATTACKS}, {"judge": fair}).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        yield browser
        browser.close()


def start(settings, scripted, models, worker=False) -> LiveServer:
    # The browser votes as soon as the page shows the answers: no minimum time to vote here
    # (tests/security tests the default).
    server = LiveServer(msgspec.structs.replace(settings, generation_url=scripted.url, min_vote_s=0.0), worker=worker).start()
    admin = server.client(admin=True)
    assert admin.post("/api/arena/active", json={"models": models}).status_code == 200
    prompts = [{"prompt": "How do I reverse a list in Python?", "category": "code"},
               {"prompt": "Reverse the list `xs` without copying it.", "category": "code"}]
    assert admin.post("/api/arena/prompts", json={"prompts": prompts, "source": "demo"}).status_code == 201
    return server


def human_votes(page) -> int:
    return int(page.locator("#human-votes").inner_text())


def test_vote_with_a_click_see_the_reveal_and_the_leaderboard_follow(settings, scripted, browser, tmp_path):
    from playwright.sync_api import expect

    server = start(settings, scripted, ["lora-r16", "lora-r8", "base"], worker=True)
    try:
        # Some history, so the leaderboard has something to show: votes for the better
        # answer (the longer one here), and a judge run on the same battles.
        api = server.client()
        for _ in range(24):
            battle = api.post("/api/battles").json()
            choice = "a" if len(battle["answer_a"]) >= len(battle["answer_b"]) else "b"
            api.post(f"/api/battles/{battle['id']}/vote", json={"choice": choice})
        admin = server.client(admin=True)
        job = admin.post("/api/judge", json={"judge": scripted.url, "judge_model": "judge", "candidates": ["lora-r16", "lora-r8", "base"], "prompts": "human"}).json()
        deadline = time.monotonic() + 60
        while admin.get(f"/api/jobs/{job['id']}").json()["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.1)

        context = browser.new_context(viewport={"width": 1280, "height": 860})
        board = context.new_page()
        board.goto(f"{server.url}/leaderboard")
        before = human_votes(board)
        assert before == 24

        page = context.new_page()
        page.goto(f"{server.url}/arena")
        assert page.locator("#answer-a h2").inner_text().startswith("Model A")
        assert page.locator("#name-a").inner_text() == "" and page.locator("#reveal").is_hidden()
        page.get_by_role("button", name="A is better").click()
        page.locator("#reveal").wait_for(state="visible")
        revealed = {page.locator("#name-a").inner_text(), page.locator("#name-b").inner_text()}
        assert revealed <= set(ANSWERS) and len(revealed) == 2
        assert page.locator("#vote-form").is_hidden()
        page.screenshot(path=str(tmp_path / "arena.png"), full_page=True)

        # The other tab notices the new vote and reloads itself (no restart, no manual reload).
        expect(board.locator("#human-votes")).to_have_text(str(before + 1), timeout=20000)

        # Next battle, voted with the keyboard.
        page.get_by_role("link", name="Next battle").click()
        page.wait_for_load_state()
        assert page.locator("#reveal").is_hidden()
        expect(page.locator("#vote-form button").first).to_be_enabled()  # both answers are in
        page.keyboard.press("2")
        page.locator("#reveal").wait_for(state="visible")
        expect(board.locator("#human-votes")).to_have_text(str(before + 2), timeout=20000)
        assert board.locator("#board-human svg").count() == 2 and board.locator("#board-judge tr").count() > 1
        board.screenshot(path=str(tmp_path / "leaderboard.png"), full_page=True)

        # On a phone the answers stack.
        phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
        small = phone.new_page()
        small.goto(f"{server.url}/arena")
        expect(small.locator("#vote-form button").first).to_be_enabled()  # both answers in: the layout is final
        a, b = small.locator("#answer-a").bounding_box(), small.locator("#answer-b").bounding_box()
        assert b["y"] >= a["y"] + a["height"] - 1 and a["width"] <= 390
        small.screenshot(path=str(tmp_path / "arena-phone.png"), full_page=True)
        phone.close()
        context.close()

        if os.environ.get("ARENA_UPDATE_SCREENSHOTS"):  # refresh the README's pictures on request only
            DOCS.mkdir(exist_ok=True)
            shutil.copy(tmp_path / "arena.png", DOCS / "arena.png")
            shutil.copy(tmp_path / "leaderboard.png", DOCS / "leaderboard.png")
    finally:
        server.stop()


SAMPLE = """() => ({
    a: document.getElementById("text-a").textContent.length,
    b: document.getElementById("text-b").textContent.length,
    writing: !document.getElementById("writing-a").hidden || !document.getElementById("writing-b").hidden,
    closed: Array.from(document.querySelectorAll("#vote-form button")).every(b => b.disabled),
})"""


def test_both_answers_grow_side_by_side_and_voting_waits_for_both(settings, scripted, browser):
    from playwright.sync_api import expect

    scripted.stream_delay_s = 0.2  # a word every 0.2 s: the longer answer takes ~6 s
    server = start(settings, scripted, ["lora-r16", "base"])
    try:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{server.url}/arena")
        page.keyboard.press("1")  # a shortcut while the answers are being written does nothing
        samples = []
        deadline = time.monotonic() + 60
        while True:
            sample = page.evaluate(SAMPLE)
            if not sample["writing"]:
                break
            samples.append(sample)
            assert time.monotonic() < deadline, samples[-1]
            page.wait_for_timeout(150)
        battle_id = page.locator("#battle").get_attribute("data-battle")
        assert page.locator("#reveal").is_hidden()
        assert server.client().get(f"/api/battles/{battle_id}").json()["reveal"] is None  # the early "1" cast no vote
        assert all(s["closed"] for s in samples), "a vote button was enabled before both answers were complete"
        for side in "ab":
            seen = [s[side] for s in samples]
            assert seen == sorted(seen), f"answer {side} shrank: {seen}"
            assert len({n for n in seen if n > 0}) >= 2, f"answer {side} did not grow while being written: {seen}"
        # Complete: the text is the model's answer, verbatim, and voting opens.
        shown = {page.locator("#text-a").text_content(), page.locator("#text-b").text_content()}
        assert shown == {ANSWERS["lora-r16"](""), ANSWERS["base"]("")}
        expect(page.locator("#vote-form button").first).to_be_enabled()
        assert page.locator("#wait-note").is_hidden()
        page.get_by_role("button", name="B is better").click()
        page.locator("#reveal").wait_for(state="visible")
        assert {page.locator("#name-a").inner_text(), page.locator("#name-b").inner_text()} == {"lora-r16", "base"}
        assert errors == []
        page.close()
    finally:
        scripted.stream_delay_s = 0.0
        server.stop()


def test_without_javascript_the_page_reloads_until_both_answers_are_in(settings, scripted, browser):
    scripted.stream_delay_s = 0.1
    server = start(settings, scripted, ["lora-r8", "base"])
    try:
        context = browser.new_context(java_script_enabled=False)
        page = context.new_page()
        page.goto(f"{server.url}/arena")
        assert page.locator("#battle").get_attribute("data-complete") == "0"
        assert page.locator("#vote-form button[disabled]").count() == 4
        page.wait_for_selector('#battle[data-complete="1"]', timeout=30000)  # the page reloaded itself
        assert page.locator("#vote-form button[disabled]").count() == 0
        texts = {page.locator("#text-a").inner_text(), page.locator("#text-b").inner_text()}
        assert texts == {ANSWERS["lora-r8"]("").replace("**", "").replace("`", ""), ANSWERS["base"]("")}
        page.get_by_role("button", name="Tie").click()  # a plain form post
        page.wait_for_load_state()
        assert page.locator("#reveal").is_visible()
        context.close()
    finally:
        scripted.stream_delay_s = 0.0
        server.stop()


def test_a_page_on_another_port_cannot_deal_or_vote_as_the_reviewer(settings, scripted, browser):
    """Another port of the host is the same site: the browser sends the reviewer's SameSite
    cookies with its "simple" POSTs (text/plain, no preflight). Such a page, even knowing
    the battle's id, deals nothing and votes nothing; the reviewer's own click still votes."""
    import http.server
    import threading

    from playwright.sync_api import expect

    server = start(settings, scripted, ["lora-r8", "base"])
    evil = None
    try:
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{server.url}/arena")
        expect(page.get_by_role("button", name="A is better")).to_be_enabled(timeout=30000)
        battle = page.locator("#battle").get_attribute("data-battle")
        html = f"""<!doctype html><script>
          var post = {{method: "POST", credentials: "include", mode: "no-cors", headers: {{"Content-Type": "text/plain"}}}};
          Promise.all([fetch("{server.url}/api/battles", post),
                       fetch("{server.url}/api/battles/{battle}/vote", Object.assign({{body: '{{"choice": "b"}}'}}, post))])
            .then(function () {{ document.title = "sent"; }}, function (e) {{ document.title = "failed: " + e; }});
        </script>""".encode()

        class Evil(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(html)

            def log_message(self, *args) -> None:
                pass

        evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Evil)
        threading.Thread(target=evil.serve_forever, daemon=True).start()
        attacker = context.new_page()
        answered = []
        attacker.on("response", lambda r: answered.append((r.request.method, r.url.removeprefix(server.url), r.status)))
        attacker.goto(f"http://127.0.0.1:{evil.server_address[1]}/")
        attacker.wait_for_function("document.title !== ''", timeout=20000)
        assert attacker.title() == "sent"
        assert sorted(a for a in answered if a[0] == "POST") == [("POST", "/api/battles", 403),
                                                                 ("POST", f"/api/battles/{battle}/vote", 403)]
        page.get_by_role("button", name="A is better").click()  # the battle is still the reviewer's to vote on
        page.locator("#reveal").wait_for(state="visible")
        status = server.client(admin=True).get("/api/leaderboard/status").json()
        assert status["votes"] == 1, status
        context.close()
    finally:
        if evil is not None:
            evil.shutdown()
        server.stop()


def test_an_invite_link_signs_in_only_when_its_reviewer_says_so(settings, scripted, browser):
    """Login CSRF: a page on another site sends the browser to the link of an invite of its
    own, or posts the join form itself. Neither signs the browser in (its votes would
    count as the attacker's reviewer); the invited reviewer's click does."""
    import http.server
    import threading

    from playwright.sync_api import expect

    server = start(msgspec.structs.replace(settings, reviewer_mode="invite"), scripted, ["lora-r8", "base"])
    evil = None
    try:
        admin = server.client(admin=True)
        theirs = admin.post("/api/reviewers/invites", json={"reviewer": "mallory"}).json()["token"]
        mine = admin.post("/api/reviewers/invites", json={"reviewer": "ann"}).json()["token"]
        html = {"/go": f'<!doctype html><script>location.href = "{server.url}/arena?token={theirs}";</script>',
                "/post": f"""<!doctype html><form method="post" action="{server.url}/arena/join" id="f">
                  <input name="token" value="{theirs}"><input name="csrf_token" value="guess"></form>
                  <script>document.getElementById("f").submit();</script>"""}

        class Evil(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(html[self.path].encode())

            def log_message(self, *args) -> None:
                pass

        evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Evil)
        threading.Thread(target=evil.serve_forever, daemon=True).start()
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{evil.server_address[1]}/go")
        page.wait_for_url(f"{server.url}/arena?token=*")
        expect(page.locator("#invite-reviewer")).to_have_text("mallory")
        with page.expect_response(f"{server.url}/arena/join") as joined:
            page.goto(f"http://127.0.0.1:{evil.server_address[1]}/post")
        assert joined.value.status == 403
        assert not [c for c in context.cookies() if c["name"] == "arena_token"]
        assert page.goto(f"{server.url}/arena").status == 401  # still nobody
        # The reviewer's own link, and their click.
        page.goto(f"{server.url}/arena?token={mine}")
        page.get_by_role("button", name="Continue as ann").click()
        page.wait_for_url(f"{server.url}/arena")
        expect(page.get_by_role("button", name="A is better")).to_be_enabled(timeout=30000)
        page.get_by_role("button", name="A is better").click()
        page.locator("#reveal").wait_for(state="visible")
        votes = {r["reviewer"]: r["votes"] for r in admin.get("/api/reviewers").json()}
        assert votes.get("ann") == 1 and not votes.get("mallory"), votes
        # The other invite was never used: its reviewer can still open it.
        fresh = browser.new_context()
        late = fresh.new_page()
        late.goto(f"{server.url}/arena?token={theirs}")
        expect(late.get_by_role("button", name="Continue as mallory")).to_be_visible()
        fresh.close()
        context.close()
    finally:
        if evil is not None:
            evil.shutdown()
        server.stop()


@pytest.mark.parametrize("csp", ["enforced", "bypassed"])
def test_model_output_cannot_run_script(settings, scripted, browser, tmp_path, csp):
    # With the page's Content-Security-Policy bypassed, escaping alone must hold.
    server = start(settings, scripted, ["evil-a", "evil-b"])
    try:
        context = browser.new_context(bypass_csp=csp == "bypassed")
        page = context.new_page()
        dialogs, errors = [], []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{server.url}/arena")
        page.wait_for_load_state("networkidle")
        answers = page.locator(".answers")
        text = answers.inner_text()
        assert "<script>window.__pwned = 'script'</script>" in text and "<img src=x onerror=" in text
        assert "<svg onload=" in text and "<iframe" in text
        assert answers.locator("script, img, svg, iframe, body").count() == 0
        # The reviewer's own prompt is untrusted too.
        page.locator("#own summary").click()
        page.locator("textarea[name=prompt]").fill("<img src=x onerror=\"window.__pwned = 'prompt'\"> hi")
        page.get_by_role("button", name="Start a battle").click()
        page.wait_for_load_state("networkidle")
        assert "<img src=x onerror=" in page.locator("#prompt").inner_text()
        page.get_by_role("button", name="Tie").click()
        page.locator("#reveal").wait_for(state="visible")
        page.screenshot(path=str(tmp_path / f"xss-{csp}.png"), full_page=True)
        assert page.evaluate("window.__pwned") is None
        assert dialogs == [] and errors == []
        context.close()
    finally:
        server.stop()


def test_a_chinese_reviewer_votes_on_the_chinese_page(settings, scripted, browser):
    """The page in Chinese (from Accept-Language, then the switch), an IME composing never
    votes, and a Chinese vote reaches the leaderboard."""
    server = start(settings, scripted, ["lora-r16", "lora-r8"])
    try:
        context = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 860})
        page = context.new_page()
        page.goto(f"{server.url}/arena")
        assert page.locator("html").get_attribute("lang") == "zh-CN"
        assert page.locator("#answer-a h2").inner_text().startswith("模型 A")
        # A key pressed while an input method composes (keyCode 229) is the IME's, not a vote.
        page.evaluate("""() => document.dispatchEvent(new KeyboardEvent("keydown",
            {key: "1", isComposing: true, keyCode: 229, bubbles: true}))""")
        page.wait_for_timeout(300)
        assert page.locator("#reveal").is_hidden()
        page.get_by_role("button", name="A 更好").click()
        page.locator("#reveal").wait_for(state="visible")
        assert page.locator("#reveal-text").inner_text().startswith("模型 A 是")
        board = context.new_page()
        board.goto(f"{server.url}/leaderboard")
        assert board.locator("h1").inner_text() == "排行榜" and human_votes(board) == 1
        # The switch: English on request, remembered by the cookie.
        board.locator("#lang-switch").click()
        board.wait_for_load_state()
        assert board.locator("h1").inner_text() == "Leaderboard"
        board.goto(f"{server.url}/arena")
        assert board.locator("html").get_attribute("lang") == "en"
        context.close()
    finally:
        server.stop()
