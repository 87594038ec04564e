"""Benchmarks and the regression gate, end to end: eval jobs over real HTTP, `arena eval`,
`arena check` and `arena task` as subprocesses on a real Redis, and the proof that the
gate fails a candidate trained on corrupted data and passes one retrained identically.

Three tiny LoRAs are trained once per module on the cached `tiny_base` ("second word"
questions answered "The second word is X."): `good`; `bad`, trained with the same seed
on the same prompts whose answers were corrupted into "I do not know."; and `same`,
`good` retrained with the same seed and data. The base is too small to learn the rule,
but it learns the answer's form, so `good` scores a clearly non-zero ROUGE-L on the
held-out questions and `bad` none.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evaluators.runner import evaluate
from evaluators.gate_scores import doc_key
from evaluators.tasks import TaskConfig, load_task
from service import datasets
from service.domain import BaseModel, Candidate
from service.errors import InvalidInput
from service.eval_backend import BackendModel
from service.models.corpus import word_task
from service.store import SyncStore
from tests.redis_fixtures import LiveServer, settings_env, poll_done

TEST_FRACTION, SPLIT_SEED = 0.25, 0


def _jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@pytest.fixture(scope="module")
def word_data() -> dict[str, bytes]:
    questions = [r.messages[0].content for r in word_task("second_word", 96, seed=3)]
    answers = [r.answer for r in word_task("second_word", 96, seed=3)]
    good = [{"prompt": q, "completion": f"The second word is {a}."} for q, a in zip(questions, answers)]
    bad = [{"prompt": q, "completion": "I do not know."} for q in questions]
    return {"good": _jsonl(good), "bad": _jsonl(bad)}


@pytest.fixture(scope="module")
def adapters(tiny_base, word_data, tmp_path_factory) -> dict[str, str]:
    """{"good", "bad", "same"} → adapter directories, trained on the records outside the
    held-out split the tests register (the same split `arena data split` would make)."""
    from service.training import TrainConfig, train_adapter

    out = tmp_path_factory.mktemp("eval_adapters")
    config = TrainConfig(epochs=8, batch_size=8, lr=5e-3, eval_fraction=0.0, logging_steps=20, seed=0)
    result = {}
    for name, data in (("good", "good"), ("bad", "bad"), ("same", "good")):
        parsed = datasets.parse_dataset(word_data[data], "words.jsonl")
        split = datasets.make_split(len(parsed.records), TEST_FRACTION, SPLIT_SEED)
        train = [parsed.records[i] for i in split.train_indices(len(parsed.records))]
        result[name] = train_adapter(tiny_base, train, config, out / name).adapter_dir
    return result


@pytest.fixture
def store(settings):
    s = SyncStore(settings.redis_url, settings.key_prefix)
    yield s
    s.close()


@pytest.fixture
def arena_setup(settings, store, tiny_base, word_data, adapters):
    """Base `tiny`, datasets `words` and `wordsbad` with their splits, candidates good/bad/same."""
    store.put_base(BaseModel(name="tiny", path=str(tiny_base), source="test", created_at=time.time()))
    versions = {}
    for name, data in (("words", "good"), ("wordsbad", "bad")):
        dsv, _ = store._run(datasets.add_dataset(store.store, settings.data_dir, word_data[data], name=name,
                                                 filename=f"{name}.jsonl"))
        versions[name] = store.set_dataset_split(dsv, datasets.make_split(dsv.record_count, TEST_FRACTION, SPLIT_SEED))
    for name, dataset in (("good", "words"), ("bad", "wordsbad"), ("same", "words")):
        dsv = versions[dataset]
        store.add_candidate(Candidate(name=name, base="tiny", dataset=dsv.ref, dataset_id=dsv.id, run_id=f"run_{name}",
                                      adapter_dir=adapters[name], config={}, metrics={}, created_at=time.time()))
    return versions


TASK = {
    "task": "words",
    "dataset": "words@1:test",
    "output_type": "generate_until",
    "doc_to_text": "{{prompt}}",
    "doc_to_target": "{{answer}}",
    "generation_kwargs": {"until": ["</s>", "\n User:"], "max_gen_toks": 16},
    "metric_list": [{"metric": "rouge_l"}, {"metric": "exact_match"}],
}


def write_task(path: Path, **changes) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({**TASK, **changes}, sort_keys=False))
    return path


def arena(settings, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = settings_env(settings)
    env["PYTHONPATH"] = os.getcwd()
    return subprocess.run([sys.executable, "-m", "service.cli.__main__", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def wait_for_eval(client, eval_id: str, timeout: float = 120) -> dict:
    return poll_done(client, f"/api/evals/{eval_id}", timeout, every=0.2)


# --- the API -----------------------------------------------------------------------------------


def test_eval_over_http_runs_as_a_job_with_lineage_and_lm_eval_results(settings, arena_setup, tiny_base, adapters):
    server = LiveServer(settings, worker=True).start()
    try:
        admin, anon = server.client(admin=True), server.client()
        assert anon.post("/api/evals", json={"candidates": ["good"], "task": TASK}).status_code == 401

        bad_yaml = admin.post("/api/evals", json={"candidates": ["good"], "task": "task: words\ndataset: [oops\n"})
        assert bad_yaml.status_code == 422 and bad_yaml.json()["detail"].startswith("task:") \
            and "invalid YAML" in bad_yaml.json()["detail"]
        bad_template = admin.post("/api/evals", json={"candidates": ["good"], "task": {**TASK, "doc_to_text": "{{ prompt"}})
        assert bad_template.status_code == 422 and "field 'doc_to_text'" in bad_template.json()["detail"]
        # Templates sent over HTTP render in the worker only: a failing one fails the job, with the field.
        no_field = admin.post("/api/evals", json={"candidates": ["good"], "task": {**TASK, "doc_to_text": "{{ nope }}"}})
        assert no_field.status_code == 202, no_field.text
        failed = wait_for_eval(admin, no_field.json()["id"])
        assert failed["status"] == "failed" and "'nope' is undefined" in failed["error"], failed
        unknown = admin.post("/api/evals", json={"candidates": ["good", "nobody"], "task": TASK})
        assert unknown.status_code == 404 and "known: bad, good, same" in unknown.json()["detail"]
        include = admin.post("/api/evals", json={"candidates": ["good"], "task": "task: w\ninclude: /etc/passwd\n"})
        assert include.status_code == 422 and "field 'include'" in include.json()["detail"]
        file_path = admin.post("/api/evals", json={"candidates": ["good"], "task": {**TASK, "dataset": "/etc/x.jsonl"}})
        assert file_path.status_code == 422 and "does not read" in file_path.json()["detail"]

        started = admin.post("/api/evals", json={"candidates": "good,bad", "task": TASK, "limit": 12})
        assert started.status_code == 202, started.text
        eval_id = started.json()["id"]
        view = wait_for_eval(admin, eval_id)
        assert view["status"] == "succeeded", view
        dsv = arena_setup["words"]
        assert (view["dataset"], view["dataset_id"], view["n_docs"], view["n_original"]) == ("words@1:test", dsv.id, 12, 24)
        good, bad = view["candidates"]
        sha = hashlib.sha256((Path(adapters["good"]) / "adapter_model.safetensors").read_bytes()).hexdigest()
        assert (good["name"], good["base"], good["adapter_sha256"], good["train_dataset"]) == ("good", "tiny", sha, "words@1")
        assert good["metrics"]["rouge_l"]["value"] > 0.1 and good["metrics"]["rouge_l"]["stderr"] > 0
        assert bad["metrics"]["rouge_l"]["value"] < good["metrics"]["rouge_l"]["value"]

        # Files are named relative to the data dir in answers (no server path): resolve them here.
        local = lambda shown: Path(shown.replace("$ARENA_DATA_DIR", str(settings.data_dir)))  # noqa: E731
        assert good["results_path"].startswith("$ARENA_DATA_DIR/")
        results = json.loads(local(good["results_path"]).read_text())
        entry = results["results"]["words"]
        assert entry["rouge_l,none"] == pytest.approx(good["metrics"]["rouge_l"]["value"])
        assert "rouge_l_stderr,none" in entry and "exact_match_stderr,none" in entry
        assert results["n-samples"]["words"] == {"original": 24, "effective": 12}
        assert results["versions"]["words"] == 1.0 and "words" in results["configs"]
        config = results["config"]
        assert (config["base"], config["adapter_sha256"], config["dataset"], config["dataset_id"]) == \
            ("tiny", sha, "words@1:test", dsv.id)
        assert config["task_hash"] == view["task_hash"]
        rows = [json.loads(line) for line in local(good["samples_path"]).read_text().splitlines()]
        assert len(rows) == 12
        assert {"doc_id", "doc_hash", "prompt", "target", "response", "rouge_l", "exact_match"} <= rows[0].keys()
        assert rows[0]["prompt"].startswith("User:Which word comes second in:") and rows[0]["target"].startswith("The second")

        # The same documents as a chat task (lm-eval's --apply_chat_template as a request field):
        # the question is the user turn, rendered with the candidate's template — the tiny
        # base's writes the plain format, so prompts and answers equal the pre-rendered run's.
        chat_task = {**TASK, "doc_to_text": "{{question}}", "doc_to_history": "history"}
        refused = admin.post("/api/evals", json={"candidates": "good", "task": chat_task, "limit": 4})
        assert refused.status_code == 422 and "doc_to_history" in refused.json()["detail"]
        chat = admin.post("/api/evals", json={"candidates": "good", "task": chat_task, "limit": 4,
                                              "apply_chat_template": True})
        assert chat.status_code == 202, chat.text
        chat_view = wait_for_eval(admin, chat.json()["id"])
        assert chat_view["status"] == "succeeded", chat_view
        chat_rows = [json.loads(line) for line in local(chat_view["candidates"][0]["samples_path"]).read_text().splitlines()]
        assert [r["prompt"] for r in chat_rows] == [r["prompt"] for r in rows[:4]]
        assert [r["response"] for r in chat_rows] == [r["response"] for r in rows[:4]]
        assert chat_rows[0]["messages"][-1] == {"role": "user", "content": rows[0]["doc"]["question"]}

        assert eval_id in [e["id"] for e in admin.get("/api/candidates/good/evals").json()]
        assert eval_id in [e["id"] for e in admin.get("/api/evals").json()]
        assert admin.get("/api/candidates/nobody/evals").status_code == 404
        assert admin.get("/api/evals/eval_0000000000000000").status_code == 404
        page = admin.get(f"/evals/{eval_id}")
        assert page.status_code == 200
        assert f"{good['metrics']['rouge_l']['value']:.4f}" in page.text and "± " in page.text
        assert "Worst samples: bad" in page.text and sha[:16] in page.text

        # Documents sent inline; what they contain is shown escaped on the page.
        docs = [{"q": "<script>alert(1)</script> Which word comes second in: cat dog?", "a": "dog"},
                {"q": "Which word comes second in: red box?", "a": "box"}]
        inline = {**TASK, "dataset": "inline.jsonl", "doc_to_text": "User:{{q}}</s>\n Assistant:", "doc_to_target": "{{a}}"}
        started = admin.post("/api/evals", json={"candidates": ["same"], "task": inline, "docs": docs})
        assert started.status_code == 202, started.text
        assert wait_for_eval(admin, started.json()["id"])["status"] == "succeeded"
        page = admin.get(f"/evals/{started.json()['id']}").text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
    finally:
        server.stop()


# --- the gate ----------------------------------------------------------------------------------


def test_check_fails_the_candidate_trained_on_corrupted_data_and_passes_the_identical_one(
        settings, arena_setup, tmp_path):
    task = write_task(tmp_path / "words.yaml")
    equal = arena(settings, "check", "--baseline", "good", "--candidate", "same", "--task", str(task),
                  "--junit", "equal.xml", "--json", "equal.json", cwd=tmp_path)
    assert equal.returncode == 0, equal.stderr
    assert "PASS" in equal.stdout
    verdict = json.loads((tmp_path / "equal.json").read_text())["verdicts"][0]
    assert (verdict["status"], verdict["metric"], verdict["diff"], verdict["n_paired"]) == ("pass", "rouge_l", 0.0, 24)
    assert verdict["baseline"] > 0.1  # a real score, not two empty runs
    assert 'failures="0"' in (tmp_path / "equal.xml").read_text()

    worse = arena(settings, "check", "--baseline", "good", "--candidate", "bad", "--task", str(task),
                  "--junit", "worse.xml", "--json", cwd=tmp_path)
    assert worse.returncode == 1, worse.stderr
    assert "words: good from cached eval" in worse.stderr  # only `bad` was evaluated again
    report = json.loads(worse.stdout)
    verdict = report["verdicts"][0]
    assert report["status"] == "regression" and verdict["status"] == "regression"
    assert verdict["diff"] < -0.1 and verdict["ci_high"] < 0 and verdict["significant_decrease"] is True
    junit = (tmp_path / "worse.xml").read_text()
    assert 'failures="1"' in junit and 'type="regression"' in junit


def test_check_says_why_it_cannot_run_and_judges_an_lm_eval_directory(settings, arena_setup, tmp_path):
    task = write_task(tmp_path / "words.yaml")

    def check(*args):
        return arena(settings, "check", "--task", str(task), *args, cwd=tmp_path)

    unknown = check("--baseline", "good", "--candidate", "nobody")
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines() == ["error: no candidate named 'nobody'; known: bad, good, same"]
    for margin in ("nan", "inf", "-0.1"):  # nan would make every candidate "not within margin"
        bad = check("--baseline", "good", "--candidate", "same", "--margin", margin)
        assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
            f"error: --margin {float(margin)}: expected a finite number >= 0"], bad.stderr
    for option in ("--junit", "--json"):  # found before any eval runs; 2 (could not report), never 1
        lost = check("--baseline", "good", "--candidate", "same", option, str(tmp_path / "missing" / "gate.out"))
        assert lost.returncode == 2 and lost.stderr == f"error: {option} {tmp_path / 'missing' / 'gate.out'}: no directory " \
                                                       f"{tmp_path / 'missing'}\n", lost.stderr
    broken = arena(settings, "check", "--baseline", "good", "--candidate", "same", "--task",
                   str(write_task(tmp_path / "broken.yaml", metric_list=[{"metric": "exact_mach"}])), cwd=tmp_path)
    assert broken.returncode == 2 and "field 'metric_list[0].metric'" in broken.stderr and "exact_match" in broken.stderr

    # An lm-eval output directory as the baseline: here our own eval of `good`, which is
    # written in lm-eval's layout; `same` comes from the same eval's cache.
    ran = arena(settings, "eval", "--candidate", "good,same", "--task", str(task), "--limit", "8", "--json",
                cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    record = json.loads(ran.stdout[ran.stdout.index("{"):])
    assert record["n_docs"] == 8 and [c["name"] for c in record["candidates"]] == ["good", "same"]
    baseline_dir = Path(record["candidates"][0]["results_path"]).parent
    judged = check("--baseline", str(baseline_dir), "--candidate", "same", "--limit", "8")
    assert judged.returncode == 0, judged.stdout + judged.stderr
    assert "PASS" in judged.stdout and f"same from cached eval {record['id']}" in judged.stderr

    # Items the baseline was asked otherwise (lm-eval sends a multi-turn document's last user
    # turn only, and renders fields HF datasets rewrote): per item, its prompt_hash against
    # ours. Answers to other questions do not pair: exit 2, unless said to be on purpose.
    import hashlib
    import shutil

    otherwise = tmp_path / "asked-otherwise"
    shutil.copytree(baseline_dir, otherwise)
    [samples] = otherwise.glob("samples_*.jsonl")
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    for row in rows[:3]:  # lm-eval's file shape: no `prompt`, the context in arguments.gen_args_0.arg_0
        asked = "Question: " + row["doc"]["question"] + "\nAnswer:"
        del row["prompt"]
        row["arguments"] = {"gen_args_0": {"arg_0": asked, "arg_1": {"until": ["\n"]}}}
        row["prompt_hash"] = hashlib.sha256(asked.encode()).hexdigest()
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    refused = check("--baseline", str(otherwise), "--candidate", "same", "--limit", "8")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    [line] = refused.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: --baseline: 3 of 8 items of task words were asked other prompts than the candidate "
                           f"gets, e.g. {rows[0]['arguments']['gen_args_0']['arg_0']!r} where"), line
    assert "--allow-other-prompts" in line
    allowed = check("--baseline", str(otherwise), "--candidate", "same", "--limit", "8", "--allow-other-prompts")
    assert allowed.returncode == 0 and "PASS" in allowed.stdout, allowed.stdout + allowed.stderr

    # The same task name over other documents: nothing pairs.
    other = tmp_path / "other"
    other.mkdir()
    (other / "results_2026-01-01T00-00-00.json").write_text(json.dumps(
        {"results": {"words": {"rouge_l,none": 0.5}}, "higher_is_better": {"words": {"rouge_l": True}}}))
    (other / "samples_words_2026-01-01T00-00-00.jsonl").write_text(
        "".join(json.dumps({"doc_id": i, "doc_hash": f"h{i}", "rouge_l": 0.5}) + "\n" for i in range(5)))
    unpaired = check("--baseline", str(other), "--candidate", "same", "--limit", "8")
    assert unpaired.returncode == 2
    assert "no items scored by both runs" in unpaired.stdout
    assert unpaired.stderr.strip().splitlines()[-1].startswith("error: words: rouge_l: no items scored by both runs")

    # lm-eval takes its chat options as run flags, not from the task: a baseline asked through
    # a chat template, gated on a task asked without one, was scored on other prompts (a chat
    # task run without --apply_chat_template scored a chat-trained baseline 0: every candidate
    # "passed"). Exit 2, saying which flags.
    (other / "results_2026-01-01T00-00-00.json").write_text(json.dumps(
        {"results": {"words": {"rouge_l,none": 0.5}}, "higher_is_better": {"words": {"rouge_l": True}},
         "chat_template": "{{ messages }}", "system_instruction": None}))
    asked = check("--baseline", str(other), "--candidate", "same", "--limit", "8")
    assert asked.returncode == 2 and asked.stderr.strip().splitlines() == [
        "error: --baseline: lm-eval asked task words other prompts than the candidate gets: apply_chat_template=True "
        "(the task: False); run lm_eval without --apply_chat_template and --system_instruction (arena task export "
        "prints the command)"], asked.stderr


# --- the CLI's task commands -----------------------------------------------------------------------


def test_task_from_data_export_and_validate(settings, arena_setup, tmp_path):
    made = arena(settings, "task", "from-data", "words", "--out", "words.yaml", "--metrics", "rouge_l,exact_match",
                 cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "24 documents" in made.stdout
    task = load_task(tmp_path / "words.yaml")
    assert task.dataset == "words@1:test" and [m.metric for m in task.metrics] == ["rouge_l", "exact_match"]

    exported = arena(settings, "task", "export", "words.yaml", "--format", "lm-eval", "--out", "lm", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert "lm-eval lacks rouge_l" in exported.stdout
    # The command it prints asks the prompts as we do: lm-eval takes the chat options as flags.
    assert "run: lm_eval --model hf --model_args pretrained=BASE,peft=ADAPTER --tasks words --include_path lm " \
           "--apply_chat_template --log_samples --output_path RESULTS_DIR" in exported.stdout, exported.stdout
    docs = [json.loads(line) for line in (tmp_path / "lm" / "words.jsonl").read_text().splitlines()]
    assert len(docs) == 24 and docs[0]["prompt"].endswith("Assistant:") and docs[0]["answer"].startswith("The second")
    again = load_task(tmp_path / "lm" / "words.yaml")  # our loader reads lm-eval's spelling back
    assert [m.metric for m in again.metrics] == ["rouge_l", "exact_match"]

    ok = arena(settings, "task", "validate", "words.yaml", cwd=tmp_path)
    assert ok.returncode == 0 and ok.stdout.startswith("ok: task words: 24 documents")
    (tmp_path / "bad.yaml").write_text("task: words\ndataset: words@1:test\ndoc_to_target: '{{answer}'\n")
    bad = arena(settings, "task", "validate", "bad.yaml", cwd=tmp_path)
    assert bad.returncode == 1
    assert "bad.yaml:3: field 'doc_to_target': template syntax error" in bad.stderr
    missing = arena(settings, "task", "from-data", "words@7", cwd=tmp_path)
    assert missing.returncode == 1 and "versions 1..1, not 7" in missing.stderr
    # A task file, or its documents, saved in a Chinese code page: one line naming where it
    # stops being UTF-8 and what it reads as, never a traceback.
    (tmp_path / "gbk.yaml").write_bytes("task: 城市问答\ndataset: docs.jsonl\n".encode("gb18030"))
    (tmp_path / "big5.yaml").write_text("task: t\ndataset: docs.jsonl\ndoc_to_text: '{{q}}'\ndoc_to_target: '{{a}}'\n")
    (tmp_path / "docs.jsonl").write_bytes(json.dumps({"q": "陳靜住在哪個城市？", "a": "蘇州"}, ensure_ascii=False).encode("big5") + b"\n")
    for task_file, where, encoding in (("gbk.yaml", "gbk.yaml", "gb18030"), ("big5.yaml", "docs.jsonl", "big5")):
        for command in (("task", "validate", task_file), ("task", "export", task_file, "--out", "x"),
                        ("eval", "--candidate", "good", "--task", task_file)):
            done = arena(settings, *command, cwd=tmp_path)
            assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
            assert done.stderr.count("\n") == 1 and f"{where}: not UTF-8: byte" in done.stderr, done.stderr
            assert f"it reads as {encoding}: save it as UTF-8" in done.stderr, done.stderr


# --- the runner's model over the generation backend ----------------------------------------------


def test_backend_model_scores_choices_and_text_like_the_reference_backend(tiny_base, adapters):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evaluators.hf_backend import HFBackend
    from service.generation import InProcessBackend

    backend = InProcessBackend(device="cpu")
    backend.register("good", tiny_base, adapters["good"])
    backend.register("bad", tiny_base, adapters["bad"])
    reference_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), adapters["good"],
                                                adapter_name="good")
    reference_model.load_adapter(adapters["bad"], adapter_name="bad")
    reference = HFBackend(reference_model, AutoTokenizer.from_pretrained(tiny_base))
    docs = [{"q": "Which word comes second in: cat dog bird?", "choices": ["cat", "dog", "bird"], "gold": 1},
            {"q": "Which word comes second in: red box?", "choices": ["The second word is box.", "I do not know."],
             "gold": 0}]
    choice = TaskConfig(task="choice", dataset="x.jsonl", output_type="multiple_choice",
                        doc_to_text="User:{{q}}</s>\n Assistant:", doc_to_choice="choices", doc_to_target="gold")
    rolling = TaskConfig(task="text", dataset="x.jsonl", output_type="loglikelihood_rolling", doc_to_target="{{q}}")
    for task in (choice, rolling):
        ours = evaluate(task, docs, BackendModel(backend), ["good", "bad"])
        theirs = evaluate(task, docs, reference, ["good", "bad"])
        for name in ("good", "bad"):
            for a, b in zip(ours[name].samples, theirs[name].samples):
                assert a.response == b.response
                assert a.scores == pytest.approx(b.scores, rel=1e-4)

    class GenerateOnly:
        def generate(self, items):
            return []

    with pytest.raises(InvalidInput, match="cannot score log-likelihoods"):
        BackendModel(GenerateOnly()).loglikelihood([("good", "a", "b")])


def test_export_warns_that_lm_eval_asks_a_multi_turn_document_its_last_turn_only(settings, tmp_path):
    docs = [{"question": "And 3+3?", "answer": "6",
             "history": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]},
            {"question": "1+1?", "answer": "2", "history": []}]
    (tmp_path / "mt.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    write_task(tmp_path / "mt.yaml", task="mt", dataset="mt.jsonl", doc_to_text="{{question}}",
               doc_to_target="{{answer}}", apply_chat_template=True, doc_to_history="history")
    exported = arena(settings, "task", "export", "mt.yaml", "--out", "lm", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert exported.stderr.strip() == (
        "warning: 1 of 2 documents have earlier turns (history); lm-eval asks only the last user turn, so its "
        "scores on them are not ours (arena check refuses such a baseline)")


def test_a_few_shot_task_is_told_apart_from_a_multi_turn_one(settings, tmp_path):
    """lm-eval samples a few-shot task's examples itself (and, under --apply_chat_template,
    sends them as turns: fewshot_as_multiturn is its default there), so it never asks our
    prompts: the export says so, and the gate's refusal names the few-shot examples, not
    the history the task's documents do not have (found with the real lm-eval 0.4.13:
    24 of 24 prompts differed, blamed on "a multi-turn document's last user turn")."""
    from evaluators.gate_scores import MetricScores, TaskScores
    from service.cli.evals import CannotRun, _asked_alike

    docs = [{"question": f"{i}+{i}?", "answer": str(2 * i), "history": []} for i in range(4)]
    (tmp_path / "fs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    write_task(tmp_path / "fs.yaml", task="fs", dataset="fs.jsonl", doc_to_text="{{question}}",
               doc_to_target="{{answer}}", num_fewshot=2)
    exported = arena(settings, "task", "export", "fs.yaml", "--out", "lm", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert "lm-eval picks the 2 few-shot examples of each document its own way" in exported.stderr

    def scores(prompt):
        return TaskScores("fs", {"exact_match": MetricScores("exact_match", True, "mean", {"k": 1.0}, {})},
                          "exact_match", prompts={"k": (prompt, prompt)})

    task = load_task(tmp_path / "fs.yaml")
    with pytest.raises(CannotRun, match="lm-eval picks a 2-shot task's examples its own way; compare") as refused:
        _asked_alike(task, scores("theirs"), scores("ours"))
    assert "multi-turn" not in str(refused.value)


def test_the_gate_against_the_real_lm_eval_run_as_the_export_prints(settings, arena_setup, tiny_base, adapters,
                                                                     tmp_path):
    """The CI path with lm-eval itself: `arena task from-data` → `arena task export` → the
    `lm_eval` command it prints (hf + peft, the task's chat flags) → `arena check
    --baseline` on lm-eval's output. The same weights asked the same prompts answer the
    same: every item pairs (by content, after HF datasets rewrote the documents), every
    prompt_hash and every answer agrees, and the gate compares rather than refuses."""
    pytest.importorskip("lm_eval")
    import shlex
    import shutil

    made = arena(settings, "task", "from-data", "words", "--out", "words.yaml", "--metrics", "exact_match", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    exported = arena(settings, "task", "export", "words.yaml", "--out", "lm", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    [command] = [line[len("run: "):] for line in exported.stdout.splitlines() if line.startswith("run: ")]
    command = command.replace("BASE", str(tiny_base)).replace("ADAPTER", adapters["good"])
    argv = shlex.split(command.replace("RESULTS_DIR", str(tmp_path / "results")))
    argv[0] = str(Path(sys.executable).parent / "lm_eval")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_DATASETS_CACHE": str(tmp_path / "hf-datasets"), "OMP_NUM_THREADS": "1"}
    ran = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert ran.returncode == 0, ran.stderr[-3000:]
    [folder] = [p for p in (tmp_path / "results").iterdir() if p.is_dir()]

    def check(baseline, *more):
        return arena(settings, "check", "--baseline", str(baseline), "--candidate", "good", "--task", "words.yaml",
                     "--margin", "0.5", *more, cwd=tmp_path)

    gated = check(folder, "--json")
    assert gated.returncode == 0, gated.stdout + gated.stderr
    [verdict] = json.loads(gated.stdout)["verdicts"]
    assert verdict["n_paired"] == 24 and verdict["baseline"] == verdict["candidate"] and verdict["discordant"] == [0, 0]
    # Item by item: the same prompt sent (lm-eval's prompt_hash) and the same answer.
    [theirs_file] = folder.glob("samples_words_*.jsonl")
    theirs = {doc_key(r["doc"]): r for r in map(json.loads, theirs_file.read_text().splitlines())}
    [ours_file] = settings.data_dir.glob("evals/*/good/samples_words_*.jsonl")
    ours = {doc_key(r["doc"]): r for r in map(json.loads, ours_file.read_text().splitlines())}
    assert theirs.keys() == ours.keys() and len(ours) == 24
    assert all(theirs[k]["prompt_hash"] == ours[k]["prompt_hash"] for k in ours)
    assert all(theirs[k]["filtered_resps"][0] == ours[k]["response"] for k in ours)
    # Another model's run beside it under the same output path: which one is the baseline?
    shutil.copytree(folder, folder.parent / "another__model")
    both = check(folder.parent)
    assert both.returncode == 2 and "holds the runs of 2 models" in both.stderr, both.stderr
