"""Dataset files in the formats users bring, normalised to `Conversation`s.

Formats (detected, or given explicitly):
- `alpaca`: JSONL of `{"instruction", "input", "output"}`
- `chat`: JSONL of `{"messages": [{"role": system|user|assistant, "content"}, ...]}`
- `prompt_completion`: JSONL of `{"prompt", "completion"}`
- `plain`: `User:…</s>\\n Assistant:…</s>` strings, as a JSON array of strings or JSONL of `{"text"}`

Every error names where (line and column, or record and field) and what was expected,
and nothing is stored unless the whole file parses.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

import msgspec

from evaluators.bounded_json import TooDeep, check_depth
from evaluators.records import ASSISTANT_PREFIX, EOS, SYSTEM_PREFIX, USER_PREFIX, Conversation, Message
from service.domain import Split
from service.errors import InvalidInput, TooLarge

FORMATS = ("alpaca", "chat", "prompt_completion", "plain")
_ROLES = {"system", "user", "assistant"}


class ParsedDataset(msgspec.Struct):
    records: list[Conversation]
    format: str
    line_numbers: list[int]  # 1-based source line of each record

    @property
    def content_id(self) -> str:
        """Content hash of the normalised records: identical content → identical version id."""
        return content_hash(self.records)


def content_hash(records: list[Conversation]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(msgspec.json.encode(r))
        h.update(b"\n")
    return h.hexdigest()[:16]


def _field(obj: dict, name: str, where: str, allow_empty: bool = False) -> str:
    if name not in obj:
        raise InvalidInput(f"{where}: missing field {name!r}")
    value = obj[name]
    if not isinstance(value, str):
        raise InvalidInput(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise InvalidInput(f"{where}: field {name!r} is empty")
    return value


def _from_alpaca(obj: dict, where: str) -> Conversation:
    instruction = _field(obj, "instruction", where)
    context = obj.get("input", "")
    if not isinstance(context, str):
        raise InvalidInput(f"{where}: field 'input' must be a string, got {type(context).__name__}")
    output = _field(obj, "output", where)
    prompt = f"{instruction}\n\n{context}" if context.strip() else instruction
    return Conversation(messages=(Message("user", prompt), Message("assistant", output)))


def _from_chat(obj: dict, where: str) -> Conversation:
    messages = obj.get("messages")
    if messages is None:
        raise InvalidInput(f"{where}: missing field 'messages'")
    if not isinstance(messages, list) or not messages:
        raise InvalidInput(f"{where}: field 'messages' must be a non-empty list")
    out = []
    for j, m in enumerate(messages):
        at = f"{where}, messages[{j}]"
        if not isinstance(m, dict):
            raise InvalidInput(f"{at}: expected an object with 'role' and 'content'")
        role = m.get("role")
        if role not in _ROLES:
            raise InvalidInput(f"{at}: unknown role {role!r}; expected one of system, user, assistant")
        content = _field(m, "content", at, allow_empty=role == "system")
        out.append(Message(role, content))
    if out[-1].role != "assistant":
        raise InvalidInput(f"{where}: the last message must be from the assistant (the answer to train on)")
    if not any(m.role == "user" for m in out):
        raise InvalidInput(f"{where}: no user message")
    return Conversation(messages=tuple(out))


def _from_prompt_completion(obj: dict, where: str) -> Conversation:
    return Conversation(messages=(Message("user", _field(obj, "prompt", where)), Message("assistant", _field(obj, "completion", where))))


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


def _from_text(obj: dict, where: str) -> Conversation:
    return parse_plain(_field(obj, "text", where), where)


_CONVERTERS = {"alpaca": _from_alpaca, "chat": _from_chat, "prompt_completion": _from_prompt_completion, "plain": _from_text}


def _detect(obj: object, where: str) -> str:
    if isinstance(obj, str):
        return "plain"
    if not isinstance(obj, dict):
        raise InvalidInput(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if "messages" in obj:
        return "chat"
    if "instruction" in obj or "output" in obj:
        return "alpaca"
    if "prompt" in obj or "completion" in obj:
        return "prompt_completion"
    if "text" in obj:
        return "plain"
    raise InvalidInput(
        f"{where}: cannot tell the format from fields {sorted(obj)[:8]}; expected Alpaca (instruction/input/output), "
        "chat (messages), prompt/completion, or plain text (text)"
    )


def parse_dataset(raw: bytes, filename: str = "<upload>", fmt: str | None = None, max_bytes: int | None = None) -> ParsedDataset:
    """Parse and validate a whole dataset file. Raises `InvalidInput` at the first bad record
    (with its line/column or field), `TooLarge` over `max_bytes`."""
    if max_bytes is not None and len(raw) > max_bytes:
        raise TooLarge(f"{filename}: {len(raw)} bytes is over the limit of {max_bytes} bytes (ARENA_MAX_UPLOAD_BYTES)")
    if fmt is not None and fmt not in FORMATS:
        raise InvalidInput(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InvalidInput(f"{filename}: not UTF-8: byte 0x{raw[exc.start]:02x} at line {line} (offset {exc.start})") from None
    text = text.lstrip("\ufeff")
    if not text.strip():
        raise InvalidInput(f"{filename}: the file is empty")
    try:
        check_depth(text)
    except TooDeep as exc:
        raise InvalidInput(f"{filename}: {exc}") from None
    records: list[Conversation] = []
    lines: list[int] = []
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{filename}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
        line_of = _array_item_lines(text, len(items))
        for i, item in enumerate(items):
            where = f"{filename}: record {i} (line {line_of[i]})"
            kind = fmt or _detect(item, where)
            if isinstance(item, str) and kind == "plain":
                records.append(parse_plain(item, where))
            else:
                if not isinstance(item, dict):
                    raise InvalidInput(f"{where}: expected a JSON object for format {kind!r}, got {type(item).__name__}")
                records.append(_CONVERTERS[kind](item, where))
            lines.append(line_of[i])
            fmt = fmt or kind
    else:
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"{filename}: invalid JSON at line {n}, column {exc.colno}: {exc.msg}") from None
            where = f"{filename}: line {n}"
            kind = fmt or _detect(obj, where)
            if not isinstance(obj, dict):
                raise InvalidInput(f"{where}: expected a JSON object, got {type(obj).__name__}")
            records.append(_CONVERTERS[kind](obj, where))
            lines.append(n)
            fmt = fmt or kind
    if not records:
        raise InvalidInput(f"{filename}: no records")
    return ParsedDataset(records=records, format=fmt or "plain", line_numbers=lines)


def _array_item_lines(text: str, n: int) -> list[int]:
    """Best-effort 1-based line of each top-level array item (for error messages)."""
    decoder = json.JSONDecoder()
    out, pos = [], text.index("[") + 1
    for _ in range(n):
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        out.append(text.count("\n", 0, pos) + 1)
        try:
            _, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            break
    return out + [out[-1] if out else 1] * (n - len(out))


def records_path(data_dir: Path, version_id: str) -> Path:
    """Where a version's normalised records live (ids are hex hashes, never user strings)."""
    if not re.fullmatch(r"[0-9a-f]{16}", version_id):
        raise InvalidInput(f"bad dataset version id {version_id!r}")
    return data_dir / "datasets" / f"{version_id}.jsonl"


def write_records(data_dir: Path, parsed: ParsedDataset) -> Path:
    path = records_path(data_dir, parsed.content_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            for rec, line in zip(parsed.records, parsed.line_numbers):
                f.write(msgspec.json.encode({"messages": rec.messages, "line": line}))
                f.write(b"\n")
        tmp.replace(path)
    return path


def read_records(data_dir: Path, version_id: str) -> tuple[list[Conversation], list[int]]:
    """The normalised records of a version and their source line numbers."""
    records, lines = [], []
    with open(records_path(data_dir, version_id), "rb") as f:
        for raw in f:
            obj = msgspec.json.decode(raw)
            records.append(Conversation(messages=tuple(Message(m["role"], m["content"]) for m in obj["messages"])))
            lines.append(obj.get("line", 0))
    return records, lines


def make_split(n: int, test_fraction: float, seed: int) -> Split:
    """A deterministic held-out split: the same (n, fraction, seed) always gives the same indices."""
    if not 0.0 < test_fraction < 1.0:
        raise InvalidInput(f"test fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    k = max(1, round(n * test_fraction))
    if k >= n:
        raise InvalidInput(f"a {test_fraction} split of {n} records leaves no training records")
    indices = sorted(random.Random(seed).sample(range(n), k))
    return Split(test_fraction=test_fraction, seed=seed, test_indices=indices)


async def add_dataset(store, data_dir: Path, raw: bytes, *, name: str, filename: str, fmt: str | None = None,
                      max_bytes: int | None = None, parent: str | None = None, note: str = ""):
    """Parse, store the records file, and register a version. Returns (DatasetVersion, created).

    Nothing is written unless the whole file is valid. Identical content under the same name
    returns the existing version (created=False). Parsing and writing run in a worker
    thread: a large upload never stalls the event loop (votes, heartbeats, other requests).
    """
    import time

    import anyio.to_thread

    from service.domain import DatasetVersion, check_name

    check_name(name, "dataset name")
    parsed = await anyio.to_thread.run_sync(parse_dataset, raw, filename, fmt, max_bytes)
    parent_id = None
    if parent:
        parent_id = (await store.resolve_dataset(parent)).id
    await anyio.to_thread.run_sync(write_records, data_dir, parsed)
    dsv = DatasetVersion(
        id=parsed.content_id, name=name, version=0, source_filename=Path(filename).name[:200], format=parsed.format,
        record_count=len(parsed.records), created_at=time.time(), parent=parent_id, note=note,
    )
    return await store.add_dataset_version(dsv)
