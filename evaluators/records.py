"""The one conversation type every part of the loop speaks.

Datasets in any supported format (Alpaca, chat `messages`, prompt/completion,
the `User:…</s>\\n Assistant:…</s>` strings) are normalised to `Conversation`
by `service.datasets`; training, checks, attribution and benchmarks all take
`Conversation`s. It lives here, not in `service/`, because `evaluators/` must not
import `service/`.
"""

from __future__ import annotations

from typing import Literal

import msgspec

Role = Literal["system", "user", "assistant"]

#: The plain-text chat format used when a base has no chat template of its own.
USER_PREFIX = "User:"
ASSISTANT_PREFIX = "Assistant:"
SYSTEM_PREFIX = "System:"
EOS = "</s>"
TURN_SEP = "\n "


class Message(msgspec.Struct, frozen=True):
    role: Role
    content: str


#: The metadata fields a record may carry in any input format (besides a free `meta` object).
META_FIELDS = ("source", "annotator", "task_type", "domain")


class Conversation(msgspec.Struct, frozen=True, omit_defaults=True):
    """One training or evaluation record: turns in order, ending with an assistant turn
    for training data (a prompt-only conversation ends with a user turn).

    `meta` is what the record says about itself — `source`, `annotator`, `task_type`,
    `domain` or any field of its `meta` object — as sorted `(name, value)` pairs (hashable,
    so a record stays a value). It never reaches the model: training and benchmarks read
    `messages` only; checks, the trace and curation group by it."""

    messages: tuple[Message, ...]
    meta: tuple[tuple[str, str], ...] = ()

    @property
    def metadata(self) -> dict[str, str]:
        """`meta` as a dict."""
        return dict(self.meta)

    def with_meta(self, **fields: str) -> Conversation:
        """This record with `fields` set in its metadata."""
        return msgspec.structs.replace(self, meta=tuple(sorted({**dict(self.meta), **fields}.items())))

    @property
    def prompt_messages(self) -> tuple[Message, ...]:
        """Every turn before the final assistant turn."""
        if self.messages and self.messages[-1].role == "assistant":
            return self.messages[:-1]
        return self.messages

    @property
    def answer(self) -> str:
        """The final assistant turn's text ('' when the conversation ends with a user turn)."""
        if self.messages and self.messages[-1].role == "assistant":
            return self.messages[-1].content
        return ""

    @property
    def prompt(self) -> str:
        """The last user turn's text: what a reviewer sees as "the question"."""
        for m in reversed(self.prompt_messages):
            if m.role == "user":
                return m.content
        return ""


def chat_row(conversation: Conversation) -> dict:
    """The record as a chat-format JSON object (`messages`, and `meta` when it has any): what
    the next round's dataset files hold, read back by `arena data add` unchanged."""
    row: dict = {"messages": [{"role": m.role, "content": m.content} for m in conversation.messages]}
    if conversation.meta:
        row["meta"] = conversation.metadata
    return row


def exchange_ends(conversation: Conversation) -> list[int]:
    """Where each exchange (a user turn and the assistant turn answering it) ends: the
    message index just past its answer, in order."""
    m = conversation.messages
    return [k + 2 for k in range(len(m) - 1) if m[k].role == "user" and m[k + 1].role == "assistant"]


def exchanges(conversation: Conversation) -> list[tuple[str, str]]:
    """Every `(user turn, the assistant turn answering it)` pair of a conversation, in
    order: a multi-turn record teaches an answer in each of them, not only in its last."""
    m = conversation.messages
    return [(m[end - 2].content, m[end - 1].content) for end in exchange_ends(conversation)]


def conversation_text(conversation: Conversation) -> str:
    """Every turn's text, one per line: what a record says, for text similarity."""
    return "\n".join(m.content for m in conversation.messages)


def user_turn(text: str) -> Conversation:
    """A prompt-only conversation of one user turn."""
    return Conversation(messages=(Message("user", text),))


def render_turn(message: Message) -> str:
    """One turn in the plain `User:…</s>\\n ` format."""
    prefix = {"user": USER_PREFIX, "assistant": ASSISTANT_PREFIX, "system": SYSTEM_PREFIX}[message.role]
    return f"{prefix}{message.content}{EOS}{TURN_SEP}"


def render_plain(conversation: Conversation, add_generation_prompt: bool = False) -> str:
    """Render in the `User:…</s>\\n Assistant:…</s>\\n ` format.

    With `add_generation_prompt`, the text ends with `Assistant:` so a model continues
    with the answer (used for prompt-only conversations).
    """
    text = "".join(render_turn(m) for m in conversation.messages)
    if add_generation_prompt:
        text += ASSISTANT_PREFIX
    return text


#: Jinja chat template equivalent to `render_plain`, installed on bases we build so that
#: `tokenizer.apply_chat_template` and `render_plain` agree byte for byte.
PLAIN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ 'User:' + message['content'] + '</s>\\n ' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'Assistant:' + message['content'] + '</s>\\n ' }}"
    "{% else %}{{ 'System:' + message['content'] + '</s>\\n ' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
