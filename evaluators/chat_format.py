"""How a `Conversation` becomes model input: the text, the token ids, and which tokens are trained.

One definition shared by training (`service.training`), attribution (per-example
gradients must see exactly the tokens and labels training saw) and generation
(prompts rendered the way the model was trained). It lives in `evaluators/` because
attribution may not import `service/`.

The format is the tokenizer's chat template when it has one, else the plain
`User:…</s>\\n Assistant:…</s>\\n ` format (`render_plain`). Special tokens follow the
house rule the generator also uses: a chat template writes its own (so the text is
encoded with `add_special_tokens=False`); plain text gets the tokenizer's usual leading
ones (e.g. a Llama tokenizer's BOS).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evaluators.records import Conversation, Message, render_plain

#: The label of a token that carries no loss (the Hugging Face / PyTorch convention).
IGNORE_INDEX = -100


class ChatFormatError(ValueError):
    """The conversation cannot be rendered or masked with this tokenizer (says which and why)."""


def uses_chat_template(tokenizer: Any) -> bool:
    """True when the tokenizer carries a chat template (then it, not `render_plain`, is the format)."""
    return bool(getattr(tokenizer, "chat_template", None))


def _as_dicts(messages: Sequence[Message]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


def render(tokenizer: Any, messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
    """`messages` as text in the tokenizer's format (chat template, else plain)."""
    if uses_chat_template(tokenizer):
        return tokenizer.apply_chat_template(
            _as_dicts(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )
    return render_plain(Conversation(messages=tuple(messages)), add_generation_prompt=add_generation_prompt)


def render_prompt(tokenizer: Any, conversation: Conversation) -> str:
    """The text a model continues to answer `conversation`: every turn before its final
    assistant turn (if any), then the assistant cue (`Assistant:` in the plain format)."""
    return render(tokenizer, conversation.prompt_messages, add_generation_prompt=True)


def special_prefix(tokenizer: Any) -> list[int]:
    """The special token ids the tokenizer puts in front of plain text (e.g. `[BOS]`), or []."""
    with_specials = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    for start in range(len(with_specials) - len(plain) + 1):
        if with_specials[start : start + len(plain)] == plain:
            return list(with_specials[:start])
    return []


def encode_prompt(tokenizer: Any, conversation: Conversation, *, prefix: list[int] | None = None) -> list[int]:
    """Token ids of `render_prompt(tokenizer, conversation)`, special tokens as in training."""
    ids = tokenizer(render_prompt(tokenizer, conversation), add_special_tokens=False)["input_ids"]
    if uses_chat_template(tokenizer):
        return list(ids)
    return (special_prefix(tokenizer) if prefix is None else prefix) + list(ids)


def segments(tokenizer: Any, conversation: Conversation) -> list[tuple[str, bool]]:
    """The rendered conversation cut into `(text, trained)` pieces, in order.

    Each assistant turn is one trained piece: its content and its end-of-turn marker
    (`</s>` in the plain format), without trailing whitespace (a generator stops at the
    marker, so what follows it is never produced). Everything else is untrained.
    Raises `ChatFormatError` when the conversation has no assistant turn, or when the
    chat template does not render a conversation's prefixes as prefixes of the whole.
    """
    messages = conversation.messages
    if not any(m.role == "assistant" for m in messages):
        raise ChatFormatError("the conversation has no assistant turn, so nothing would be trained")
    full = render(tokenizer, messages)
    pieces: list[tuple[str, bool]] = []
    pos = 0
    for i, message in enumerate(messages):
        if message.role != "assistant":
            continue
        before = render(tokenizer, messages[:i], add_generation_prompt=True)
        through = render(tokenizer, messages[: i + 1])
        if not (full.startswith(before) and full.startswith(through) and pos <= len(before) <= len(through)):
            raise ChatFormatError(
                f"the chat template does not render turn {i} as a prefix of the whole conversation, "
                "so the assistant tokens cannot be located; use a template that renders turns in order"
            )
        answer = full[len(before) : len(through)]
        kept = answer.rstrip()
        pieces.append((full[pos : len(before)], False))
        pieces.append((kept, True))
        pos = len(before) + len(kept)
    pieces.append((full[pos:], False))
    return [(text, trained) for text, trained in pieces if text]


def tokenize_conversation(
    tokenizer: Any, conversation: Conversation, max_length: int, *, prefix: list[int] | None = None
) -> tuple[list[int], list[int]]:
    """`(input_ids, labels)` for training on `conversation`, cut to `max_length` tokens.

    Labels equal the ids on the tokens of EVERY assistant turn (content and end-of-turn
    marker) and are `IGNORE_INDEX` (-100) everywhere else, so the loss is answer-only.
    Each piece from `segments` is encoded on its own: the prompt piece is then tokenized
    exactly as `encode_prompt` tokenizes it at generation time, and no token straddles a
    prompt/answer boundary. Labels are not shifted (the model shifts them). After
    truncation the labels may be all -100; callers decide whether to drop the record.
    `prefix` overrides the leading special tokens (see `special_prefix`) to save work in loops.
    """
    if max_length < 1:
        raise ChatFormatError(f"max_length={max_length}: expected a positive number of tokens")
    if uses_chat_template(tokenizer):
        input_ids: list[int] = []
    else:
        input_ids = list(special_prefix(tokenizer) if prefix is None else prefix)
    labels = [IGNORE_INDEX] * len(input_ids)
    for text, trained in segments(tokenizer, conversation):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        input_ids += ids
        labels += ids if trained else [IGNORE_INDEX] * len(ids)
    return input_ids[:max_length], labels[:max_length]


# --- reading a rendered prompt back into turns ------------------------------------------------

_SENTINEL = "ArenaTurn{}Sentinel"
#: Role sequences tried when reading a prompt back: an optional system turn, then up to
#: this many exchanges, then the user turn being answered.
_MAX_EXCHANGES = 32


def _role_shapes() -> list[tuple[str, ...]]:
    shapes = []
    for k in range(_MAX_EXCHANGES, -1, -1):
        for system in (("system",), ()):
            shapes.append((*system, *(("user", "assistant") * k), "user"))
    return shapes  # most turns first: a shorter shape would swallow turns into one


def _template_pieces(text: str, n: int) -> tuple[list[str], list[int]] | None:
    """A probe rendering cut at its sentinels: the literal texts around them and the turn
    index of each sentinel in order of appearance (a template may write turns out of
    order, e.g. Mistral puts the system turn inside the last user turn). None when a
    sentinel is missing or repeated, or two are adjacent (the cut would be ambiguous)."""
    found = []
    for i in range(n):
        token = _SENTINEL.format(i)
        if text.count(token) != 1:
            return None
        found.append((text.index(token), i))
    found.sort()
    literals, order, pos = [], [], 0
    for at, i in found:
        literals.append(text[pos:at])
        order.append(i)
        pos = at + len(_SENTINEL.format(i))
    literals.append(text[pos:])
    if any(not lit for lit in literals[1:-1]):
        return None
    return literals, order


def prompt_parser(tokenizer: Any):
    """A function that reads a prompt rendered in the tokenizer's format (its chat template,
    else the plain format) back into its turns: `parse(text) -> Conversation | None`.

    It renders probe conversations whose turns are sentinels, in every shape of an
    optional system turn, up to `_MAX_EXCHANGES` exchanges and a final user turn, and
    cuts the text at each shape's literal pieces (leftmost first: linear time, no
    regular expression to backtrack on untrusted text), labelling turns by the probe's
    order (a template may write them out of order). A reading counts only when no turn
    holds one of the template's separators and rendering it again gives the text back
    exactly, so a turn quoting the template or more exchanges than the probes have is
    never read as a merged turn: it is None, like a prompt not
    written in this format (e.g. a task's bare question). A trace uses it for samples
    that kept only the rendered prompt."""
    shapes = []
    for shape in _role_shapes():
        probe = [Message(role, _SENTINEL.format(i)) for i, role in enumerate(shape)]  # type: ignore[arg-type]
        try:
            text = render(tokenizer, probe, add_generation_prompt=True)
        except Exception:  # a template may refuse a shape (e.g. a system turn); skip it
            continue
        pieces = _template_pieces(text, len(shape))
        if pieces is not None:
            shapes.append((shape, *pieces))

    def cut(text: str, literals: list[str], order: list[int]) -> dict[int, str] | None:
        head, tail = literals[0], literals[-1]
        if not (text.startswith(head) and text.endswith(tail)) or len(text) < len(head) + len(tail):
            return None
        body_end = len(text) - len(tail)
        contents, pos = {}, len(head)
        for index, literal in zip(order[:-1], literals[1:-1]):
            at = text.find(literal, pos, body_end)
            if at < 0:
                return None
            contents[index], pos = text[pos:at], at + len(literal)
        contents[order[-1]] = text[pos:body_end]
        return contents

    def parse(text: str) -> Conversation | None:
        for shape, literals, order in shapes:
            contents = cut(text, literals, order)
            if contents is None:
                continue
            separators = [lit.strip() for lit in literals[1:-1] if lit.strip()]
            if any(sep in content for sep in separators for content in contents.values()):
                return None  # a turn holding the template's separators: which cut is right is unknowable
            conversation = Conversation(messages=tuple(Message(r, contents[i]) for i, r in enumerate(shape)))
            try:
                if render(tokenizer, conversation.messages, add_generation_prompt=True) == text:
                    return conversation
            except Exception:  # a reading the template refuses (e.g. an empty turn) is no reading
                continue
        return None

    return parse
