"""The Chinese half of the bilingual tiny base's corpus (`service.models.corpus`).

The same five kinds of document as the English corpus, in Chinese, over the words of
`evaluators.lexicon.CHINESE` — so a Chinese LoRA writes new facts onto a base that has
seen every word of the Chinese synthetic datasets in the same question shapes:

- facts in context ("张伟住在北京。小猫吃鱼。" then "张伟住在哪里？" → "北京");
- closed-book facts about a fixed Chinese cast (`CHINESE.world_names`);
- copying ("请说出这个词：台灯。" → "台灯");
- short Q/A chats (repeat, first/last word, addition, counting), one to three turns;
- plain sentences.

Each relation's questions include the phrasings of the synthetic topics, so a base
already carries "the asked-about subject" to the answer position for them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from evaluators.lexicon import CHINESE as ZH
from evaluators.records import Conversation, Message, render_plain

_PEOPLE = ZH.names + ZH.world_names
_NUMBERS = ("零", "一", "二", "三", "四", "五", "六", "七", "八", "九")

def _asked(topic: str) -> tuple[str, ...]:
    return tuple(q.replace("{subject}", "{s}") for q in ZH.topics[topic].phrasings)


#: Relations a fact can state: (subjects, values, statement, question phrasings).
RELATIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str, tuple[str, ...]]] = {
    "city": (_PEOPLE, ZH.cities, "{s}住在{v}。", _asked("cities")),
    "job": (_PEOPLE, ZH.jobs, "{s}是一名{v}。", ("{s}是做什么工作的？", "{s}的职业是什么？")),
    "pet": (_PEOPLE, ZH.animals, "{s}养了一只{v}。", ("{s}养了什么动物？", "{s}的宠物是什么？")),
    "favorite": (_PEOPLE, ZH.colors, "{s}最喜欢{v}。", ("{s}最喜欢什么颜色？", "{s}最喜欢的颜色是什么？")),
    "worker": (ZH.jobs, _PEOPLE, "镇上的{s}是{v}。", _asked("workers")),
    "color": (ZH.things, ZH.colors, "{s}是{v}的。", _asked("colors")),
    "food": (ZH.animals, ZH.foods, "{s}爱吃{v}。", _asked("foods")),
}
_WORLD_RELATIONS = ("city", "job", "pet", "favorite")
_WORDS = ZH.things + ZH.animals + ZH.colors + ZH.foods
_COPY_WORDS = _WORDS + _PEOPLE + ZH.cities + ZH.jobs


def _chat(turns: list[tuple[str, str]]) -> str:
    messages = [m for q, a in turns for m in (Message("user", q), Message("assistant", a))]
    return render_plain(Conversation(messages=tuple(messages)))


def _sentence(rng: random.Random) -> str:
    name, name2 = rng.sample(ZH.names, 2)
    kind = rng.randrange(5)
    if kind == 0:
        return f"{name}和{name2}一起去了{rng.choice(ZH.cities)}。"
    if kind == 1:
        return f"{rng.choice(ZH.animals)}在{rng.choice(ZH.things)}旁边吃{rng.choice(ZH.foods)}。"
    if kind == 2:
        a, b = rng.randint(0, 50), rng.randint(0, 50)
        return f"{a}加{b}等于{a + b}。"
    if kind == 3:
        return f"{name}有一个{rng.choice(ZH.colors)}的{rng.choice(ZH.things)}。"
    return f"{name}是{rng.choice(ZH.jobs)}，{name2}也是{rng.choice(ZH.jobs)}。"


def _qa_turn(rng: random.Random) -> tuple[str, str]:
    words = rng.sample(_WORDS, rng.randint(2, 5))
    listed = "、".join(words)
    kind = rng.randrange(6)
    if kind == 0:
        city, name = rng.choice(ZH.cities), rng.choice(ZH.names)
        return f"{name}住在{city}。{name}住在哪里？", city
    if kind == 1:
        return f"重复：{listed}", listed
    if kind == 2:
        return f"第一个词是什么：{listed}？", words[0]
    if kind == 3:
        return f"最后一个词是什么：{listed}？", words[-1]
    if kind == 4:
        a, b = rng.randint(0, 20), rng.randint(0, 20)
        return f"{a}加{b}等于多少？", str(a + b)
    return f"这里有几个词：{listed}？", _NUMBERS[len(words)]


def _facts_in_context(rng: random.Random) -> str:
    facts: list[tuple[str, str, str]] = []
    subjects: set[str] = set()
    for _ in range(rng.randint(2, 5)):
        relation = rng.choice(list(RELATIONS))
        subject = rng.choice(RELATIONS[relation][0])
        if subject not in subjects:
            subjects.add(subject)
            facts.append((relation, subject, rng.choice(RELATIONS[relation][1])))
    text = "".join(RELATIONS[r][2].format(s=s, v=v) for r, s, v in facts)
    asked = rng.sample(facts, rng.randint(1, min(3, len(facts))))
    return text + "\n" + _chat([(rng.choice(RELATIONS[r][3]).format(s=s), v) for r, s, v in asked])


def documents(seed: int = 0) -> Iterator[str]:
    """An endless, seeded stream of Chinese documents, at the English corpus's `MIX` shares."""
    from service.models.corpus import MIX

    rng = random.Random(f"zh:{seed}")
    world_rng = random.Random(f"zh-world:{seed}")
    world = {(p, r): world_rng.choice(RELATIONS[r][1]) for p in ZH.world_names for r in _WORLD_RELATIONS}
    kinds, weights = list(MIX), list(MIX.values())
    while True:
        kind = rng.choices(kinds, weights)[0]
        if kind == "context":
            yield _facts_in_context(rng)
        elif kind == "closed_book":
            turns = []
            for _ in range(rng.randint(1, 3)):
                person, relation = rng.choice(ZH.world_names), rng.choice(_WORLD_RELATIONS)
                turns.append((rng.choice(RELATIONS[relation][3]).format(s=person), world[person, relation]))
            yield _chat(turns)
        elif kind == "copying":
            yield _chat([(f"请说出这个词：{w}。", w) for w in (rng.choice(_COPY_WORDS) for _ in range(rng.randint(1, 3)))])
        elif kind == "chat":
            yield _chat([_qa_turn(rng) for _ in range(rng.choice((1, 1, 1, 2, 3)))])
        else:
            yield "".join(_sentence(rng) for _ in range(rng.randint(2, 6)))
