"""A correction in a real browser (Debian's chromium via playwright): vote "both bad" with a
click (the page votes by fetch), the correction form opens by itself, "Edit answer A" fills
it with that answer as text (never markup), and the submitted correction waits for the admin."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.test_arena_browser import ANSWERS, ATTACKS, CHROMIUM, browser, scripted, start  # noqa: F401  (fixtures)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt-get install chromium); CI installs it"),
]


def test_vote_both_bad_then_correct_on_the_page(settings, scripted, browser):  # noqa: F811
    server = start(settings, scripted, ["evil-a", "lora-r8"])
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    try:
        page.goto(f"{server.url}/arena")
        assert not page.locator("#correction").is_visible()  # nothing to correct before the vote
        page.get_by_role("button", name="Both are bad").click()
        page.wait_for_selector("#reveal:not([hidden])")
        # Waits that poll without evaluating a string in the page (the page's CSP forbids
        # eval, which a string `wait_for_function` predicate needs while it polls).
        expect(page.locator("#correction")).to_have_js_property("open", True)  # always offered on both-bad
        assert page.input_value("#correction-text") == ""
        page.check('input[name="based_on"][value="a"]')
        expect(page.locator("#correction-text")).not_to_have_value("")  # fetched: the page streamed the answers
        filled = page.input_value("#correction-text")
        shown = {ATTACKS["evil-a"](""), ANSWERS["lora-r8"]("")}
        assert filled in shown  # answer A as the model wrote it: plain text, markup and all
        page.fill("#correction-text", "Reverse it in place with `xs.reverse()`.")
        page.get_by_role("button", name="Submit correction").click()
        page.wait_for_selector("#correction-status")
        assert page.evaluate("window.__pwned") is None  # the answer went into a textarea as text, nothing ran
        stored = server.client(admin=True).get("/api/corrections", params={"status": "pending"}).json()
        assert [(c["text"], c["based_on"], c["choice"]) for c in stored] == [("Reverse it in place with `xs.reverse()`.", "a", "both_bad")]
        assert stored[0]["original"] == filled and stored[0]["original"] in shown
        assert not [e for e in errors if "Content Security Policy" in e], errors
    finally:
        page.close()
        server.stop()

