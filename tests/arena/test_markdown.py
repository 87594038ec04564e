"""Model output rendered as safe HTML: nothing from the input becomes a tag or attribute."""

import re

import pytest

from arena.markdown import render_markdown

ALLOWED_TAGS = {"p", "br", "pre", "code", "ul", "ol", "li", "strong", "em"}


def tags(html: str) -> set[str]:
    return {m.lower() for m in re.findall(r"</?([a-zA-Z0-9]+)", html)}


@pytest.mark.parametrize(
    "attack",
    [
        "<script>alert(1)</script>",
        '<img src=x onerror="alert(1)">',
        "```\n</code></pre><script>alert(1)</script>\n```",
        "`</code><script>x</script>`",
        "**<b onmouseover=alert(1)>bold</b>**",
        "- <iframe src=javascript:alert(1)>",
        "1. <svg onload=alert(1)>",
        "# <style>body{display:none}</style>",
        '"><script>alert(1)</script>',
        "&lt;script&gt; already escaped",
    ],
)
def test_untrusted_markup_is_escaped_text(attack):
    html = render_markdown(attack)
    assert tags(html) <= ALLOWED_TAGS
    assert "<script" not in html and "<img" not in html and "<iframe" not in html and "<svg" not in html
    assert not re.search(r"<[a-z]+ [^>]*=", html.replace('<ol start="', "<ol ")), html  # no attributes from the input


def test_code_fences_lists_and_inline_formatting():
    text = "Intro with `x < 1` and **bold** and *it*.\nsecond line\n\n```python\nif a < b:\n    print('<ok>')\n```\n\n- one\n- two\n\n3. three\n4. four\n# Title"
    html = render_markdown(text)
    assert "<p>Intro with <code>x &lt; 1</code> and <strong>bold</strong> and <em>it</em>.<br>second line</p>" in html
    assert "<pre><code>if a &lt; b:\n    print(&#x27;&lt;ok&gt;&#x27;)</code></pre>" in html
    assert "<ul><li>one</li><li>two</li></ul>" in html
    assert '<ol start="3"><li>three</li><li>four</li></ol>' in html
    assert "<p><strong>Title</strong></p>" in html


def test_emphasis_around_code_and_code_is_not_formatted():
    assert render_markdown("Use **`items.reverse()`** now") == "<p>Use <strong><code>items.reverse()</code></strong> now</p>"
    assert render_markdown("`**not bold**` and \x00 nul") == "<p><code>**not bold**</code> and  nul</p>"


def test_unclosed_fence_runs_to_the_end():
    assert render_markdown("text\n```\ncode <b>") == "<p>text</p><pre><code>code &lt;b&gt;</code></pre>"


def test_plain_text_and_empty():
    assert render_markdown("") == ""
    assert render_markdown("a & b") == "<p>a &amp; b</p>"
    assert render_markdown("2 * 3 * 4") == "<p>2 * 3 * 4</p>"
