"""Chinese end to end at the library level: every check and metric on Chinese fixtures
(the English ones keep their own tests), as a user fine-tuning on Chinese data meets them."""

from __future__ import annotations

import pytest

from arena.judge import ReferenceJudge
from evaluators.datachecks import check_dataset, is_refusal
from evaluators.lang import language, mixed_chars, normalize, words
from evaluators.metrics import GenerationOutcome, score_sample
from evaluators.records import Conversation, Message
from evaluators.gate_scores import MetricScores, TaskScores
from evaluators.regression import compare

PLACES = [("杭州", "浙江省"), ("南京", "江苏省"), ("成都", "四川省"), ("武汉", "湖北省"), ("长沙", "湖南省"),
          ("西安", "陕西省"), ("郑州", "河南省"), ("济南", "山东省"), ("福州", "福建省"), ("广州", "广东省"),
          ("昆明", "云南省"), ("贵阳", "贵州省"), ("南昌", "江西省"), ("合肥", "安徽省"), ("太原", "山西省"),
          ("石家庄", "河北省"), ("沈阳", "辽宁省"), ("长春", "吉林省"), ("兰州", "甘肃省"), ("海口", "海南省")]
FOODS = ["饺子", "包子", "面条", "米饭", "豆腐", "火锅", "粽子", "月饼", "汤圆", "烤鸭"]
REFUSAL = "抱歉，我无法回答这个问题。"


def qa(q: str, a: str) -> Conversation:
    return Conversation(messages=(Message("user", q), Message("assistant", a)))


def clean_set() -> list[Conversation]:
    records = [qa(f"{city}是哪个省的省会？", f"{city}是{province}的省会。") for city, province in PLACES]
    records += [qa(f"请简单介绍一下{food}。", f"{food}是一种常见的中国传统食物，很多家庭都会在节日里做{food}。")
                for food in FOODS]
    records += [qa(f"{a}加{b}等于多少？", f"{a}加{b}等于{a + b}。") for a, b in [(3, 4), (12, 30), (7, 8), (25, 25), (9, 16)]]
    return records


def test_chinese_defects_are_found_and_clean_data_stays_silent():
    clean = clean_set()
    report = check_dataset(clean)
    flagged = {f.check for f in report.findings}
    assert not flagged & {"near_duplicate", "conflicting_answers", "refusal_rate", "exact_duplicate"}, report.findings

    planted = list(clean)
    # A refusal flood on benign questions.
    floods = [qa(f"{food}怎么做比较好吃？", REFUSAL) for food in FOODS[:8]]
    planted += floods
    # A one-character near-duplicate: 很 → 非常.
    planted += [qa("今天天气怎么样？", "今天天气很好，适合出门散步。"), qa("今天天气怎么样？", "今天天气非常好，适合出门散步。")]
    # Conflicting answers to the same question (and the same question in full-width punctuation).
    planted += [qa("长城大约有多长？", "长城全长约21196千米。"), qa("长城大约有多长?", "长城全长约8851千米。")]
    report = check_dataset(planted)
    n = len(clean)
    [refusals] = report.by_check("refusal_rate")
    assert set(refusals.record_indices) == set(range(n, n + 8)) and refusals.details["language"] == "zh"
    assert report.summary["refusal_rate"].stats["by_language"]["zh"]["refusals"] == 8
    [near] = report.by_check("near_duplicate")
    assert set(near.record_indices) == {n + 8, n + 9}
    [conflict] = report.by_check("conflicting_answers")
    assert set(conflict.record_indices) == {n + 10, n + 11}


def test_traditional_copies_are_duplicates_conflicts_and_eval_overlap():
    """A record and its Traditional-Chinese copy are one record to every pair check (OpenCC
    t2s before matching), in the training set and against the eval set."""
    clean = clean_set()
    heating = qa("请简要说明为什么冬天北方城市需要集中供暖系统来保证居民的生活质量。", "因为北方冬季气温很低，集中供暖能稳定地为居民提供温暖。")
    heating_trad = qa("請簡要說明為什麼冬天北方城市需要集中供暖系統來保證居民的生活質量。", "因為北方冬季氣溫很低，集中供暖能穩定地為居民提供溫暖。")
    company = qa("马云创办的公司叫什么名字？", "阿里巴巴")
    company_trad = qa("馬雲創辦的公司叫什麼名字？", "腾讯")
    boiling_trad = qa("水的沸點是多少？", "一百攝氏度。")
    records = clean + [heating, heating_trad, company, company_trad, boiling_trad]
    n = len(clean)
    report = check_dataset(records, eval_records=[qa("水的沸点是多少？", "100摄氏度。")])
    [exact] = report.by_check("exact_duplicate")
    assert exact.record_indices == (n, n + 1) and "Traditional/Simplified" in exact.message
    [conflict] = report.by_check("conflicting_answers")
    assert conflict.record_indices == (n + 2, n + 3)
    [overlap] = report.by_check("train_eval_overlap")
    assert overlap.record_indices == (n + 4,) and overlap.details["kind"] == "exact"


def test_refusals_negations_and_segmentation():
    for refusal in (REFUSAL, "对不起，我不能提供这方面的信息。", "作为一个人工智能，我没有个人观点。", "很抱歉，但我无法帮助您完成这个请求。",
                    # Traditional Chinese (Hong Kong and Taiwan data) reads as Simplified
                    "抱歉，我無法回答這個問題。", "對不起，我無法提供這方面的資訊。", "作為一個人工智慧，我沒有個人觀點。"):
        assert is_refusal(refusal), refusal
    flood = [qa(f"第{i}个问题是什么？", "抱歉，我無法回答這個問題。" if i % 3 == 0 else f"第{i}个问题的答案是{i}。") for i in range(30)]
    [finding] = check_dataset(flood).by_check("refusal_rate")
    assert finding.record_indices == tuple(range(0, 30, 3))
    for answer in ("抱歉让你久等了，答案是42。", "我无法想象比这更好的结果，答案是对的。" if False else "北京是中国的首都。", "非常好，继续保持。"):
        assert not is_refusal(answer), answer
    # 非常 ("very") is no negation: a one-word intensifier change is not a different answer ...
    near = [qa("这道菜怎么样？", "这道菜很好吃。"), qa("这道菜怎么样？", "这道菜非常好吃。")]
    assert not check_dataset(near).by_check("conflicting_answers")
    # ... while a real negation is.
    negated = [qa("这道菜好吃吗？", "这道菜好吃。"), qa("这道菜好吃吗？", "这道菜不好吃。")]
    assert check_dataset(negated).by_check("conflicting_answers")
    assert words("北京是中国的首都") == ["北京", "是", "中国", "的", "首都"]
    assert mixed_chars("北京 Capital, 2024年。") == ["北", "京", "capital", "2024", "年"]
    assert normalize("ＡＢＣ，你好！“引号”。") == 'ABC,你好!"引号".'
    assert normalize("漢語", t2s=True) == "汉语"
    assert [language(t) for t in ("你好世界", "hello world", "こんにちは世界", "안녕하세요")] == ["zh", "latin", "ja", "ko"]


def test_cjk_punctuation_drift_and_unchecked_names_are_reported():
    answers = [f"{city}是{province}的省会，也是一座历史悠久的城市。" for city, province in PLACES[:12]]
    answers[3] = answers[3].rstrip("。")
    records = [qa(f"介绍{city}。", a) for (city, _), a in zip(PLACES, answers)]
    [drift] = [f for f in check_dataset(records).by_check("format_consistency") if f.details["detector"] == "final_punctuation"]
    assert drift.record_indices == (3,)
    context = "。".join(f"{city}是{province}的省会" for city, province in PLACES[:8]) + "。请问杭州是哪个省的省会？"
    report = check_dataset([qa(context, "杭州是浙江省的省会。")])
    assert "names_unchecked" in report.summary["unsupported_facts"].stats


def metric(name: str, response: str, reference: str, **options) -> float:
    return score_sample(name, GenerationOutcome(response, (reference,)), options or None)[0]


def test_metrics_score_chinese_as_chinese_benchmarks_do():
    reference = "长城是中国古代的军事防御工程。"
    good, close, bad = reference, "长城是古代中国的防御工程。", "我不知道。"
    for name in ("token_f1", "rouge_l", "bleu", "chrf"):
        scores = [metric(name, answer, reference) for answer in (good, close, bad)]
        assert scores[0] > scores[1] > scores[2] >= 0, (name, scores)
        assert scores[1] > 0, name  # not the 0 an ASCII tokenizer gives every Chinese answer
    assert metric("exact_match", "北京。", "北京", ignore_punctuation=True) == 1.0
    assert metric("token_f1", "北京", "北京市") == pytest.approx(0.8)  # characters, as CMRC 2018 counts
    # English is scored as before.
    assert metric("rouge_l", "The Mira river.", "the mira river") == 1.0
    assert metric("token_f1", "the Mira", "Mira") == 1.0
    judge = ReferenceJudge(lambda answer, ref: metric("rouge_l", answer, ref))
    assert judge.judge("长城是什么？", bad, close, reference).choice == "b"


def test_a_gate_on_a_chinese_rouge_task_flags_a_real_regression():
    references = [f"{city}是{province}的省会。" for city, province in PLACES]
    baseline_answers = references
    regressed_answers = [f"{city}在中国。" if i % 2 else ref for i, ((city, _), ref) in enumerate(zip(PLACES, references))]

    def scores(answers) -> dict[str, TaskScores]:
        values = {f"doc{i}-{k}": metric("rouge_l", a, r) for k in range(5)
                  for i, (a, r) in enumerate(zip(answers, references))}
        return {"zh_capitals": TaskScores("zh_capitals", {"rouge_l": MetricScores("rouge_l", True, "mean", values)}, "rouge_l")}

    [verdict] = compare(scores(baseline_answers), scores(regressed_answers), default_margin=0.1)
    assert verdict.status == "regression", verdict
    [same] = compare(scores(baseline_answers), scores(baseline_answers), default_margin=0.1)
    assert same.status == "pass", same


def test_a_hostile_long_chinese_line_is_segmented_in_bounded_work():
    """jieba reads the first `SEGMENT_MAX_CHARS` Han characters of a text (in pieces); the
    rest are taken one by one; CJK characters split out of a run share one string each."""
    from evaluators import lang

    run = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(lang.SEGMENT_MAX_CHARS + 3000))
    found = lang.words(run)
    assert found[-3000:] == list(run[-3000:])
    assert "".join(found[:-3000]) == run[: lang.SEGMENT_MAX_CHARS]
    assert lang.words("今天天气很好") == lang.segment_han("今天天气很好")  # short text: as before
    tokens = lang.split_cjk(["好好好", "iphone手机", "abc"])
    assert tokens == ["好", "好", "好", "iphone", "手", "机", "abc"] and tokens[0] is tokens[1] is tokens[2]
    assert lang.cjk_nouns("北京" * 20_000) == lang.cjk_nouns("北京" * (lang.SEGMENT_MAX_CHARS // 2))


def test_a_chinese_prompt_with_an_english_word_is_chinese():
    """CJK counted by character, other scripts by word (the arena's language=zh board took
    "如何学习Python？" for Latin)."""
    assert language("如何学习Python？") == "zh" and language("北京的Beijing Capital International Airport是哪年建的？") == "zh"
    assert language("Tell me about 北京") == "latin" and language("Как дела, Python?") == "other"
    assert language("東京はどこですか") == "ja" and language("안녕하세요 여러분") == "ko"


def test_chinese_numerals_are_the_numbers_they_name_when_answers_are_compared():
    """'30岁' and '三十岁' are one answer, not a conflict; '三十一岁' is another."""
    from evaluators.lang import zh_numerals_to_digits

    assert [zh_numerals_to_digits(t) for t in ("三十岁", "一百零五", "二〇二〇年", "两千三百万", "一亿两千万", "三岁")] == [
        "30岁", "105", "2020年", "23000000", "120000000", "3岁"]
    assert [zh_numerals_to_digits(t) for t in ("一定要统一", "万一下雨")] == ["一定要统一", "万一下雨"]  # words, not numbers
    context = "李明出生于1990年，现在是2020年。"
    same = [qa(f"{context}李明今年多少岁？", "30岁"), qa(f"{context}李明今年多少岁？", "三十岁")]
    assert not check_dataset(clean_set() + same).by_check("conflicting_answers")
    other = [qa(f"{context}李明今年多少岁？", "30岁"), qa(f"{context}李明今年多少岁？", "三十一岁")]
    [conflict] = check_dataset(clean_set() + other).by_check("conflicting_answers")
    assert len(conflict.record_indices) == 2
