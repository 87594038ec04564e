"""Task files: loading, errors that name the field, rendering, lm-eval export."""

import hashlib
import json
import re
from pathlib import Path

import msgspec
import pytest
import yaml

from evaluators.records import Conversation, Message
from evaluators.tasks import (
    MetricConfig,
    TaskConfig,
    TaskError,
    build_requests,
    doc_hash,
    export_lm_eval,
    load_docs,
    load_task,
    load_task_docs,
    task_from_records,
)

QA_YAML = """\
task: capitals
dataset: data/capitals.jsonl
output_type: generate_until
doc_to_text: "Q: What is the capital of {{country}}?\\nA:"
doc_to_target: "{{capital}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 16
metric_list:
  - metric: exact_match
    ignore_case: true
    strip: true
  - metric: token_f1
metadata:
  version: 2.0
"""

DOCS = [{"country": "France", "capital": "Paris"}, {"country": "Japan", "capital": "Tokyo"},
        {"country": "Peru", "capital": "Lima"}, {"country": "Chad", "capital": "N'Djamena"}]


def write(tmp_path: Path, text: str, name: str = "task.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_load_task_reads_fields_and_resolves_the_dataset_next_to_the_file(tmp_path):
    task = load_task(write(tmp_path, QA_YAML))
    assert task.task == "capitals"
    assert task.dataset == str((tmp_path / "data" / "capitals.jsonl").resolve())
    assert task.generation_kwargs.until == ["\n"] and task.generation_kwargs.max_gen_toks == 16
    assert task.metric_list[0].kwargs == {"ignore_case": True, "strip": True}
    assert task.metadata.version == 2.0


def test_templates_render_with_document_fields(tmp_path):
    task = load_task(write(tmp_path, QA_YAML))
    requests = build_requests(task, DOCS)
    assert requests[0].prompt == "Q: What is the capital of France?\nA:"
    assert requests[3].references == ("N'Djamena",)
    assert [r.doc_id for r in requests] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("doc_to_txt: x\n", None), r"task\.yaml:\d+: field 'doc_to_txt': unknown field .*did you mean 'doc_to_text'"),
        (("", ("{{capital}}", "{{capital}")), r"task\.yaml:5: field 'doc_to_target': template syntax error"),
        (("", ("metric: token_f1", "metric: token_f2")),
         r"field 'metric_list\[1\]\.metric': unknown metric 'token_f2'"),
        (("", ("strip: true", "stripp: true")), r"field 'metric_list\[0\]\.stripp': not an option of 'exact_match'"),
        (("num_fewshot: two\n", None), r"task\.yaml:\d+: field 'num_fewshot': Expected `int`, got `str`"),
        (("", ("output_type: generate_until", "output_type: greedy")),
         r"field 'output_type': Invalid enum value 'greedy'; expected one of: generate_until, multiple_choice"),
        (("", ("metric: token_f1", "metric: acc")), r"field 'metric_list\[1\]\.metric': 'acc' scores multiple_choice"),
        (("num_fewshot: -1\n", None), r"field 'num_fewshot': expected >= 0"),
        (("filter_list: []\n", None), r"field 'filter_list': lm-eval's 'filter_list' is not supported"),
    ],
)
def test_load_errors_name_the_file_and_field(tmp_path, change, expected):
    extra, replace = change
    text = QA_YAML + extra
    if replace:
        text = text.replace(*replace)
    with pytest.raises(TaskError, match=expected):
        load_task(write(tmp_path, text))


def test_invalid_yaml_names_file_and_line(tmp_path):
    with pytest.raises(TaskError, match=r"task\.yaml:\d+:\d+: invalid YAML: expected ',' or ']'"):
        load_task(write(tmp_path, "task: x\ndataset: d.jsonl\ndoc_to_text: [unclosed\n"))


def test_python_functions_are_refused_with_a_hint(tmp_path):
    text = QA_YAML.replace('"{{capital}}"', "!function utils.target")
    with pytest.raises(TaskError, match=r"task\.yaml:5: '!function' .* not supported"):
        load_task(write(tmp_path, text))


def test_constructing_in_code_validates_too():
    with pytest.raises(TaskError, match="field 'doc_to_choice': required"):
        TaskConfig(task="mc", dataset="d.jsonl", doc_to_target="label", output_type="multiple_choice")


def test_a_document_missing_a_field_names_the_document_and_the_variable(tmp_path):
    task = load_task(write(tmp_path, QA_YAML))
    with pytest.raises(TaskError, match=r"doc 1 \(fields: capital, nation\): 'country' is undefined"):
        build_requests(task, [DOCS[0], {"nation": "Japan", "capital": "Tokyo"}])


def test_multiple_choice_from_field_names_and_templates():
    docs = [{"q": "2+2?", "options": ["3", "4"], "label": 1}, {"q": "1+1?", "options": ["2", "5"], "label": 0}]
    task = TaskConfig(task="arith", dataset="d.jsonl", output_type="multiple_choice", doc_to_text="{{q}}",
                      doc_to_choice="options", doc_to_target="label")
    first = build_requests(task, docs)[0]
    assert first.choices == ("3", "4") and first.gold == (1,) and first.continuations == (" 3", " 4")
    # lm-eval spellings: choices from a rendered list literal, target as the choice text
    # (a rendered target of digits is an index, as in lm-eval).
    words = [{"q": "Is ice cold?", "options": ["yes", "no"], "answer": "yes"},
             {"q": "Is fire cold?", "options": ["yes", "no"], "answer": "no"}]
    task = TaskConfig(task="yesno", dataset="d.jsonl", output_type="multiple_choice", doc_to_text="{{q}}",
                      doc_to_choice="{{options}}", doc_to_target="{{answer}}")
    assert [r.gold for r in build_requests(task, words)] == [(0,), (1,)]
    task = TaskConfig(task="arith", dataset="d.jsonl", output_type="multiple_choice", doc_to_text="{{q}}",
                      doc_to_choice="{{options}}", doc_to_target="{{label}}")
    assert build_requests(task, docs)[1].gold == (0,)
    task = TaskConfig(task="arith", dataset="d.jsonl", output_type="multiple_choice", doc_to_text="{{q}}",
                      doc_to_choice=["yes", "no"], doc_to_target="maybe")
    with pytest.raises(TaskError, match="'maybe' is not one of the choices"):
        build_requests(task, docs)


def test_fewshot_examples_exclude_the_document_and_do_not_depend_on_order():
    task = TaskConfig(task="qa", dataset="d.jsonl", doc_to_text="Q: {{country}}", doc_to_target="{{capital}}",
                      num_fewshot=2, fewshot_delimiter="\n\n", description="Capitals.\n")
    requests = build_requests(task, DOCS)
    prompt = requests[0].prompt
    assert prompt.startswith("Capitals.\n") and prompt.endswith("\n\nQ: France")
    shots = prompt[len("Capitals.\n"):].split("\n\n")[:-1]
    assert len(shots) == 2 and all(s.startswith("Q: ") and " " in s[3:] for s in shots)
    assert "France" not in "".join(shots)
    reordered = build_requests(task, list(reversed(DOCS)))
    assert reordered[3].prompt == prompt


def test_doc_hash_is_lm_evals():
    doc = {"q": "Ça va?", "a": 1}
    expected = hashlib.sha256(json.dumps(doc, indent=2, ensure_ascii=False).encode("utf-8")).hexdigest()
    assert doc_hash(doc) == expected


def test_export_to_lm_eval_then_reload(tmp_path):
    task = load_task(write(tmp_path, QA_YAML))
    export = export_lm_eval(task, DOCS, tmp_path / "lm_eval_tasks")
    config = yaml.safe_load(Path(export.yaml_path).read_text())
    assert config["task"] == "capitals" and config["dataset_path"] == "json"
    assert config["dataset_kwargs"] == {"data_files": {"test": export.data_path}} and config["test_split"] == "test"
    # lm-eval has no `strip` (its exact_match stops with a TypeError): it becomes regexes it runs alike.
    assert config["metric_list"] == [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                                      "ignore_case": True, "regexes_to_ignore": [r"^\s+", r"\s+$"]}]
    assert config["metadata"]["version"] == 2.0
    assert config["metadata"]["arena_metric_list"][0] == {"metric": "exact_match", "ignore_case": True, "strip": True}
    assert export.dropped_metrics == ["token_f1"]  # lm-eval has no SQuAD token F1 by that name
    assert load_docs(export.data_path) == DOCS

    reloaded = load_task(export.yaml_path)
    assert reloaded == msgspec.structs.replace(task, dataset=export.data_path)
    assert [r.prompt for r in build_requests(reloaded, DOCS)] == [r.prompt for r in build_requests(task, DOCS)]


def test_lm_eval_include_is_merged(tmp_path):
    write(tmp_path, QA_YAML, "base.yaml")
    task = load_task(write(tmp_path, "include: base.yaml\ntask: capitals_fewshot\nnum_fewshot: 1\n"))
    assert task.task == "capitals_fewshot" and task.num_fewshot == 1 and task.doc_to_target == "{{capital}}"


def test_registered_dataset_needs_the_resolver(tmp_path):
    task = load_task(write(tmp_path, QA_YAML.replace("data/capitals.jsonl", "capitals@3:test")))
    assert task.dataset == "capitals@3:test"
    assert load_task_docs(task, lambda ref: DOCS if ref == "capitals@3:test" else []) == DOCS
    with pytest.raises(TaskError, match="no resolver"):
        load_task_docs(task)


def test_load_docs_names_the_bad_line(tmp_path):
    path = write(tmp_path, '{"a": 1}\n\n{"a": \n', "docs.jsonl")
    with pytest.raises(TaskError, match=r"docs\.jsonl:3: invalid JSON"):
        load_docs(path)


def test_task_from_records_asks_each_record_as_it_was_trained():
    records = [
        Conversation(messages=(Message("system", "Be brief."), Message("user", "Hi?"), Message("assistant", "Hello."))),
        Conversation(messages=(Message("user", "2+2?"), Message("assistant", "4"), Message("user", "And 3+3?"),
                               Message("assistant", "6"))),
    ]
    task, docs = task_from_records("chat", records)
    assert task.output_type == "generate_until" and task.dataset == "chat.jsonl"
    assert task.apply_chat_template and task.doc_to_history == "history"
    requests = build_requests(task, docs)
    # The conversation sent, turn by turn: what a trace takes its gradient in.
    assert requests[0].messages == (Message("system", "Be brief."), Message("user", "Hi?"))
    assert requests[1].messages == (Message("user", "2+2?"), Message("assistant", "4"), Message("user", "And 3+3?"))
    # The plain rendering (what the tiny base's template writes) is the request's prompt.
    assert requests[0].prompt == "System:Be brief.</s>\n User:Hi?</s>\n Assistant:"
    assert docs[0]["prompt"] == requests[0].prompt and docs[1]["question"] == "And 3+3?"
    assert requests[1].references == ("6",)
    assert "</s>" in task.generation_kwargs.until
    with pytest.raises(TaskError, match="record 0 has no final assistant answer"):
        task_from_records("chat", [Conversation(messages=(Message("user", "Hi?"),))])


CHAT_DOCS = [{"q": f"What is {i}+{i}?", "a": str(2 * i)} for i in range(1, 6)]


def test_chat_task_builds_the_conversation_as_lm_eval_does():
    task = TaskConfig(task="sums", dataset="d.jsonl", doc_to_text="{{q}}", doc_to_target="{{a}}",
                      apply_chat_template=True, system_instruction="You add numbers.", description="Answer briefly.",
                      num_fewshot=2)
    r = build_requests(task, CHAT_DOCS)[0]
    assert r.messages[0] == Message("system", "You add numbers.\n\nAnswer briefly.")
    # Few-shot examples go into the user turn unless fewshot_as_multiturn.
    assert len(r.messages) == 2 and r.messages[1].role == "user"
    assert r.messages[1].content.endswith("What is 1+1?") and r.messages[1].content.count("What is") == 3
    multi = build_requests(msgspec.structs.replace(task, fewshot_as_multiturn=True), CHAT_DOCS)[0]
    assert [m.role for m in multi.messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert multi.messages[-1] == Message("user", "What is 1+1?")
    assert multi.messages[2].content in {d["a"] for d in CHAT_DOCS[1:]}
    # Without a chat template the system instruction leads the text, as in lm-eval.
    plain = build_requests(TaskConfig(task="sums", dataset="d.jsonl", doc_to_text="{{q}}", doc_to_target="{{a}}",
                                      system_instruction="You add numbers."), CHAT_DOCS)[0]
    assert plain.messages == () and plain.prompt == "You add numbers.\n\nWhat is 1+1?"


def test_chat_multiple_choice_continuations_start_bare():
    docs = [{"q": "2+2?", "choices": ["3", "4"], "a": 1}]
    mc = dict(task="mc", dataset="d.jsonl", output_type="multiple_choice", doc_to_text="{{q}}",
              doc_to_choice="{{choices}}", doc_to_target="{{a}}")
    # After the assistant cue the answer starts bare (lm-eval drops target_delimiter there) ...
    chat = build_requests(TaskConfig(**mc, apply_chat_template=True), docs)[0]
    assert chat.continuations == ("3", "4") and chat.prompt.endswith("Assistant:")
    # ... while a base model's prompt is continued after the delimiter, as before.
    assert build_requests(TaskConfig(**mc), docs)[0].continuations == (" 3", " 4")


def test_chat_fields_are_checked_and_survive_lm_eval_export(tmp_path):
    with pytest.raises(TaskError, match="fewshot_as_multiturn.*apply_chat_template"):
        TaskConfig(task="t", dataset="d.jsonl", doc_to_target="x", fewshot_as_multiturn=True)
    with pytest.raises(TaskError, match="loglikelihood_rolling"):
        TaskConfig(task="t", dataset="d.jsonl", doc_to_target="x", output_type="loglikelihood_rolling",
                   apply_chat_template=True)
    task = TaskConfig(task="sums", dataset="d.jsonl", doc_to_text="{{q}}", doc_to_target="{{a}}",
                      apply_chat_template=True, system_instruction="Add.")
    export = export_lm_eval(task, CHAT_DOCS, tmp_path)
    config = yaml.safe_load(Path(export.yaml_path).read_text())
    assert "apply_chat_template" not in config  # lm-eval takes it as a run flag
    assert config["metadata"]["arena_chat"] == {"apply_chat_template": True, "system_instruction": "Add."}
    again = load_task(export.yaml_path)
    assert again.apply_chat_template and again.system_instruction == "Add."


def test_history_field_must_hold_turns():
    task = TaskConfig(task="t", dataset="d.jsonl", doc_to_text="{{q}}", doc_to_target="{{a}}",
                      apply_chat_template=True, doc_to_history="history")
    with pytest.raises(TaskError, match=r"doc 0 .*turn 0 should be"):
        build_requests(task, [{"q": "x", "a": "y", "history": [{"role": "robot", "content": "hi"}]}])


def test_max_new_tokens_is_read_as_max_gen_toks(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("task: t\ndataset: d.jsonl\ndoc_to_text: '{{q}}'\ndoc_to_target: '{{a}}'\n"
                    "generation_kwargs: {max_new_tokens: 12, until: ['</s>']}\n")
    assert load_task(path).generation_kwargs.max_gen_toks == 12
    path.write_text("task: t\ndataset: d.jsonl\ndoc_to_text: '{{q}}'\ndoc_to_target: '{{a}}'\n"
                    "generation_kwargs: {max_new_tokens: 12, max_gen_toks: 16}\n")
    with pytest.raises(TaskError, match=r"t\.yaml:5: field 'generation_kwargs': max_new_tokens=12 and max_gen_toks=16"):
        load_task(path)
    path.write_text("task: t\ndataset: d.jsonl\ndoc_to_text: '{{q}}'\ndoc_to_target: '{{a}}'\n"
                    "generation_kwargs: {max_new_tokens: 0}\n")
    with pytest.raises(TaskError, match=r"max_new_tokens=0: expected an integer >= 1"):  # the name the user wrote
        load_task(path)


def test_templates_render_in_a_sandbox():
    task = TaskConfig(task="t", dataset="d.jsonl", doc_to_text="{{ cycler.__init__.__globals__.os.getcwd() }}",
                      doc_to_target="{{a}}")
    with pytest.raises(TaskError, match="doc 0"):
        build_requests(task, [{"a": "x"}])


@pytest.mark.parametrize("template, message", [
    ("{{ 'x' * 10**10 }}", "over the template limit"),
    ("{{ [1] * 2000000 }}", "over the template limit"),
    ("{{ ((2 ** 1000) ** 1000) ** 1000 }}", "over the template limit"),
    ("{{ a | regex_replace('(', '') }}", "regex_replace pattern"),
    # Found by an attacker audit: each filled 20 GB or ran until killed.
    ("{{ ('x' * 999999) | center(10000000000) }}", "over the limit"),
    ("{{ 'x'.ljust(10000000000) }}", "over the limit"),
    ("{{ '%10000000000s' % a }}", "format width over the template limit"),
    ("{{ '{:>10000000000}'.format(a) }}", "format width over the template limit"),
    ("{{ '%10000000000s' | format(a) }}", "format width over the template limit"),
    ("{{ ('x' * 999999) | replace('x', 'xxxxxxxxxx') }}", "replace that could build text"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "ran over 2 s"),
    # Many small writes (20 characters each: the limit, not the 2 s clock, must stop it on a slow host).
    ("{% for i in range(100000) %}{% for j in range(100) %}xyxyxyxyxyxyxyxyxyxy{% endfor %}{% endfor %}",
     "renders over 1,000,000 characters"),
    ("{{ range(10**9) | list }}", "over"),
    ("{% set ns = namespace(s='x' * 1000) %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
     "concatenation over the template limit"),
    ("{% set ns = namespace(s='x' * 1000) %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}", "sum of"),
    ("{% set ns = namespace(l=[1] * 1000) %}{% for i in range(40) %}{{ ns.l.extend(ns.l) }}{% endfor %}", "list of over"),
])
def test_templates_cannot_exhaust_the_worker(template, message):
    """Untrusted task templates are bounded in memory and time, each failure a task error."""
    task = TaskConfig(task="t", dataset="d.jsonl", doc_to_text=template, doc_to_target="{{a}}")
    with pytest.raises(TaskError, match=rf"doc 0 .*{message}"):
        build_requests(task, [{"a": "x"}])
    ok = TaskConfig(task="t", dataset="d.jsonl", doc_to_text="{{ a * 3 }}{{ 2 ** 10 }}{{ a | regex_replace('x', 'y') }}"
                    "{{ a | center(5) }}{{ '%3s' % a }}{{ '{:>3}'.format(a) }}{{ a | replace('x', 'z') }}"
                    "{% for c in ['p', 'q'] %}{{ c }}{% endfor %}{{ 'Order 12345678' }}", doc_to_target="{{a}}")
    assert build_requests(ok, [{"a": "x"}])[0].prompt == "xxx1024y  x    x  xzpqOrder 12345678"


@pytest.mark.parametrize("options, message", [
    ("regexes_to_ignore: ['(unclosed']", "'(unclosed' is not a valid regular expression"),
    ("regexes_to_ignore: abc", "expected a list, got str"),
    ("regexes_to_ignore: [5]", "expected a regular expression (a string), got int"),
    ("ignore_case: {a: 1}", "expected true or false"),
    ("ignore_case: 1", "expected true or false"),
])
def test_metric_options_are_checked_when_the_task_loads(tmp_path, options, message):
    """A wrong option used to pass `task validate` and fail the eval at the end (or, for a
    string where a list goes, silently ignore three one-character "regexes")."""
    (tmp_path / "d.jsonl").write_text('{"q": "x", "a": "y"}\n')
    task = tmp_path / "t.yaml"
    task.write_text("task: t\ndataset: d.jsonl\ndoc_to_text: '{{q}}'\ndoc_to_target: '{{a}}'\n"
                    f"metric_list:\n  - metric: exact_match\n    {options}\n")
    with pytest.raises(TaskError, match=rf"t\.yaml:5: field 'metric_list\[0\]\.\w+': .*{re.escape(message)}"):
        load_task(task)


@pytest.mark.parametrize("text, key", [("?", "None"), ("1: x\n", "1"), ("null: 3\n", "None")])
def test_a_field_name_that_is_not_text_is_a_task_error(tmp_path, text, key):
    """`?` (a YAML key with no name) was a TypeError deep in the field-name hint: a 500 from
    POST /api/evals (found by the API fuzz test)."""
    task = tmp_path / "t.yaml"
    task.write_text(text)
    with pytest.raises(TaskError, match=rf"t\.yaml: field names are text; got {key}"):
        load_task(task)


def lm_eval_exact_match(pred, ref, regexes_to_ignore=None, ignore_case=False, ignore_punctuation=False,
                        ignore_numbers=False):
    """lm-eval 0.4.13's `exact_match_hf_evaluate` for one pair (lm_eval/api/metrics.py), where
    lm-eval is not installed; the real one where it is."""
    try:
        from lm_eval.api.metrics import exact_match_hf_evaluate
    except ImportError:
        import string

        import numpy as np

        def exact_match_hf_evaluate(predictions, references, regexes_to_ignore=None, ignore_case=False,
                                    ignore_punctuation=False, ignore_numbers=False):
            predictions, references = np.asarray(predictions), np.asarray(references)
            for s in regexes_to_ignore or ():
                predictions = np.array([re.sub(s, "", x) for x in predictions])
                references = np.array([re.sub(s, "", x) for x in references])
            if ignore_case:
                predictions, references = np.char.lower(predictions), np.char.lower(references)
            for flag, chars in ((ignore_punctuation, string.punctuation), (ignore_numbers, string.digits)):
                if flag:
                    table = chars.maketrans("", "", chars)
                    predictions = np.char.translate(predictions, table=table)
                    references = np.char.translate(references, table=table)
            return {"exact_match": np.mean(predictions == references)}
    return float(exact_match_hf_evaluate([pred], [ref], regexes_to_ignore=regexes_to_ignore, ignore_case=ignore_case,
                                         ignore_punctuation=ignore_punctuation, ignore_numbers=ignore_numbers)
                 ["exact_match"])


@pytest.mark.parametrize("options", [
    {"strip": True}, {"ignore_punctuation": True}, {"ignore_punctuation": True, "strip": True, "ignore_case": True},
    {"ignore_numbers": True, "strip": True}, {"ignore_numbers": True, "ignore_punctuation": True},
    {"regexes_to_ignore": ["答案[:：]"], "strip": True, "ignore_punctuation": True}, {"ignore_case": True},
    {"strip": False, "ignore_case": True}, {"strip": False, "ignore_punctuation": False},
])
def test_exported_exact_match_scores_in_lm_eval_what_it_scores_here(tmp_path, options):
    """The export's exact_match options make lm-eval's exact_match give our score on every
    pair: `strip` is not an lm-eval option, and its ignore_punctuation keeps CJK
    punctuation ("北京。" against "北京": 0 there, 1 here)."""
    from evaluators.metrics import GenerationOutcome, score_sample

    task = TaskConfig(task="t", dataset="d.jsonl", doc_to_text="{{q}}", doc_to_target="{{a}}",
                      metric_list=[MetricConfig("exact_match", kwargs=options)])
    config = yaml.safe_load(Path(export_lm_eval(task, [{"q": "x", "a": "y"}], tmp_path).yaml_path).read_text())
    exported = {k: v for k, v in config["metric_list"][0].items()
                if k not in ("metric", "aggregation", "higher_is_better")}
    pairs = [("北京。", "北京"), (" Paris \n", "paris"), ("Paris .", "Paris"), ("「上海」！", "上海"), ("a 5", "a"),
             ("答案：42。", "42"), ("  答案: 北京 ", "北京"), ("$100!", "100"), ("x—y", "xy"), ("Tokyo", "Kyoto"),
             ("A１２", "a"), ("\u3000东京\u3000", "东京"), ("ΣΑΣ.", "σας")]
    for pred, ref in pairs:
        ours = score_sample("exact_match", GenerationOutcome(pred, (ref,)), options)[0]
        assert lm_eval_exact_match(pred, ref, **exported) == ours, (pred, ref, exported)
    assert "strip" not in exported  # never an lm-eval option, even false: its exact_match stops with a TypeError
    assert load_task(Path(tmp_path) / "t.yaml").metric_list[0].kwargs == options  # reloading restores ours
