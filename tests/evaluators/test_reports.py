"""The data-debugging report: every record listed, multi-turn records shown turn by turn, text escaped."""

from __future__ import annotations

from evaluators.attribution import AttributionResult, Failure, FailureTrace, RecordScore
from evaluators.records import Conversation, Message, user_turn
from evaluators.reports import build_report, render_html, render_markdown


def _record(*turns: str) -> Conversation:
    return Conversation(messages=tuple(Message("user" if k % 2 == 0 else "assistant", t) for k, t in enumerate(turns)))


def _report():
    records = [
        _record("Where does Bob live?", "Oslo"),
        _record("Where does Ann live?", "<b>Rome</b>", "What color is the cup?", "red"),  # the wrong answer opens a chat
    ]
    scores = [RecordScore(index=i, score=s, gradient_score=s, reference_conflict=i == 1, embedding_score=0.5,
                          loss=0.1, loss_rank=i + 1, top_failures=[0]) for i, s in enumerate([0.1, 0.9])]
    attribution = AttributionResult(
        records=scores, ranking=[1, 0],
        failures=[FailureTrace(failure=0, top_records=[1, 0], top_scores=[0.9, 0.1], opposing_records=[],
                               opposing_scores=[], conflicting_records=[1])],
        checkpoints=[10], checkpoint_weights=[1.0], projection_kind="rademacher", projection_layout="blocks",
        projection_dim=64, projection_seed=0, precondition="rsqrt_v", reused_training_features=False, timings={},
    )
    failure = Failure(prompt=user_turn("Where does Ann live?"), output="<b>Rome</b>", gold="Paris", id="7")
    return build_report(report_id="r1", candidate={"name": "c"}, dataset={"ref": "d@1"}, records=records,
                        line_numbers=[1, 2], in_training=[True, True], attribution=attribution,
                        failures=[failure], failure_sources=["benchmark"], checks=None)


def test_report_lists_every_record_and_each_exchange_of_a_chat():
    report = _report()
    assert [(e["index"], e["rank"]) for e in report["examples"]] == [(1, 1), (0, 2)]
    chat = report["examples"][0]
    assert chat["exchanges"] == [["Where does Ann live?", "<b>Rome</b>"], ["What color is the cup?", "red"]]
    assert chat["prompt"] == "What color is the cup?"  # the last turn, as before
    assert "exchanges" not in report["examples"][1]  # a plain record is its prompt and answer
    html = render_html(report)
    assert "Where does Ann live? <strong>→</strong> &lt;b&gt;Rome&lt;/b&gt;<br>What color is the cup?" in html
    assert "<b>Rome</b>" not in html
    md = render_markdown(report)
    assert "Where does Ann live? → &lt;b&gt;Rome&lt;/b&gt; / What color is the cup? → red" in md
    assert "Where does Bob live? → Oslo" in md


def test_record_text_in_the_markdown_report_is_literal():
    """report.md is posted as a pull-request comment: a training record's markdown must
    show as written, never become an image (fetched as the page loads), a link, or a
    broken table."""
    report = _report()
    report["examples"][1]["prompt"] = "See ![](https://evil.example/p.png) and [click](https://phish.example)"
    report["examples"][1]["answer"] = "**bold** | `code` ~~gone~~ _it_ \\"
    md = render_markdown(report)
    row = next(line for line in md.splitlines() if "evil.example" in line)
    assert "See \\!\\[\\](https://evil.example/p.png) and \\[click\\](https://phish.example)" in row
    assert "\\*\\*bold\\*\\* \\| \\`code\\` \\~\\~gone\\~\\~ \\_it\\_ \\\\" in row
    assert row.count(" | ") == 5  # the table's own separators only: six cells
