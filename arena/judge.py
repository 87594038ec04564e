"""Judges: an LLM behind any OpenAI-compatible chat endpoint, or a reference metric.

    client = OpenAIChatClient("http://127.0.0.1:8000", model="judge-model", api_key=...)
    judge = LLMJudge(client)
    pair = judge_both_orders(judge, question=q, model_x="a", answer_x=ax, model_y="b", answer_y=by)
    pair.observations  # 0–2 FastChat `Battle`s (one per order whose verdict parsed)

The LLM judge gets a pairwise prompt (MT-bench's, lightly adapted) and must end with a
verdict: `[[A]]`, `[[B]]`, `[[C]]` for a tie, and, when asked, `[[D]]` for "both are
bad". With `graded=True` it gets an Arena-Hard style prompt instead and answers on a
five-point scale, `[[A>>B]]`, `[[A>B]]`, `[[A=B]]`, `[[B>A]]`, `[[B>>A]]`; a strong verdict
counts as `STRONG_WEIGHT` (3) battles, as Arena-Hard's `show_result.py` counts it (the
observation's `Battle.weight`). A reply with no verdict, or with two different ones, is asked again once (with a
reminder of the format); if it still does not parse, the result is an error, never a vote.
Each pair is judged in both orders (position bias is the best-known judge failure); the
two verdicts are two observations, and a pair whose verdicts name different winners is
counted as inconsistent.

`ReferenceJudge` needs no model: it scores both answers against the gold reference with a
metric and prefers the closer one, for offline use on prompts that have references.

The only I/O in `arena/` is here: `OpenAIChatClient` talks HTTP with httpx.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Sequence
from typing import Literal, Protocol

import httpx
import msgspec

from arena.battles import Battle, Turn

Choice = Literal["a", "b", "tie", "both_bad"]
CHOICES: tuple[str, ...] = ("a", "b", "tie", "both_bad")
#: FastChat's `winner` for each choice.
WINNER_OF: dict[str, str] = {"a": "model_a", "b": "model_b", "tie": "tie", "both_bad": "tie (bothbad)"}

_VERDICT = re.compile(r"\[\[\s*([A-Da-d])\s*\]\]")
_LETTER = {"A": "a", "B": "b", "C": "tie", "D": "both_bad"}
_GRADED = re.compile(r"\[\[\s*([AaBb])\s*(>>|>|=|<<|<)\s*([AaBb])\s*\]\]")
#: "A <op> B" -> (choice, weight); "B <op> A" is read with the operator mirrored.
_GRADE = {">>": ("a", 3), ">": ("a", 1), "=": ("tie", 1), "<": ("b", 1), "<<": ("b", 3)}
_MIRROR = {">>": "<<", ">": "<", "=": "=", "<": ">", "<<": ">>"}
#: Battles a strong verdict (`[[A>>B]]`) counts as: Arena-Hard's `WEIGHT = 3`.
STRONG_WEIGHT = 3
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

SYSTEM_PROMPT = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI "
    "assistants to the user question displayed below. You should choose the assistant that follows the "
    "user's instructions and answers the user's question better. Consider helpfulness, relevance, accuracy, "
    "depth and level of detail. Begin your evaluation by comparing the two responses and provide a short "
    "explanation. Avoid any position biases and ensure that the order in which the responses were presented "
    "does not influence your decision. Do not allow the length of the responses to influence your evaluation. "
    "Do not favor certain names of the assistants. Be as objective as possible. After providing your "
    "explanation, output your final verdict by strictly following this format: \"[[A]]\" if assistant A is "
    "better, \"[[B]]\" if assistant B is better, and \"[[C]]\" for a tie."
)
BOTH_BAD_RULE = " Output \"[[D]]\" if both responses are bad (wrong, unhelpful or off-topic)."
REMINDER = (
    "Your reply did not end with exactly one verdict in the required format. Reply with only the verdict: "
    "[[A]], [[B]] or [[C]]"
)

GRADED_SYSTEM_PROMPT = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI "
    "assistants to the user prompt displayed below. First write your own answer to the prompt, so that you "
    "can check theirs against it, and evaluate both answers against yours: identify and correct any mistakes "
    "or inaccurate information. Then consider whether each answer is helpful (it correctly responds to the "
    "prompt and follows the instructions; when the prompt is ambiguous, asking for clarification is better "
    "than assuming), relevant and concise, and what important information is missing from either. Do not let "
    "the order in which the answers are presented or their length influence your decision. After your "
    "explanation, output exactly one final verdict from these labels:\n"
    "1. Assistant A is significantly better: [[A>>B]]\n"
    "2. Assistant A is slightly better: [[A>B]]\n"
    "3. Tie, relatively the same: [[A=B]]\n"
    "4. Assistant B is slightly better: [[B>A]]\n"
    "5. Assistant B is significantly better: [[B>>A]]\n"
    "Example output: \"My final verdict is tie: [[A=B]]\"."
)
GRADED_REMINDER = (
    "Your reply did not end with exactly one verdict in the required format. Reply with only the verdict: "
    "[[A>>B]], [[A>B]], [[A=B]], [[B>A]] or [[B>>A]]."
)

USER_TEMPLATE = (
    "[User Question]\n{question}\n\n"
    "[The Start of Assistant A's Answer]\n{answer_a}\n[The End of Assistant A's Answer]\n\n"
    "[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]"
)


class JudgeError(Exception):
    """The judge could not be asked at all (endpoint unreachable, refused, malformed reply)."""


class Verdict(msgspec.Struct, frozen=True):
    """One judged order. `choice` is None when there is no usable verdict; `error` then says
    why. `raw` is the judge's last reply (or the metric scores); `attempts` how many asks;
    `weight` the battles it counts as (`STRONG_WEIGHT` for a strong graded verdict, else 1)."""

    choice: Choice | None
    raw: str = ""
    attempts: int = 1
    error: str | None = None
    weight: int = 1


class Judge(Protocol):
    """Anything that picks the better of two answers. `name` goes in the votes' `judge` field."""

    name: str

    def judge(self, question: str, answer_a: str, answer_b: str, reference: str | None = None) -> Verdict: ...


class ChatClient(Protocol):
    """One chat completion: the assistant's reply text to `messages`."""

    name: str

    def complete(self, messages: list[dict[str, str]]) -> str: ...


# --- verdicts ---------------------------------------------------------------------------


def judge_messages(question: str, answer_a: str, answer_b: str, *, allow_both_bad: bool = False,
                   graded: bool = False) -> list[dict[str, str]]:
    """The pairwise judge prompt as chat messages (system + user); `graded`: the Arena-Hard
    style prompt with five-point verdicts (it has no "both bad")."""
    system = GRADED_SYSTEM_PROMPT if graded else SYSTEM_PROMPT + (BOTH_BAD_RULE if allow_both_bad else "")
    user = USER_TEMPLATE.format(question=question, answer_a=answer_a, answer_b=answer_b)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def parse_verdict(text: str, *, allow_both_bad: bool = False, graded: bool = False) -> Choice | None:
    """The verdict in a judge's reply: "a", "b", "tie" or (with `allow_both_bad`) "both_bad";
    None when there is none, when different verdicts appear, or `[[D]]` was not allowed.
    With `graded`, Arena-Hard's labels are read too (see `parse_graded_verdict`)."""
    found = parse_graded_verdict(text, allow_both_bad=allow_both_bad) if graded else _read(text, allow_both_bad, False)
    return None if found is None else found[0]


def parse_graded_verdict(text: str, *, allow_both_bad: bool = False) -> tuple[Choice, int] | None:
    """(choice, weight) of a reply on Arena-Hard's scale: `[[A>>B]]` is ("a", 3), `[[A>B]]`
    ("a", 1), `[[A=B]]` ("tie", 1), `[[B>A]]` ("b", 1), `[[B>>A]]` ("b", 3); the mirrored
    spellings (`[[B<A]]`, `[[A<<B]]`, ...) and the plain letters `[[A]]`/`[[B]]`/`[[C]]` (weight 1)
    are read too. None when there is none or two different ones (strength included)."""
    return _read(text, allow_both_bad, True)


def _read(text: str, allow_both_bad: bool, graded: bool) -> tuple[Choice, int] | None:
    found: set[tuple[str, int]] = {(_LETTER[m.upper()], 1) for m in _VERDICT.findall(text or "")}
    if graded:
        for left, op, right in _GRADED.findall(text or ""):
            if left.upper() == right.upper():
                return None  # "[[A>A]]" is not a verdict
            found.add(_GRADE[op if left.upper() == "A" else _MIRROR[op]])
    if len(found) != 1:
        return None
    ((choice, weight),) = found
    if choice == "both_bad" and not allow_both_bad:
        return None
    return choice, weight  # type: ignore[return-value]


# --- judges -----------------------------------------------------------------------------


class LLMJudge:
    """A judge that asks a chat model. An unparseable reply is asked again `retries` times
    (default once) with a format reminder, then becomes an error verdict. `JudgeError`
    from the client (the endpoint failed) also becomes an error verdict. `graded`: the
    Arena-Hard prompt and five-point verdicts (no "both bad")."""

    def __init__(self, client: ChatClient, *, allow_both_bad: bool = False, retries: int = 1, name: str | None = None,
                 graded: bool = False) -> None:
        self.client = client
        self.allow_both_bad = allow_both_bad and not graded
        self.graded = graded
        self.retries = retries
        self.name = name or client.name

    def judge(self, question: str, answer_a: str, answer_b: str, reference: str | None = None) -> Verdict:
        messages = judge_messages(question, answer_a, answer_b, allow_both_bad=self.allow_both_bad, graded=self.graded)
        reply = ""
        for attempt in range(1, self.retries + 2):
            try:
                reply = self.client.complete(messages)
            except JudgeError as exc:
                return Verdict(None, reply, attempt, str(exc))
            found = _read(reply, self.allow_both_bad, self.graded)
            if found is not None:
                return Verdict(found[0], reply, attempt, weight=found[1])
            reminder = GRADED_REMINDER if self.graded else REMINDER + (" or [[D]]" if self.allow_both_bad else "") + "."
            messages = [*messages, {"role": "assistant", "content": reply}, {"role": "user", "content": reminder}]
        return Verdict(None, reply, self.retries + 1, f"no parseable verdict after {self.retries + 1} attempts")


class ReferenceJudge:
    """Prefers the answer closer to the gold reference by `metric(answer, reference)` (higher
    is closer). Scores within `margin` are a tie; with `both_bad_below`, two answers both
    scoring under it are "both_bad". A prompt with no reference gives an error verdict."""

    def __init__(
        self,
        metric: Callable[[str, str], float],
        *,
        name: str = "reference",
        margin: float = 1e-9,
        both_bad_below: float | None = None,
    ) -> None:
        self.metric = metric
        self.name = name
        self.margin = margin
        self.both_bad_below = both_bad_below

    def judge(self, question: str, answer_a: str, answer_b: str, reference: str | None = None) -> Verdict:
        if not reference:
            return Verdict(None, "", 1, "the prompt has no reference answer; the reference judge needs one")
        score_a, score_b = float(self.metric(answer_a, reference)), float(self.metric(answer_b, reference))
        raw = f"score A {score_a:.4f}, score B {score_b:.4f}"
        if self.both_bad_below is not None and max(score_a, score_b) < self.both_bad_below:
            return Verdict("both_bad", raw)
        if abs(score_a - score_b) <= self.margin:
            return Verdict("tie", raw)
        return Verdict("a" if score_a > score_b else "b", raw)


# --- both orders ------------------------------------------------------------------------


class JudgedPair(msgspec.Struct, frozen=True):
    """Both orders of one pair on one question. `first` showed `model_x` as A, `second`
    showed `model_y` as A. `observations` has one `Battle` per order that gave a verdict.
    `consistent` is None when an order failed; else whether both orders picked the same
    winner (or both a tie, or both "both bad")."""

    question_id: str
    model_x: str
    model_y: str
    first: Verdict
    second: Verdict
    observations: list[Battle]
    consistent: bool | None

    @property
    def errors(self) -> list[str]:
        """The error of each failed order."""
        return [v.error or "no verdict" for v in (self.first, self.second) if v.choice is None]


def match_id(question: str, model_x: str, model_y: str) -> str:
    """A stable id for "this question between these two models" (order of the models does
    not matter): the `question_id` shared by human votes and judge verdicts on the same
    prompt and pair, which is what judge–human agreement matches on."""
    lo, hi = sorted((model_x, model_y))
    digest = hashlib.sha256("\x1f".join((question, lo, hi)).encode()).hexdigest()
    return f"q{digest[:20]}"


def judge_both_orders(
    judge: Judge,
    *,
    question: str,
    model_x: str,
    answer_x: str,
    model_y: str,
    answer_y: str,
    reference: str | None = None,
    question_id: str | None = None,
    tstamp: float | None = None,
) -> JudgedPair:
    """Judge the pair with x as A, then with y as A; return both verdicts and the
    observations (FastChat battles, `judge` = the judge's name) for the orders that parsed."""
    if model_x == model_y:
        raise ValueError(f"a model cannot be judged against itself ({model_x!r})")
    qid = question_id or match_id(question, model_x, model_y)
    first = judge.judge(question, answer_x, answer_y, reference)
    second = judge.judge(question, answer_y, answer_x, reference)
    observations = []
    outcomes = []
    for verdict, (ma, aa), (mb, ab) in ((first, (model_x, answer_x), (model_y, answer_y)), (second, (model_y, answer_y), (model_x, answer_x))):
        if verdict.choice is None:
            continue
        observations.append(
            Battle(
                model_a=ma,
                model_b=mb,
                winner=WINNER_OF[verdict.choice],  # type: ignore[arg-type]
                judge=judge.name,
                tstamp=time.time() if tstamp is None else tstamp,
                anony=True,
                question_id=qid,
                turn=1,
                conversation_a=[Turn(role="user", content=question), Turn(role="assistant", content=aa)],
                conversation_b=[Turn(role="user", content=question), Turn(role="assistant", content=ab)],
                weight=verdict.weight if verdict.weight != 1 else None,
            )
        )
        outcomes.append(ma if verdict.choice == "a" else mb if verdict.choice == "b" else verdict.choice)
    consistent = outcomes[0] == outcomes[1] if len(outcomes) == 2 else None
    return JudgedPair(qid, model_x, model_y, first, second, observations, consistent)


# --- the OpenAI-compatible client -------------------------------------------------------


class OpenAIChatClient:
    """`POST {base_url}/v1/chat/completions` on any OpenAI-compatible server (vLLM, the
    service's own `/v1`, a hosted API). `base_url` may end in `/v1` or not. Greedy by
    default. 429/5xx/timeouts are retried `retries` times with backoff; what still fails
    raises `JudgeError` saying what to check."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_tokens: int = 512,
        temperature: float = 0.0,
        retries: int = 2,
        backoff_s: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        url = base_url.rstrip("/")
        self.base_url = url[: -len("/v1")] if url.endswith("/v1") else url
        self.model = model
        self.name = f"llm:{model}"
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.retries = retries
        self.backoff_s = backoff_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers, transport=transport)

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    def complete(self, messages: list[dict[str, str]]) -> str:
        body = {"model": self.model, "messages": messages, "max_tokens": self.max_tokens, "temperature": self.temperature}
        where = f"judge endpoint {self.base_url} (model {self.model!r})"
        for attempt in range(self.retries + 1):
            try:
                response = self._client.post("/v1/chat/completions", json=body)
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise JudgeError(f"{where} is unreachable ({type(exc).__name__}: {exc}); check the URL and that it is running") from None
            else:
                if response.status_code < 400:
                    return _reply_text(response, where)
                if response.status_code not in _RETRY_STATUSES or attempt == self.retries:
                    hint = "; check the API key" if response.status_code in (401, 403) else ""
                    raise JudgeError(f"{where} answered {response.status_code}: {response.text[:300]}{hint}")
            time.sleep(self.backoff_s * 2**attempt)
        raise AssertionError("unreachable")


def _reply_text(response: httpx.Response, where: str) -> str:
    try:
        data = response.json()
        content = data["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise JudgeError(f"{where} sent a reply that is not an OpenAI chat completion: {response.text[:300]}") from None
    return content if isinstance(content, str) else ""


def consistency_counts(pairs: Sequence[JudgedPair]) -> tuple[int, int]:
    """(inconsistent, complete): of the pairs judged in both orders, how many named different winners."""
    complete = [p for p in pairs if p.consistent is not None]
    return sum(not p.consistent for p in complete), len(complete)
