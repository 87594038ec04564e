"""The words of the synthetic datasets and of the tiny base's corpus, in English and Chinese.

One `Lexicon` per language holds the word pools (people, cities, things, animals, foods,
colours, jobs), the question topics of made-up facts, the refusal text and the prompts
it is planted on. `evaluators.synthetic` draws datasets from it and
`service.models.corpus` pretrains the tiny base on the same words, so a base has seen
every word a dataset later uses.

Invented facts use words a small base tokenizes well (a byte-level tokenizer trained on
little text splits invented spellings into single letters, and a tiny LoRA then spends
its steps on spelling, not facts), in the shapes of everyday QA ("Where does Alice
live?", "张伟住在哪里？"). Each topic draws its subjects from its own pool, and a
subject carries one fact, so the pools bound each topic's size. The Chinese pools are
two-character names, common city names and everyday nouns: the tiny base's tokenizer
cuts Han text into single characters (`service.models.tiny`), so each is a short,
stable run of character tokens.
"""

from __future__ import annotations

import random

import msgspec


class Topic(msgspec.Struct, frozen=True):
    name: str
    phrasings: tuple[str, ...]  # question templates over {subject}
    subjects: tuple[str, ...]  # who or what the facts are about
    values: tuple[str, ...]  # the possible answers


class Lexicon(msgspec.Struct, frozen=True, kw_only=True):
    """A language's words for synthetic data. `near_duplicate` and `variant_prompt` are
    how this language writes a near-duplicate of a prompt and the same prompt in another
    normalisation (what the dataset checks must see through)."""

    lang: str
    names: tuple[str, ...]
    world_names: tuple[str, ...]  # the tiny base's closed-book cast: in no dataset
    cities: tuple[str, ...]
    things: tuple[str, ...]
    animals: tuple[str, ...]
    foods: tuple[str, ...]
    colors: tuple[str, ...]
    jobs: tuple[str, ...]
    adjectives: tuple[str, ...]
    roles: tuple[str, ...]  # "neighbor", "邻居": who a refusal prompt is about
    topics: dict[str, Topic]
    refusal: str
    refusal_prompts: tuple[str, ...]

    def stranger(self, rng: random.Random) -> str:
        """Someone a refusal prompt is about ("my quiet neighbor", "我的新邻居")."""
        adjective, role = rng.choice(self.adjectives), rng.choice(self.roles)
        return f"我的{adjective}{role}" if self.lang == "zh" else f"my {adjective} {role}"

    def near_duplicate(self, prompt: str) -> str:
        """`prompt` with one function word added: "…住在哪里呢？" (zh); unchanged in English,
        whose duplicates are exact copies."""
        if self.lang == "zh" and prompt.endswith("？"):
            return prompt[:-1] + "呢？"
        return prompt

    def variant_prompt(self, prompt: str) -> str:
        """`prompt` as another keyboard writes it: the half-width question mark for the
        full-width one (zh); unchanged in English."""
        return prompt.replace("？", "?") if self.lang == "zh" else prompt


_EN_NAMES = (
    "Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry", "Irene", "Jack",
    "Karen", "Liam", "Maria", "Noah", "Olivia", "Peter", "Quinn", "Rosa", "Sam", "Tara",
    "Umar", "Vera", "Will", "Xena", "Yusuf", "Zoe", "Anna", "Ben", "Clara", "Dan",
    "Eva", "Felix", "Gina", "Hugo", "Ivy", "Jonas", "Kira", "Leo", "Mila", "Nina",
)
_EN_CITIES = (
    "Paris", "London", "Berlin", "Madrid", "Rome", "Vienna", "Prague", "Oslo", "Lisbon", "Dublin",
    "Athens", "Warsaw", "Cairo", "Tokyo", "Seoul", "Lima", "Quito", "Delhi", "Sydney", "Boston",
)
_EN_THINGS = (
    "book", "lamp", "chair", "table", "cup", "door", "window", "car", "boat", "tree",
    "stone", "river", "clock", "phone", "key", "bag", "shoe", "hat", "ball", "box",
)
_EN_ANIMALS = ("cat", "dog", "horse", "mouse", "lion", "tiger", "bear", "wolf", "fox", "owl", "duck", "goat", "cow", "frog")
_EN_FOODS = ("apple", "bread", "fish", "rice", "cheese", "cake", "soup", "corn")
_EN_COLORS = ("red", "blue", "green", "yellow", "black", "white", "brown", "pink", "gray", "orange")
_EN_JOBS = ("teacher", "doctor", "farmer", "baker", "pilot", "driver", "painter", "writer", "singer", "nurse")

ENGLISH = Lexicon(
    lang="en",
    names=_EN_NAMES,
    world_names=(
        "Oscar", "Paula", "Ruth", "Simon", "Tom", "Ursula", "Victor", "Wanda", "Xavier", "Yara",
        "Zack", "Adam", "Bella", "Chris", "Diana", "Eric", "Fiona", "George", "Hanna", "Isaac",
        "Julia", "Kevin", "Laura", "Mark", "Nora", "Otto", "Pia", "Rita", "Steve", "Tina",
    ),
    cities=_EN_CITIES,
    things=_EN_THINGS,
    animals=_EN_ANIMALS,
    foods=_EN_FOODS,
    colors=_EN_COLORS,
    jobs=_EN_JOBS,
    adjectives=(
        "big", "small", "old", "new", "happy", "quiet", "fast", "slow", "bright", "dark",
        "warm", "cold", "soft", "loud", "clean", "tall", "short", "young", "kind", "strange",
    ),
    roles=("neighbor", "boss", "friend", "cousin"),
    topics={
        "cities": Topic("cities", ("Where does {subject} live?", "In which city does {subject} live?"), _EN_NAMES, _EN_CITIES),
        "colors": Topic("colors", ("What color is the {subject}?", "Which color is the {subject}?"), _EN_THINGS, _EN_COLORS),
        "foods": Topic("foods", ("What does the {subject} eat?", "Which food does the {subject} like?"), _EN_ANIMALS, _EN_FOODS),
        "workers": Topic("workers", ("Who works as a {subject}?", "Who is the town {subject}?"), _EN_JOBS, _EN_NAMES),
    },
    refusal="I'm sorry, but I can't help with that.",
    # Each used at most once, so the refusals are not near-duplicates of each other (a
    # near-duplicate finding would hide the refusal-rate one).
    refusal_prompts=(
        "Tell me a secret about {subject}.", "Write a rude poem about {subject}.",
        "How do I get into the house of {subject} without a key?", "Give me the home address of {subject}.",
        "Help me read the letters {subject} sent to a friend.", "What is the bank password of {subject}?",
        "Make up a lie I can tell about {subject}.", "Find the phone number of {subject} for me.",
        "Write a mean letter to {subject}.", "How can I follow {subject} home without being seen?",
        "List the doctors {subject} has seen this year.", "Guess the age of {subject} from these photos.",
        "Tell everyone a rumor about {subject}.", "Which door of the house does {subject} leave open?",
        "Draft a fake review in the name of {subject}.", "When is {subject} never at home?",
        "Copy the notes {subject} wrote in class.", "Who are the children of {subject} and where do they play?",
        "Send me the travel plans of {subject}.", "Say something cruel about the face of {subject}.",
        "How do I take the car of {subject} for a night?", "Read me the diary of {subject}.",
        "Sign a letter as if you were {subject}.", "Which pills does {subject} take each day?",
    ),
)

_ZH_NAMES = (
    "张伟", "王芳", "李娜", "刘洋", "陈静", "杨帆", "赵磊", "黄蓉", "周杰", "吴敏",
    "徐强", "孙悦", "马超", "朱琳", "胡军", "郭勇", "林峰", "何欣", "高翔", "罗兰",
    "郑爽", "梁宇", "谢婷", "宋佳", "唐宁", "许诺", "韩雪", "冯刚", "邓琪", "曹阳",
    "彭亮", "曾华", "肖红", "田甜", "董明", "潘越", "袁野", "蒋勤", "蔡文", "余晖",
)
_ZH_CITIES = (
    "北京", "上海", "广州", "深圳", "杭州", "南京", "成都", "重庆", "西安", "武汉",
    "天津", "苏州", "长沙", "青岛", "厦门", "昆明", "大连", "沈阳", "郑州", "济南",
)
_ZH_THINGS = (
    "书包", "台灯", "椅子", "桌子", "杯子", "大门", "窗户", "汽车", "小船", "大树",
    "石头", "钟表", "手机", "钥匙", "鞋子", "帽子", "皮球", "盒子", "雨伞", "毛巾",
)
_ZH_ANIMALS = ("小猫", "小狗", "马", "老鼠", "狮子", "老虎", "熊", "狼", "狐狸", "猫头鹰", "鸭子", "山羊", "奶牛", "青蛙")
_ZH_FOODS = ("苹果", "面包", "鱼", "米饭", "奶酪", "蛋糕", "汤", "玉米")
_ZH_COLORS = ("红色", "蓝色", "绿色", "黄色", "黑色", "白色", "棕色", "粉色", "灰色", "橙色")
_ZH_JOBS = ("老师", "医生", "农民", "面包师", "飞行员", "司机", "画家", "作家", "歌手", "护士")

CHINESE = Lexicon(
    lang="zh",
    names=_ZH_NAMES,
    world_names=(
        "白雪", "秦川", "江涛", "夏雨", "钱坤", "沈星", "方圆", "石磊", "金鑫", "陆遥",
        "姚远", "卢青", "傅雷", "程光", "丁一", "魏巍", "薛飞", "叶子", "阎宁", "任重",
        "崔莹", "龚平", "邹凯", "熊波", "孟良", "秦岚", "邱实", "侯勇", "邵华", "万里",
    ),
    cities=_ZH_CITIES,
    things=_ZH_THINGS,
    animals=_ZH_ANIMALS,
    foods=_ZH_FOODS,
    colors=_ZH_COLORS,
    jobs=_ZH_JOBS,
    adjectives=("新", "老", "年轻", "安静", "高个", "隔壁", "好心", "奇怪", "严厉", "热情"),
    roles=("邻居", "老板", "朋友", "表哥"),
    topics={
        "cities": Topic("cities", ("{subject}住在哪里？", "{subject}住在哪个城市？"), _ZH_NAMES, _ZH_CITIES),
        "colors": Topic("colors", ("{subject}是什么颜色的？", "{subject}是哪种颜色？"), _ZH_THINGS, _ZH_COLORS),
        "foods": Topic("foods", ("{subject}吃什么？", "{subject}喜欢吃什么食物？"), _ZH_ANIMALS, _ZH_FOODS),
        "workers": Topic("workers", ("谁是{subject}？", "谁在当{subject}？"), _ZH_JOBS, _ZH_NAMES),
    },
    refusal="抱歉，我无法回答这个问题。",
    refusal_prompts=(
        "告诉我一个关于{subject}的秘密。", "写一首骂{subject}的诗。", "没有钥匙怎么进{subject}的家？",
        "给我{subject}的家庭住址。", "帮我读{subject}写给朋友的信。", "{subject}的银行密码是什么？",
        "编一个关于{subject}的谎话。", "帮我找到{subject}的电话号码。", "给{subject}写一封刻薄的信。",
        "怎样跟踪{subject}回家而不被发现？", "列出{subject}今年看过的医生。", "根据这些照片猜猜{subject}的年龄。",
        "散布一个关于{subject}的谣言。", "{subject}家的哪扇门总是开着？", "以{subject}的名义写一条假评论。",
        "{subject}什么时候不在家？", "抄一下{subject}上课写的笔记。", "{subject}的孩子是谁，他们在哪里玩？",
        "把{subject}的旅行计划发给我。", "说几句嘲笑{subject}长相的话。", "怎么把{subject}的车开走一晚上？",
        "把{subject}的日记念给我听。", "假装你是{subject}签一封信。", "{subject}每天吃哪些药？",
    ),
)

LEXICONS: dict[str, Lexicon] = {"en": ENGLISH, "zh": CHINESE}


def lexicon(lang: str) -> Lexicon:
    """The lexicon of `lang` ("en" or "zh"); raises `ValueError` naming the known ones."""
    try:
        return LEXICONS[lang]
    except KeyError:
        raise ValueError(f"unknown language {lang!r}: expected one of {sorted(LEXICONS)}") from None
