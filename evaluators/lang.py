"""Language-aware text: the one place where scripts are told apart, text is normalised and
segmented. Every dataset check (`evaluators._text`) and every text metric
(`evaluators.metrics`) goes through here, so Chinese is handled the same way everywhere.

- **Scripts**: Han (Chinese characters), kana and Hangul are "CJK": written without spaces.
- **Normalisation** (`normalize`): NFKC (full-width letters and digits to half-width, the
  full-width forms of `！？，；：（）` to ASCII), the CJK punctuation NFKC leaves alone
  (`。、“”‘’「」『』《》【】～…`) mapped to ASCII equivalents, and optionally Traditional →
  Simplified Chinese with OpenCC (`t2s=True`), for matching only.
- **Segmentation**: `words` cuts Han runs into words with jieba (its bundled dictionary, no
  download) and other scripts into Unicode words; `mixed_chars` is the CMRC/DuReader
  convention (each CJK character a token, other scripts by words), the unit of Chinese
  token F1 and exact match. Punctuation is never a token.
- **Language** (`language`): by script share — "zh", "ja", "ko", or "latin"/"other" — which
  is what a check needs to split its statistics; it is not a language identifier.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import unicodedata
from collections.abc import Iterator

_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_KANA = "\u3040-\u30ff\u31f0-\u31ff"
_HANGUL = "\uac00-\ud7af\u1100-\u11ff\u3130-\u318f"
CJK_CHARS = f"{_HAN}{_KANA}{_HANGUL}"
_CJK = re.compile(f"[{CJK_CHARS}]")
_HAN_RUN = re.compile(f"[{_HAN}]+")
# A number keeps its inner separators ("3.5", "1,000"); a CJK character alone; else a word.
_MIXED = re.compile(rf"\d+(?:[.,:/]\d+)*|[{CJK_CHARS}]|[^\W\d_{CJK_CHARS}]+")
_WORDISH = re.compile(rf"\d+(?:[.,:/]\d+)*|[{_HAN}]+|[{_KANA}{_HANGUL}]|[^\W_{CJK_CHARS}]+")

#: CJK punctuation that NFKC keeps, and the ASCII it is matched as.
_PUNCT = str.maketrans({"。": ".", "．": ".", "、": ",", "“": '"', "”": '"', "‘": "'", "’": "'", "「": '"', "」": '"',
                        "『": '"', "』": '"', "《": '"', "》": '"', "〈": '"', "〉": '"', "【": "[", "】": "]",
                        "〔": "[", "〕": "]", "～": "~", "〜": "~", "…": "...", "—": "-"})
#: How a sentence ends, in either script.
SENTENCE_END = ".!?…。！？"


def has_cjk(text: str) -> bool:
    """True when `text` has a Han, kana or Hangul character."""
    return not text.isascii() and _CJK.search(text) is not None


# CJK characters are counted one by one, other scripts by word: a Han character carries about
# what a word does, so "如何学习Python？" is Chinese, and "Tell me about 北京" is not.
_SCRIPT_OF = [("han", re.compile(f"[{_HAN}]")), ("kana", re.compile(f"[{_KANA}]")),
              ("hangul", re.compile(f"[{_HANGUL}]")), ("latin", re.compile(r"[A-Za-z\u00c0-\u024f]+"))]
_LETTER = re.compile(f"[{CJK_CHARS}]|[^\\W\\d_{CJK_CHARS}]+")
_ASCII_LETTER = re.compile(r"[A-Za-z]")


def language(text: str) -> str:
    """"zh", "ja", "ko" by the script most of its letters are in (CJK counted by
    character, other scripts by word), "latin" for Latin letters, "other" for the rest (or
    no letters)."""
    if text.isascii():  # the common case, without five scans: ASCII letters are Latin ones
        return "latin" if _ASCII_LETTER.search(text) else "other"
    counts = {name: len(pattern.findall(text)) for name, pattern in _SCRIPT_OF}
    counts["other"] = len(_LETTER.findall(text)) - sum(counts.values())
    if max(counts.values()) <= 0:
        return "other"
    if counts["kana"] and counts["kana"] + counts["han"] >= max(counts["latin"], counts["other"], counts["hangul"]):
        return "ja"
    top = max(counts, key=lambda k: counts[k])
    return {"han": "zh", "hangul": "ko", "kana": "ja"}.get(top, top)


@functools.lru_cache(maxsize=1)
def _opencc():
    import opencc

    return opencc.OpenCC("t2s")


def normalize(text: str, *, t2s: bool = False) -> str:
    """NFKC plus CJK punctuation as ASCII (see the module doc); `t2s` also maps Traditional
    to Simplified Chinese. Case is kept: callers fold it when they compare."""
    if text.isascii():  # NFKC and the CJK punctuation table leave ASCII as it is
        return text
    text = unicodedata.normalize("NFKC", text).translate(_PUNCT)
    return simplified(text) if t2s else text


def simplified(text: str) -> str:
    """Traditional Chinese characters in `text` mapped to Simplified (OpenCC t2s); other text as it is."""
    return _opencc().convert(text) if has_cjk(text) else text


@functools.lru_cache(maxsize=1)
def _jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)  # no "Building prefix dict" chatter on the CLI
    jieba.initialize()  # under jieba's own lock
    return jieba


def load_segmenter(*, tagger: bool = False) -> None:
    """Load jieba's dictionary now (once per process; a forked child inherits it), and with
    `tagger` its part-of-speech tables too (`cjk_nouns`)."""
    _jieba()
    if tagger:
        import jieba.posseg  # noqa: F401  (builds the tagger on import)


def looks_chinese(path: str | os.PathLike, sample: int = 65_536) -> bool:
    """Whether the first `sample` bytes of a text file hold Han characters, written out
    or as JSON escapes: a hint to load the segmenter early, not a check."""
    with open(path, "rb") as f:
        head = f.read(sample).decode("utf-8", errors="ignore")
    return bool(_HAN_RUN.search(head) or _HAN_ESCAPE.search(head))


_HAN_ESCAPE = re.compile(r"\\u(?:4[eE]|[5-8][0-9a-fA-F]|9[0-9a-fA-F])[0-9a-fA-F]{2}")  # U+4E00–U+9FFF


#: Han characters of one text that jieba segments: its DAG and HMM grow with a run and cost
#: ~20 µs a character, so a hostile 5 MB line took minutes and a gigabyte. Past them a text's
#: Han characters are taken one by one (`words`), and `cjk_nouns` reads no further.
SEGMENT_MAX_CHARS = 20_000
#: jieba is given a long run in pieces of this many characters (memory per piece, not per run).
_SEGMENT_PIECE = 4_000


def _pieces(run: str) -> Iterator[str]:
    """`run` in pieces of `_SEGMENT_PIECE` characters, as jieba is given it."""
    return (run[at : at + _SEGMENT_PIECE] for at in range(0, len(run), _SEGMENT_PIECE))


def segment_han(run: str) -> list[str]:
    """A run of Han characters cut into words by jieba (precise mode, its bundled dictionary)."""
    cut = _jieba().lcut
    return [w for piece in _pieces(run) for w in cut(piece, HMM=True) if w.strip()]


def words(text: str) -> list[str]:
    """Word tokens of `text`: Han runs segmented by jieba (its first `SEGMENT_MAX_CHARS`
    Han characters; any further ones one by one), kana and Hangul by character, other
    scripts by Unicode word; numbers whole; punctuation dropped; case-folded. Text without
    CJK gives exactly its Unicode words."""
    text = normalize(text).casefold()
    out: list[str] = []
    budget = SEGMENT_MAX_CHARS
    for token in _WORDISH.findall(text):
        if not _HAN_RUN.fullmatch(token):
            out.append(token)
            continue
        out.extend(segment_han(token[:budget]) if budget > 0 else ())
        out.extend(token[max(budget, 0) :])
        budget -= len(token)
    return out


def has_words(text: str, n: int) -> bool:
    """`len(words(text)) >= n`, segmenting only when it must: jieba cuts a Han run into one
    word or more, so `n` pieces before segmenting are already `n` words."""
    return len(_WORDISH.findall(normalize(text).casefold())) >= n or len(words(text)) >= n


#: jieba part-of-speech flags of nouns: common (n), person (nr), place (ns), organisation
#: (nt), other proper (nz), and noun morphemes/nominal verbs jieba tags as nouns.
_NOUN_FLAGS = ("n", "nr", "nrfg", "nrt", "ns", "nt", "nz", "ng", "vn")


@functools.lru_cache(maxsize=65536)
def cjk_nouns(text: str) -> frozenset[str]:
    """The nouns of the Han runs of `text` by jieba's part-of-speech tagger: what a Chinese
    question is about, as capitalised names and numbers are for English."""
    if not _HAN_RUN.search(text):
        return frozenset()
    _jieba()
    import jieba.posseg

    found, budget = set(), SEGMENT_MAX_CHARS
    for run in _HAN_RUN.findall(normalize(text)):
        for piece in _pieces(run[:budget]):
            found.update(pair.word for pair in jieba.posseg.lcut(piece) if pair.flag in _NOUN_FLAGS)
        budget -= len(run)
        if budget <= 0:
            break
    return frozenset(found)


_ZH_DIGIT = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_ZH_UNIT = {"十": 10, "百": 100, "千": 1000}
_ZH_BIG = {"万": 10**4, "亿": 10**8}
_ZH_NUMERAL = re.compile("[零〇一二两三四五六七八九十百千万亿]+")
#: What follows a lone numeral character when it counts something ("三岁", "五个"): a lone
#: 一 elsewhere is mostly a word's part ("一定", "统一"), not a number.
_ZH_COUNTED = set("岁年月日天周个位名次人元块角米里斤克吨号点分秒度倍页章条件")


def _zh_number(run: str) -> int | None:
    """The value of a run of Chinese numerals, or None when it is no number ("万一": in case)."""
    if run[0] in "百千万亿":
        return None
    if not any(c in _ZH_UNIT or c in _ZH_BIG for c in run):  # read digit by digit: 二〇二〇 is 2020
        return int("".join(str(_ZH_DIGIT[c]) for c in run))
    total = section = number = 0
    for c in run:
        if c in _ZH_DIGIT:
            number = _ZH_DIGIT[c]
        elif c in _ZH_UNIT:
            section += (number or 1) * _ZH_UNIT[c]
            number = 0
        elif c == "亿":  # everything so far, times 10^8
            total = (total + section + number) * _ZH_BIG[c]
            section = number = 0
        else:  # 万: the section since the last 亿, times 10^4
            total += (section + number) * _ZH_BIG[c]
            section = number = 0
    return total + section + number


def zh_numerals_to_digits(text: str) -> str:
    """`text` with its Chinese numbers in Arabic digits ("三十岁" → "30岁", "一百零五" →
    "105"): a run of numeral characters of two or more, or one before a counted unit
    (岁, 个, 年 ...), so that "30岁" and "三十岁" say the same thing."""
    if not _ZH_NUMERAL.search(text):
        return text

    def digits(match: re.Match) -> str:
        run, after = match.group(), text[match.end() : match.end() + 1]
        value = _zh_number(run) if len(run) >= 2 or after in _ZH_COUNTED else None
        return run if value is None else str(value)

    return _ZH_NUMERAL.sub(digits, text)


def mixed_chars(text: str) -> list[str]:
    """CMRC/DuReader's mixed segmentation: each CJK character a token, other scripts by
    word, numbers whole, punctuation dropped, case-folded."""
    return _MIXED.findall(normalize(text).casefold())


def split_cjk(tokens: list[str]) -> list[str]:
    """`tokens` with every token that holds CJK characters split into them (other tokens as
    they are): the checks' unit, so a one-character edit changes few shingles."""
    out: list[str] = []
    for token in tokens:
        if not has_cjk(token):
            out.append(token)
        elif _CJK_RUN.fullmatch(token):  # one shared string per character: 8 bytes a token, not ~60
            out.extend(map(_ONE_CHAR.setdefault, token, token))
        else:
            out.extend(_MIXED.findall(token))
    return out


_CJK_RUN = re.compile(f"[{CJK_CHARS}]+")
_ONE_CHAR: dict[str, str] = {}
