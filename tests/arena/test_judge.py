"""Judge verdict parsing, retries, both orders, and the reference judge (no network here;
the real-HTTP judge tests live in tests/service/test_arena.py)."""

import httpx
import pytest

from arena.judge import (
    JudgeError,
    LLMJudge,
    OpenAIChatClient,
    ReferenceJudge,
    judge_both_orders,
    judge_messages,
    match_id,
    parse_verdict,
)


class Scripted:
    name = "scripted"

    def __init__(self, replies):
        self.replies = list(replies)
        self.calls = []

    def complete(self, messages):
        self.calls.append(messages)
        return self.replies.pop(0)


@pytest.mark.parametrize(
    "text,both_bad,expected",
    [
        ("A is clearly better. [[A]]", False, "a"),
        ("[[ b ]]", False, "b"),
        ("Equal. [[C]]", False, "tie"),
        ("Both wrong [[D]]", True, "both_bad"),
        ("Both wrong [[D]]", False, None),
        ("[[A]] ... on reflection [[B]]", False, None),
        ("[[A]] final: [[A]]", False, "a"),
        ("A is better", False, None),
        ("", False, None),
    ],
)
def test_parse_verdict(text, both_bad, expected):
    assert parse_verdict(text, allow_both_bad=both_bad) == expected


def test_prompt_mentions_both_bad_only_when_asked():
    assert "[[D]]" not in judge_messages("q", "x", "y")[0]["content"]
    assert "[[D]]" in judge_messages("q", "x", "y", allow_both_bad=True)[0]["content"]
    user = judge_messages("What?", "first", "second")[1]["content"]
    assert user.index("first") < user.index("second")


def test_unparseable_is_retried_once_then_an_error():
    client = Scripted(["I cannot decide", "[[B]]"])
    verdict = LLMJudge(client).judge("q", "x", "y")
    assert verdict.choice == "b" and verdict.attempts == 2
    assert client.calls[1][-1]["role"] == "user" and "verdict" in client.calls[1][-1]["content"]
    verdict = LLMJudge(Scripted(["hmm", "still hmm", "[[A]]"])).judge("q", "x", "y")
    assert verdict.choice is None and verdict.attempts == 2 and "no parseable verdict" in verdict.error


def test_both_orders_map_to_models_and_count_inconsistency():
    # Position-biased judge: always says A.
    pair = judge_both_orders(LLMJudge(Scripted(["[[A]]", "[[A]]"])), question="q", model_x="m1", answer_x="x", model_y="m2", answer_y="y")
    assert [(b.model_a, b.model_b, b.winner) for b in pair.observations] == [("m1", "m2", "model_a"), ("m2", "m1", "model_a")]
    assert pair.consistent is False
    assert pair.observations[0].question_id == pair.observations[1].question_id == match_id("q", "m2", "m1")
    assert pair.observations[1].conversation_a[1].content == "y"
    # Consistent: x wins in both positions.
    pair = judge_both_orders(LLMJudge(Scripted(["[[A]]", "[[B]]"])), question="q", model_x="m1", answer_x="x", model_y="m2", answer_y="y")
    assert pair.consistent is True
    # One order unparseable (after its retry): one observation, consistency unknown, one error.
    pair = judge_both_orders(LLMJudge(Scripted(["[[A]]", "??", "??"])), question="q", model_x="m1", answer_x="x", model_y="m2", answer_y="y")
    assert len(pair.observations) == 1 and pair.consistent is None and len(pair.errors) == 1


def test_reference_judge_prefers_the_closer_answer():
    def overlap(answer, reference):
        a, r = set(answer.split()), set(reference.split())
        return len(a & r) / len(r)

    judge = ReferenceJudge(overlap, name="reference:overlap", both_bad_below=0.2)
    assert judge.judge("q", "paris is the capital", "london", reference="paris").choice == "a"
    assert judge.judge("q", "rome", "paris", reference="paris").choice == "b"
    assert judge.judge("q", "paris", "paris", reference="paris").choice == "tie"
    assert judge.judge("q", "rome", "oslo", reference="paris").choice == "both_bad"
    verdict = judge.judge("q", "a", "b", reference=None)
    assert verdict.choice is None and "no reference" in verdict.error


def test_client_retries_server_errors_then_raises_a_clear_error():
    calls = []

    def handler(request):
        calls.append(request)
        if len(calls) == 1:
            return httpx.Response(503, text="busy")
        return httpx.Response(200, json={"choices": [{"message": {"role": "assistant", "content": "[[A]]"}}]})

    client = OpenAIChatClient("http://judge.test/v1", "m", api_key="k", backoff_s=0, transport=httpx.MockTransport(handler))
    assert client.complete([{"role": "user", "content": "hi"}]) == "[[A]]"
    assert calls[0].url.path == "/v1/chat/completions" and calls[0].headers["authorization"] == "Bearer k"
    refused = OpenAIChatClient("http://judge.test", "m", backoff_s=0, transport=httpx.MockTransport(lambda r: httpx.Response(401, text="bad key")))
    with pytest.raises(JudgeError, match="answered 401.*check the API key"):
        refused.complete([])
    verdict = LLMJudge(refused).judge("q", "x", "y")
    assert verdict.choice is None and "401" in verdict.error
