"""What a user's file that is not UTF-8 is most likely written in, for its error message."""

from __future__ import annotations


def guess_encoding(raw: bytes, at: int) -> str | None:
    """The encoding the text around byte `at` (up to 64 KB of whole lines) most plausibly is
    in, or None: of the Chinese ones first (GB18030, Big5), else of any charset-normalizer
    knows, the decoding with the least "chaos". GB18030 alone would decode almost any bytes,
    Big5 ones included, into plausible-looking nonsense; and on a line or two of Chinese an
    unrestricted guess often names a Korean code page. A few characters can read cleanly
    both ways: then the reading with more of its script's common characters wins (GB2312's
    for GB18030, Big5's level 1 for Big5), and GB18030 on a tie."""
    import charset_normalizer

    start = raw.rfind(b"\n", 0, max(0, at - 32768)) + 1
    stop = raw.find(b"\n", at + 32768)
    sample = raw[start : stop if stop >= 0 else len(raw)]
    chinese = {m.encoding: m.chaos for m in charset_normalizer.from_bytes(sample, cp_isolation=["gb18030", "big5"])}
    if chinese:
        least = min(chinese.values())
        tied = [e for e, chaos in chinese.items() if chaos <= least + 0.01]
        if len(tied) > 1:
            return max(("gb18030", "big5"), key=lambda e: (_common_share(sample, e), e == "gb18030"))
        return tied[0].replace("_", "-")
    best = charset_normalizer.from_bytes(sample).best()
    if best is None or best.encoding in ("utf_8", "ascii"):
        return None
    return best.encoding.replace("_", "-")


def _common_share(sample: bytes, encoding: str) -> float:
    """The share of `sample`'s Han characters, read in `encoding`, that are common ones."""
    text = sample.decode(encoding, errors="ignore")
    han = [c for c in text if "\u4e00" <= c <= "\u9fff"]
    if not han:
        return 0.0
    if encoding == "gb18030":
        common = sum(_encodes(c, "gb2312") for c in han)
    else:  # Big5's level 1: its 5,401 frequent characters, A440..C67E
        common = sum(b"\xa4\x40" <= c.encode("big5", errors="ignore")[:2] <= b"\xc6\x7e" for c in han)
    return common / len(han)


def _encodes(char: str, encoding: str) -> bool:
    try:
        char.encode(encoding)
    except UnicodeEncodeError:
        return False
    return True


def not_utf8(name: str, raw: bytes, error: UnicodeDecodeError, *, option: str | None = "--encoding",
             line: int | None = None) -> str:
    """One line saying where `raw` (the file `name`, or its line `line`) stops being UTF-8
    and what it reads as: with `option`, how to name the encoding; without, how to convert
    the file."""
    newlines = raw[: error.start].count(b"\n")
    at = f"line {line}" if line is not None else f"line {newlines + 1} (offset {error.start})"
    guess = guess_encoding(raw, error.start)
    if option:
        hint = f"; it reads as {guess}: give {option} {guess}" if guess else f"; give its encoding with {option}"
    else:
        hint = (f"; it reads as {guess}: save it as UTF-8 (e.g. iconv -f {guess} -t utf-8)" if guess
                else "; save it as UTF-8")
    return f"{name}: not UTF-8: byte 0x{raw[error.start]:02x} at {at}{hint}"
