"""Record formats of the fine-tuning ecosystem, each read into the one `Conversation` type.

- `alpaca`: `instruction`, `input`, `output`, and LLaMA-Factory's `system` and `history`
  (`[[query, response], ...]`, the exchanges before this one);
- `chat`: OpenAI `messages` (`role` system/user/assistant, `content` a string or a list of
  text parts);
- `sharegpt`: `conversations` of `{"from", "value"}` (human/user, gpt/assistant, system,
  function_call, observation), optional `system` (LLaMA-Factory's and FastChat's ShareGPT);
- `xtuner`: XTuner's `conversation`: `[{"system"?, "input", "output"}, ...]`, one exchange each;
- `prompt_completion`: `prompt`, `completion`;
- `plain`: `User:…</s>\\n Assistant:…</s>` strings (`text`).

Any format may carry metadata — `source`, `annotator`, `task_type`, `domain`, and a `meta`
object of more — kept on the record (`Conversation.meta`), never trained on.

A tool call (`function_call`) is an assistant turn and a tool's reply (`observation`) a user
turn, as LLaMA-Factory trains them. A field a reader does not use is never dropped in
silence: `FieldLog` collects it and the upload reports it as a warning naming the field.
LLaMA-Factory's `dataset_info.json` entries map other column and tag names onto these
(`column_mapping`).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from evaluators.records import (
    ASSISTANT_PREFIX,
    EOS,
    META_FIELDS,
    SYSTEM_PREFIX,
    USER_PREFIX,
    Conversation,
    Message,
)
from service.errors import InvalidInput

FORMATS = ("alpaca", "chat", "sharegpt", "xtuner", "prompt_completion", "plain")

#: Metadata every format may carry (`read_meta`): kept on the record, never trained on.
_META = {*META_FIELDS, "meta"}
#: Fields each reader uses; anything else in a record is reported.
_USED = {
    "alpaca": {"instruction", "input", "output", "system", "history", *_META},
    "chat": {"messages", *_META},
    "sharegpt": {"conversations", "system", *_META},
    "xtuner": {"conversation", *_META},
    "prompt_completion": {"prompt", "completion", *_META},
    "plain": {"text", *_META},
}
#: Longest metadata value kept (a source name, not a document).
MAX_META_CHARS = 200


def read_meta(obj: dict, where: str) -> tuple[tuple[str, str], ...]:
    """A record's metadata: `source`, `annotator`, `task_type`, `domain` (strings, numbers or
    booleans) and the fields of a `meta` object (the same kinds of value), as sorted pairs."""
    found: dict[str, str] = {}
    extra = obj.get("meta")
    if extra is not None and not isinstance(extra, dict):
        raise InvalidInput(f"{where}: field 'meta' must be an object of name: value, got {type(extra).__name__}")
    for name, value, at in [*((n, obj[n], n) for n in META_FIELDS if n in obj),
                            *((str(n), v, f"meta.{n}") for n, v in (extra or {}).items())]:
        if value is None:
            continue
        if isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, (int, float)):
            value = str(value)
        if not isinstance(value, str):
            raise InvalidInput(f"{where}: field {at!r} must be a string, number or boolean, got {type(value).__name__}")
        if len(value) > MAX_META_CHARS or len(name) > 64:
            raise InvalidInput(f"{where}: field {at!r} is longer than {MAX_META_CHARS} characters")
        found[name] = value
    return tuple(sorted(found.items()))
_CHAT_ROLES = {"system", "user", "assistant"}
#: ShareGPT speaker names (FastChat's and LLaMA-Factory's) → our roles.
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system",
                  "function_call": "assistant", "observation": "user", "chatgpt": "assistant", "bing": "assistant",
                  "bard": "assistant"}


class FieldLog:
    """Fields records carried that their reader does not use: name → (count, first place)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.first: dict[str, str] = {}

    def note(self, obj: dict, fmt: str, where: str) -> None:
        self.unused(obj.keys() - _USED[fmt], where)

    def unused(self, names, where: str) -> None:
        for name in names:
            self.counts[name] += 1
            self.first.setdefault(name, where)

    def warnings(self) -> list[str]:
        return [f"field {name!r} (in {n} record{'s' if n > 1 else ''}, first at {self.first[name]}) is not read by "
                "this format's reader and was not stored; map it with --dataset-info, or remove it"
                for name, n in sorted(self.counts.items())]


def _text(obj: dict, name: str, where: str, allow_empty: bool = False) -> str:
    if name not in obj:
        raise InvalidInput(f"{where}: missing field {name!r}")
    value = obj[name]
    if not isinstance(value, str):
        raise InvalidInput(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise InvalidInput(f"{where}: field {name!r} is empty")
    return value


def _optional_text(obj: dict, name: str, where: str) -> str:
    value = obj.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
    return value


def _finish(turns: list[Message], where: str) -> Conversation:
    if not turns or turns[-1].role != "assistant":
        raise InvalidInput(f"{where}: the last turn must be from the assistant (the answer to train on)")
    if not any(m.role == "user" for m in turns):
        raise InvalidInput(f"{where}: no user turn")
    return Conversation(messages=tuple(turns))


def from_alpaca(obj: dict, where: str) -> Conversation:
    """One Alpaca record, as LLaMA-Factory and XTuner read it: the user turn is the
    instruction and the input joined by a newline, either of them may be empty (not both)."""
    instruction = _text(obj, "instruction", where, allow_empty=True)
    context = _optional_text(obj, "input", where)
    if not (instruction.strip() or context.strip()):
        raise InvalidInput(f"{where}: fields 'instruction' and 'input' are both empty")
    output = _text(obj, "output", where)
    system = _optional_text(obj, "system", where)
    turns = [Message("system", system)] if system.strip() else []
    history = obj.get("history") or []
    if not isinstance(history, list):
        raise InvalidInput(f"{where}: field 'history' must be a list of [query, response] pairs")
    for k, pair in enumerate(history):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(p, str) and p.strip() for p in pair)):
            raise InvalidInput(f"{where}: history[{k}]: expected [query, response], two non-empty strings")
        turns += [Message("user", pair[0]), Message("assistant", pair[1])]
    prompt = "\n".join(part for part in (instruction, context) if part.strip())
    return _finish([*turns, Message("user", prompt), Message("assistant", output)], where)


def _content(value: Any, at: str, role: str) -> str:
    """A message's content: a string, or OpenAI's list of parts (text parts only)."""
    if isinstance(value, list):
        parts = []
        for k, part in enumerate(value):
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise InvalidInput(f"{at}: content[{k}] is a {kind!r} part; only text parts can be trained on")
            parts.append(part["text"])
        value = "".join(parts)
    if not isinstance(value, str):
        raise InvalidInput(f"{at}: field 'content' must be a string or a list of text parts, got {type(value).__name__}")
    if role != "system" and not value.strip():
        raise InvalidInput(f"{at}: field 'content' is empty")
    return value


def from_chat(obj: dict, where: str) -> Conversation:
    messages = obj.get("messages")
    if messages is None:
        raise InvalidInput(f"{where}: missing field 'messages'")
    if not isinstance(messages, list) or not messages:
        raise InvalidInput(f"{where}: field 'messages' must be a non-empty list")
    turns = []
    for j, m in enumerate(messages):
        at = f"{where}, messages[{j}]"
        if not isinstance(m, dict):
            raise InvalidInput(f"{at}: expected an object with 'role' and 'content'")
        role = m.get("role")
        if role not in _CHAT_ROLES:
            raise InvalidInput(f"{at}: unknown role {role!r}; expected one of system, user, assistant")
        if "content" not in m:
            raise InvalidInput(f"{at}: missing field 'content'")
        turns.append(Message(role, _content(m["content"], at, role)))
    return _finish(turns, where)


def from_sharegpt(obj: dict, where: str, *, tags: dict[str, str] | None = None) -> Conversation:
    """`tags`: LLaMA-Factory's `role_tag`/`content_tag` and speaker names (see `column_mapping`)."""
    tags = tags or {}
    role_tag, content_tag = tags.get("role_tag", "from"), tags.get("content_tag", "value")
    speakers = dict(SHAREGPT_ROLES)
    for ours, key in (("user", "user_tag"), ("assistant", "assistant_tag"), ("system", "system_tag"),
                      ("assistant", "function_tag"), ("user", "observation_tag")):
        if key in tags:
            speakers[tags[key]] = ours
    turns_in = obj.get("conversations")
    if not isinstance(turns_in, list) or not turns_in:
        raise InvalidInput(f"{where}: field 'conversations' must be a non-empty list of {{{role_tag!r}, {content_tag!r}}}")
    system = _optional_text(obj, "system", where)
    turns = [Message("system", system)] if system.strip() else []
    for j, turn in enumerate(turns_in):
        at = f"{where}, conversations[{j}]"
        if not isinstance(turn, dict):
            raise InvalidInput(f"{at}: expected an object with {role_tag!r} and {content_tag!r}")
        speaker = turn.get(role_tag)
        if speaker not in speakers:
            raise InvalidInput(f"{at}: unknown speaker {speaker!r}; expected one of {', '.join(sorted(speakers))}")
        role = speakers[speaker]
        turns.append(Message(role, _text(turn, content_tag, at, allow_empty=role == "system")))
    return _finish(turns, where)


def from_xtuner(obj: dict, where: str) -> Conversation:
    exchanges = obj.get("conversation")
    if not isinstance(exchanges, list) or not exchanges:
        raise InvalidInput(f"{where}: field 'conversation' must be a non-empty list of {{system?, input, output}}")
    turns: list[Message] = []
    for j, exchange in enumerate(exchanges):
        at = f"{where}, conversation[{j}]"
        if not isinstance(exchange, dict):
            raise InvalidInput(f"{at}: expected an object with 'input' and 'output'")
        unknown = exchange.keys() - {"system", "input", "output"}
        if unknown:
            raise InvalidInput(f"{at}: unknown field(s) {sorted(unknown)}; expected system, input, output")
        system = _optional_text(exchange, "system", at)
        if system.strip():
            turns.append(Message("system", system))
        turns += [Message("user", _text(exchange, "input", at)), Message("assistant", _text(exchange, "output", at))]
    return _finish(turns, where)


def from_prompt_completion(obj: dict, where: str) -> Conversation:
    return Conversation(messages=(Message("user", _text(obj, "prompt", where)),
                                  Message("assistant", _text(obj, "completion", where))))


_TURN_RE = re.compile(r"(User:|Assistant:|System:)(.*?)</s>\s*", re.S)


def parse_plain(text: str, where: str) -> Conversation:
    """Parse one `User:…</s>\\n Assistant:…</s>` string (multi-turn allowed)."""
    stripped = text.strip()
    if not stripped:
        raise InvalidInput(f"{where}: empty text")
    pos, out = 0, []
    role_of = {USER_PREFIX: "user", ASSISTANT_PREFIX: "assistant", SYSTEM_PREFIX: "system"}
    while pos < len(stripped):
        m = _TURN_RE.match(stripped, pos)
        if not m:
            snippet = stripped[pos : pos + 30]
            raise InvalidInput(f"{where}: expected 'User:…{EOS}' / 'Assistant:…{EOS}' turns, found {snippet!r} at character {pos}")
        role, content = role_of[m.group(1)], m.group(2)
        if role != "system" and not content.strip():
            raise InvalidInput(f"{where}: empty {role} turn at character {pos}")
        out.append(Message(role, content))
        pos = m.end()
    if out[-1].role != "assistant":
        raise InvalidInput(f"{where}: the text must end with an 'Assistant:…{EOS}' turn")
    return Conversation(messages=tuple(out))


def from_plain(obj: dict, where: str) -> Conversation:
    return parse_plain(_text(obj, "text", where), where)


READERS = {"alpaca": from_alpaca, "chat": from_chat, "sharegpt": from_sharegpt, "xtuner": from_xtuner,
           "prompt_completion": from_prompt_completion, "plain": from_plain}


def detect(obj: object, where: str) -> str:
    """The format of one record, from its fields."""
    if isinstance(obj, str):
        return "plain"
    if not isinstance(obj, dict):
        raise InvalidInput(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for fmt, field in (("chat", "messages"), ("sharegpt", "conversations"), ("xtuner", "conversation")):
        if field in obj:
            return fmt
    if "instruction" in obj or "output" in obj:
        return "alpaca"
    if "prompt" in obj or "completion" in obj:
        return "prompt_completion"
    if "text" in obj:
        return "plain"
    raise InvalidInput(
        f"{where}: cannot tell the format from fields {sorted(obj)[:8]}; expected Alpaca (instruction/input/output), "
        "chat (messages), ShareGPT (conversations), XTuner (conversation), prompt/completion, or plain text (text); "
        "other column names can be mapped with --dataset-info"
    )


# --- LLaMA-Factory's dataset_info.json ---------------------------------------------------------

_ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "system": "system", "history": "history"}


class ColumnMapping:
    """One `dataset_info.json` entry: its `formatting` (alpaca or sharegpt), its `columns`
    (LLaMA-Factory's names → the file's) and, for ShareGPT, its `tags`."""

    def __init__(self, entry: dict[str, Any], name: str, source: str = "dataset_info.json") -> None:
        where = f"{source}: dataset {name!r}"
        self.format = entry.get("formatting", "alpaca")
        if self.format not in ("alpaca", "sharegpt"):
            raise InvalidInput(f"{where}: formatting {self.format!r}; expected alpaca or sharegpt")
        columns = entry.get("columns") or {}
        tags = entry.get("tags") or {}
        if not isinstance(columns, dict) or not isinstance(tags, dict) or \
                not all(isinstance(v, str) for v in [*columns.values(), *tags.values()]):
            raise InvalidInput(f"{where}: 'columns' and 'tags' must map names to strings")
        known = set(_ALPACA_COLUMNS) if self.format == "alpaca" else {"messages", "system", "tools"}
        unknown = set(columns) - known
        if unknown:
            raise InvalidInput(f"{where}: column(s) {sorted(unknown)} are not {self.format} columns "
                               f"({', '.join(sorted(known))})")
        self.columns, self.tags = columns, tags

    def read(self, obj: dict, where: str, log: FieldLog) -> Conversation:
        if not isinstance(obj, dict):
            raise InvalidInput(f"{where}: expected a JSON object, got {type(obj).__name__}")
        if self.format == "alpaca":
            renamed = {ours: obj[theirs] for key, ours in _ALPACA_COLUMNS.items()
                       if (theirs := self.columns.get(key, ours)) in obj}
            used = {self.columns.get(key, ours) for key, ours in _ALPACA_COLUMNS.items()}
        else:
            renamed = {"conversations": obj.get(self.columns.get("messages", "conversations"))}
            if (system := self.columns.get("system", "system")) in obj:
                renamed["system"] = obj[system]
            used = {self.columns.get("messages", "conversations"), self.columns.get("system", "system")}
        log.unused(obj.keys() - used - _META, where)
        reader = from_alpaca if self.format == "alpaca" else lambda o, w: from_sharegpt(o, w, tags=self.tags)
        record = reader(renamed, where)
        meta = read_meta(obj, where)
        return record.with_meta(**dict(meta)) if meta else record


def column_mapping(info: Any, dataset: str, source: str = "dataset_info.json") -> ColumnMapping:
    """The entry `dataset` of a parsed `dataset_info.json` (`source`: the file, for errors)."""
    if not isinstance(info, dict):
        raise InvalidInput(f"{source}: expected a JSON object of dataset names")
    if dataset not in info:
        raise InvalidInput(f"{source}: no dataset {dataset!r}; it has {', '.join(sorted(info)[:20]) or 'none'}")
    if not isinstance(info[dataset], dict):
        raise InvalidInput(f"{source}: dataset {dataset!r} must be an object")
    return ColumnMapping(info[dataset], dataset, source)
