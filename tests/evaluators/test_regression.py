"""The regression gate: paired tests, Holm, verdicts, exit codes, JUnit, lm-eval baselines."""

import json
import math
import xml.etree.ElementTree as ET

import msgspec
import numpy as np
import pytest
from scipy import optimize, stats

from evaluators.gate_scores import MetricScores, TaskScores, doc_key, load_lm_eval_results, scores_from_result
from evaluators.regression import (
    compare,
    compare_metric,
    exit_code,
    holm,
    mcnemar_exact,
    tango_ci,
    tango_z,
    verdicts_json,
    write_json,
    write_junit,
)


def binary_scores(values, metric="exact_match", keys=None, higher=True):
    keys = keys or [f"h{i}" for i in range(len(values))]
    return MetricScores(metric, higher, "mean", {k: float(v) for k, v in zip(keys, values)})


def task_scores(task, scores):
    return TaskScores(task, {scores.metric: scores}, scores.metric)


def paired(b, c, both_right, both_wrong):
    """Baseline and candidate 0/1 scores with b pairs (1, 0), c pairs (0, 1)."""
    base = [1] * b + [0] * c + [1] * both_right + [0] * both_wrong
    cand = [0] * b + [1] * c + [1] * both_right + [0] * both_wrong
    return binary_scores(base), binary_scores(cand)


def test_mcnemar_exact_is_a_binomial_test_on_discordant_pairs():
    # b = 2, c = 10: two-sided p = 2 * P(X <= 2), X ~ Bin(12, 1/2) = 2 * (1 + 12 + 66) / 4096
    assert mcnemar_exact(2, 10) == pytest.approx(158 / 4096)
    assert mcnemar_exact(0, 0) == 1.0


def test_tango_reduces_to_mcnemar_and_uses_the_constrained_mle():
    assert tango_z(10, 20, 100, 0.0) == pytest.approx(10 / math.sqrt(30))
    # Against a brute-force constrained maximum likelihood of P(only baseline right).
    for b, c, n, d0 in [(10, 20, 100, -0.05), (3, 0, 40, -0.1), (0, 0, 50, -0.02), (7, 2, 30, 0.1)]:
        def neg_loglik(x):
            return -(b * np.log(x) + c * np.log(x + d0) + (n - b - c) * np.log(1 - 2 * x - d0))
        lo, hi = max(0.0, -d0) + 1e-12, (1 - d0) / 2 - 1e-12
        x = optimize.minimize_scalar(neg_loglik, bounds=(lo, hi), method="bounded",
                                     options={"xatol": 1e-12}).x if b or c else max(0.0, -d0)
        expected = (c - b - n * d0) / math.sqrt(n * (2 * x + d0 - d0 ** 2))
        assert tango_z(b, c, n, d0) == pytest.approx(expected, rel=1e-5)


def test_tango_interval_inverts_the_test():
    lo, hi = tango_ci(10, 20, 100, 0.05)
    z = stats.norm.ppf(0.975)
    assert lo < 0.1 < hi
    assert tango_z(10, 20, 100, lo) == pytest.approx(z, abs=1e-6)
    assert tango_z(10, 20, 100, hi) == pytest.approx(-z, abs=1e-6)
    lo, hi = tango_ci(0, 0, 50, 0.05)  # no discordant pairs: still an interval around 0
    assert lo < 0 < hi and lo == pytest.approx(-hi)


def test_holm_adjusts_step_down():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5]) == pytest.approx([0.5])


def test_clearly_worse_candidate_is_a_regression():
    base, cand = paired(b=40, c=2, both_right=50, both_wrong=8)
    verdict = compare({"qa": task_scores("qa", base)}, {"qa": task_scores("qa", cand)})[0]
    assert verdict.status == "regression" and verdict.significant_decrease
    assert verdict.diff == pytest.approx(-0.38) and verdict.ci_high < 0
    assert verdict.discordant == [40, 2] and verdict.test.startswith("tango_score")
    assert verdict.p_decrease == pytest.approx(mcnemar_exact(40, 2))
    assert "not shown to be within margin" in verdict.reason
    assert exit_code([verdict]) == 1


def test_equal_candidate_passes_given_enough_items():
    base, cand = paired(b=5, c=5, both_right=150, both_wrong=40)
    verdict = compare({"qa": task_scores("qa", base)}, {"qa": task_scores("qa", cand)}, default_margin=0.05)[0]
    assert verdict.status == "pass" and not verdict.significant_decrease
    assert verdict.diff == 0.0 and verdict.ci_low > -0.05
    assert exit_code([verdict]) == 0


def test_non_inferiority_needs_evidence_not_just_no_decrease():
    # Identical on 10 items: nothing got worse, but 10 items cannot show it is within 0.05.
    base, cand = paired(b=0, c=0, both_right=6, both_wrong=4)
    verdict = compare({"qa": task_scores("qa", base)}, {"qa": task_scores("qa", cand)}, default_margin=0.05)[0]
    assert verdict.status == "regression" and not verdict.significant_decrease
    assert verdict.ci_low < -0.05


def test_holm_correction_can_turn_a_pass_into_a_regression():
    # Find a table whose non-inferiority p lies in (0.025 / 3, 0.025): passes alone, fails among 3.
    table = next((b, c) for b in range(1, 30) for c in range(0, 30)
                 if 0.025 / 3 < stats.norm.sf(tango_z(b, c, 200, -0.05)) < 0.02)
    base, cand = paired(*table, both_right=120, both_wrong=200 - 120 - sum(table))
    alone = compare_metric("qa", base, cand, margin=0.05)
    assert alone.status == "pass"
    tasks = {t: task_scores(t, base) for t in ("a", "b", "c")}
    verdicts = compare(tasks, {t: task_scores(t, cand) for t in tasks}, default_margin=0.05)
    assert all(v.status == "regression" for v in verdicts)
    assert verdicts[0].p_adjusted == pytest.approx(3 * alone.p_value)


def test_paired_bootstrap_for_continuous_scores():
    rng = np.random.default_rng(1)
    base_values = rng.uniform(0.2, 0.9, size=300)
    shifted = np.clip(base_values + 0.1 + rng.normal(0, 0.02, size=300), 0, 1)
    keys = [f"h{i}" for i in range(300)]
    base = MetricScores("token_f1", True, "mean", dict(zip(keys, base_values)))
    better = MetricScores("token_f1", True, "mean", dict(zip(keys, shifted)))
    worse = MetricScores("token_f1", True, "mean", dict(zip(keys, base_values - 0.1)))
    up = compare_metric("f1", base, better, margin=0.02, seed=3)
    assert up.status == "pass" and up.test.startswith("paired_bootstrap")
    assert up.ci_low < float(np.mean(shifted - base_values)) < up.ci_high and up.ci_low > 0.09
    assert up.effect_size > 2  # Cohen's d_z: a consistent shift
    assert compare_metric("f1", base, better, margin=0.02, seed=3).ci_low == up.ci_low  # seeded
    down = compare_metric("f1", base, worse, margin=0.02, seed=3)
    assert down.status == "regression" and down.significant_decrease
    assert down.ci_low == pytest.approx(-0.1) and down.ci_high == pytest.approx(-0.1)


def test_lower_is_better_metrics_regress_upwards():
    rng = np.random.default_rng(2)
    lls = rng.normal(-40, 5, size=200)
    words = rng.integers(8, 12, size=200).astype(float)
    keys = [f"h{i}" for i in range(200)]

    def ppl(values):
        return MetricScores("word_perplexity", False, "weighted_perplexity", dict(zip(keys, values)),
                            dict(zip(keys, words)))

    base = ppl(lls)
    worse = compare_metric("lm", base, ppl(lls - 2.0), margin=0.5)  # lower loglikelihood: higher ppl
    better = compare_metric("lm", base, ppl(lls + 2.0), margin=0.5)
    assert worse.diff > 0 and worse.status == "regression" and worse.significant_decrease
    assert better.diff < 0 and better.status == "pass"
    assert better.effect_size_kind == "relative_change" and better.effect_size < 0


def test_items_are_joined_by_hash_and_missing_ones_reported():
    base = binary_scores([1, 1, 0, 1], keys=["a", "b", "c", "d"])
    cand = binary_scores([1, 0, 1, 1], keys=["b", "c", "d", "e"])
    verdict = compare_metric("qa", base, cand, margin=0.1)
    assert verdict.n_paired == 3
    assert verdict.missing_in_candidate == ["a"] and verdict.missing_in_baseline == ["e"]
    assert verdict.baseline == pytest.approx(2 / 3) and verdict.candidate == pytest.approx(2 / 3)
    assert "1 baseline items missing in candidate" in verdict.reason


def test_what_cannot_be_compared_exits_2():
    base = task_scores("qa", binary_scores([1, 0]))
    verdicts = compare({"qa": base, "math": base}, {"qa": task_scores("qa", binary_scores([1, 1], keys=["x", "y"]))})
    assert [v.status for v in verdicts] == ["error", "error"]
    assert "no items scored by both runs" in verdicts[0].reason
    assert verdicts[1].reason == "task 'math' missing in candidate results"
    assert exit_code(verdicts) == 2 and exit_code([]) == 2
    # An lm-eval baseline lacks our own metrics: the reason names one both runs have.
    em, f1 = binary_scores([1, 0]), MetricScores("token_f1", True, "mean", {"h0": 1.0, "h1": 0.5})
    ours = TaskScores("qa", {"token_f1": f1, "exact_match": em}, "token_f1")
    verdict = compare({"qa": task_scores("qa", em)}, {"qa": ours})[0]
    assert verdict.reason == ("metric 'token_f1' missing in baseline results (has: exact_match); "
                              "gate on a metric both have with --metric exact_match")


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_score_that_is_not_a_number_cannot_gate(bad):
    """One NaN (lm-eval writes bare NaN; a perplexity over an empty text is one) made every
    bootstrap round NaN and `arena check` an IndexError traceback with exit 1, which CI reads
    as a regression. It is exit 2, naming the metric and an item."""
    keys = [f"h{i}" for i in range(16)]
    values = [0.5 + 0.01 * i for i in range(16)]
    base = MetricScores("byte_perplexity", False, "mean", dict(zip(keys, values)))
    nan_one = MetricScores("byte_perplexity", False, "mean", {**dict(zip(keys, values)), "h3": bad})
    for b, c, side in ((nan_one, base, "baseline"), (base, nan_one, "candidate")):
        verdict = compare_metric("ppl", b, c, margin=0.0, seed=0)
        assert verdict.status == "error" and exit_code([verdict]) == 2
        assert f"the {side} has no finite score on 1 of 16 paired items" in verdict.reason and "h3" in verdict.reason


def test_junit_and_json_reports(tmp_path):
    bad_base, bad_cand = paired(b=40, c=2, both_right=50, both_wrong=8)
    ok_base, ok_cand = paired(b=3, c=3, both_right=150, both_wrong=44)
    verdicts = compare(
        {"qa": task_scores("qa", bad_base), "math": task_scores("math", ok_base), "gone": task_scores("gone", ok_base)},
        {"qa": task_scores("qa", bad_cand), "math": task_scores("math", ok_cand)},
        default_margin=0.05,
    )
    suite = ET.parse(write_junit(verdicts, tmp_path / "check.xml")).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "1")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert cases["qa"].find("failure").get("type") == "regression"
    assert cases["math"].find("failure") is None and cases["math"].find("error") is None
    assert cases["gone"].find("error").get("type") == "could_not_run"
    assert json.loads(cases["math"].find("system-out").text)["status"] == "pass"

    report = json.loads(write_json(verdicts, tmp_path / "check.json").read_text())
    assert report["exit_code"] == 1 and report["status"] == "regression"
    assert report["verdicts"][2]["diff"] is None  # NaN becomes null: strict JSON
    assert verdicts_json(verdicts)["verdicts"][0]["task"] == "qa"


def write_lm_eval_run(root, stamp, rows, task="qa", higher=None, model="model__name", model_args="pretrained=m"):
    run = root / model
    run.mkdir(parents=True, exist_ok=True)
    results = {"results": {task: {"alias": task, "exact_match,none": 0.5, "exact_match_stderr,none": 0.1}},
               "higher_is_better": {task: higher or {"exact_match": True}},
               "n-samples": {task: {"original": len(rows), "effective": len(rows)}},
               "config": {"model": "hf", "model_args": model_args}}
    (run / f"results_{stamp}.json").write_text(json.dumps(results))
    with (run / f"samples_{task}_{stamp}.jsonl").open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def lm_eval_row(doc_id, value, filter_name="none", **extra):
    return {"doc_id": doc_id, "doc": {"q": doc_id}, "target": "x", "arguments": [], "resps": [["x"]],
            "filtered_resps": ["x"], "filter": filter_name, "metrics": ["exact_match", *extra],
            "doc_hash": f"hash{doc_id}", "prompt_hash": "p", "target_hash": "t", "exact_match": value, **extra}


def test_load_lm_eval_results_reads_the_newest_samples_per_task(tmp_path):
    write_lm_eval_run(tmp_path, "2024-01-01T10-00-00.000001", [lm_eval_row(0, 0.0), lm_eval_row(1, 0.0)])
    write_lm_eval_run(tmp_path, "2024-05-02T10-00-00.000001",
                      [lm_eval_row(i, float(i % 2), word_perplexity=[-10.0 - i, 4]) for i in range(4)])
    baseline = load_lm_eval_results(tmp_path)
    qa = baseline["qa"]
    assert qa.primary_metric == "exact_match"
    key = [doc_key({"q": i}) for i in range(4)]
    assert qa.metrics["exact_match"].values == {key[0]: 0.0, key[1]: 1.0, key[2]: 0.0, key[3]: 1.0}
    ppl = qa.metrics["word_perplexity"]
    assert ppl.aggregation == "weighted_perplexity" and not ppl.higher_is_better
    assert ppl.values[key[2]] == -12.0 and ppl.weights[key[2]] == 4.0


def test_load_lm_eval_results_chooses_a_filter(tmp_path):
    rows = [lm_eval_row(0, 1.0, "strict-match"), lm_eval_row(0, 0.0, "flexible-extract")]
    write_lm_eval_run(tmp_path, "2024-01-01T10-00-00.000001", rows)
    with pytest.raises(ValueError, match="filter 'none' not found; filters in file: flexible-extract, strict-match"):
        load_lm_eval_results(tmp_path)
    assert load_lm_eval_results(tmp_path, "strict-match")["qa"].metrics["exact_match"].values == {doc_key({"q": 0}): 1.0}


def test_a_folder_with_several_models_runs_is_refused(tmp_path):
    """lm-eval writes each model into <output_path>/<model>/. A CI job that writes the
    baseline and then the candidate under one path must not have the candidate (the
    newest run) gated against itself."""
    write_lm_eval_run(tmp_path, "2024-01-01T10-00-00.000001", [lm_eval_row(0, 1.0)], model="base")
    write_lm_eval_run(tmp_path, "2024-01-02T10-00-00.000001", [lm_eval_row(0, 0.0)], model="cand",
                      model_args="pretrained=m,peft=cand")
    with pytest.raises(ValueError, match=r"holds the runs of 2 models \(.*base, .*cand\): pass the folder"):
        load_lm_eval_results(tmp_path)
    assert load_lm_eval_results(tmp_path / "base")["qa"].metrics["exact_match"].values == {doc_key({"q": 0}): 1.0}
    # Two models' runs in one folder (written with --output_path DIR/results.json by hand).
    write_lm_eval_run(tmp_path, "2024-01-03T10-00-00.000001", [lm_eval_row(0, 0.0)], model="base",
                      model_args="pretrained=m,peft=cand")
    with pytest.raises(ValueError, match="runs of task qa by 2 different models"):
        load_lm_eval_results(tmp_path / "base")


def test_a_results_file_with_null_members_reads_as_without_them(tmp_path):
    write_lm_eval_run(tmp_path, "2024-01-01T10-00-00.000001", [lm_eval_row(0, 1.0)])
    [results] = (tmp_path / "model__name").glob("results_*.json")
    results.write_text(json.dumps({"results": None, "higher_is_better": None, "config": None}))
    assert load_lm_eval_results(tmp_path)["qa"].metrics["exact_match"].values == {doc_key({"q": 0}): 1.0}


def test_a_rerun_of_the_same_model_takes_the_newest_and_its_own_results(tmp_path):
    write_lm_eval_run(tmp_path, "2024-01-01T10-00-00.000001", [lm_eval_row(0, 1.0)])
    write_lm_eval_run(tmp_path, "2024-01-02T10-00-00.000001", [lm_eval_row(0, 0.0)])
    newer = json.loads(next((tmp_path / "model__name").glob("results_2024-01-02*")).read_text())
    newer.update(chat_template="{{x}}", system_instruction="Be brief.")
    next((tmp_path / "model__name").glob("results_2024-01-02*")).write_text(json.dumps(newer))
    qa = load_lm_eval_results(tmp_path)["qa"]
    assert qa.metrics["exact_match"].values == {doc_key({"q": 0}): 0.0}
    assert qa.asked == {"apply_chat_template": True, "system_instruction": "Be brief."}


@pytest.mark.parametrize("results, line, error", [
    ([1, 2], None, "not an lm-eval results file"),
    ({"results": {"qa": 0.5}}, None, "'results' maps each task to an object"),
    ({"results": {}, "config": "x"}, None, "not an lm-eval results file"),
    ({"results": {}}, "[1, 2]", r"samples_qa_2024.*:1: not an lm-eval sample"),
    ({"results": {}}, '{"doc_id": 0, "exact_match": 1}', r":1: not an lm-eval sample \(expected an object with 'doc'"),
    ({"results": {}}, '{"doc": {"q": 1}, "filter": 3, "exact_match": 1}', "'filter' is not a string"),
    ({"results": {}}, '{"doc": {"q": 1}, "metrics": 7, "x": "y"}', "no per-sample metric values"),
    # Falsy values of another shape are not empty objects (they were an AttributeError).
    ({"results": []}, None, "not an lm-eval results file"),
    ({"results": False}, None, "not an lm-eval results file"),
    # Nested past Python's recursion limit: in json.loads, or in doc_key after it.
    ({"results": {}}, '{"doc": {"q": ' + "[" * 100000 + "]" * 100000 + "}}", r":1: nested too deeply"),
    ({"results": {}}, '{"exact_match": 1, "doc": {"q": ' + "[" * 600 + "]" * 600 + "}}", "nested too deeply"),
])
def test_lm_eval_output_of_another_shape_is_an_error_naming_the_file(tmp_path, results, line, error):
    """What CI reads as exit 1 (a regression) must not come from a traceback: every shape
    the loader does not know is a ValueError (the CLI's exit 2) naming the file."""
    run = tmp_path / "m"
    run.mkdir()
    (run / "results_2024-01-01T10-00-00.000001.json").write_text(json.dumps(results))
    (run / "samples_qa_2024-01-01T10-00-00.000001.jsonl").write_text(
        (line or json.dumps(lm_eval_row(0, 1.0))) + "\n")
    with pytest.raises(ValueError, match=error):
        load_lm_eval_results(tmp_path)


def test_documents_pair_by_content_as_datasets_leaves_them():
    """HF datasets, which lm-eval reads the exported task with, makes documents one table:
    keys missing from a document become null, int columns holding a float become floats,
    keys follow the table's order. lm-eval's doc_hash then differs from ours; the content
    key does not."""
    ours = [{"question": "1+1", "answer": 2, "history": [{"role": "user", "content": "hi"}]},
            {"question": "half", "answer": 0.5}]
    theirs = [{"answer": 2.0, "history": [{"content": "hi", "role": "user"}], "question": "1+1"},
              {"answer": 0.5, "history": None, "question": "half"}]
    from evaluators.tasks import doc_hash

    assert [doc_hash(d) for d in ours] != [doc_hash(d) for d in theirs]
    assert [doc_key(d) for d in ours] == [doc_key(d) for d in theirs]
    assert doc_key({"a": 1}) != doc_key({"a": 1.5}) != doc_key({"a": "1"})


def test_a_runner_result_written_to_disk_is_a_baseline(tmp_path):
    from evaluators.runner import evaluate
    from evaluators.tasks import MetricConfig, TaskConfig

    class Echo:
        def generate(self, requests):
            return [r.prompt[-1] if r.adapter == "v1" else "?" for r in requests]

    task = TaskConfig(task="last", dataset="d.jsonl", doc_to_text="{{w}}", doc_to_target="{{w[-1]}}",
                      metric_list=[MetricConfig("exact_match"), MetricConfig("chrf")])
    docs = [{"w": w} for w in ["cat", "dog", "emu", "cat"]]  # a repeated doc keeps both items
    results = evaluate(task, docs, Echo(), ["v1", "v2"])
    results["v1"].write(tmp_path / "v1")
    baseline = load_lm_eval_results(tmp_path / "v1")
    ours = scores_from_result(results["v1"]).metrics["exact_match"].values
    assert baseline["last"].metrics["exact_match"].values == ours
    assert baseline["last"].prompts == scores_from_result(results["v1"]).prompts  # the same prompt_hash, read back
    assert len(baseline["last"].metrics["exact_match"].values) == 4
    verdict = compare(baseline, {"last": scores_from_result(results["v2"])})[0]
    assert verdict.n_paired == 4 and verdict.diff == -1.0 and verdict.status == "regression"


def test_improved_only_when_the_exact_mcnemar_test_says_so():
    """8 items fixed, none broken: p = 2 / 2^8 — significantly better. 4 fixed: p = 0.125 —
    the gate passes but says the gain is not significant, and nothing is "improved"."""
    base, cand = paired(0, 8, 30, 2)
    [v] = compare({"t": task_scores("t", base)}, {"t": task_scores("t", cand)}, default_margin=0.1)
    assert v.significant_increase and not v.significant_decrease and v.p_decrease == pytest.approx(2 / 2**8)
    assert "significantly better than the baseline (exact McNemar" in v.reason
    base, cand = paired(0, 4, 34, 2)
    [v] = compare({"t": task_scores("t", base)}, {"t": task_scores("t", cand)}, default_margin=0.1)
    assert v.status == "pass" and not v.significant_increase and v.p_decrease == pytest.approx(0.125)
    assert "not a significant change (exact McNemar" in v.reason
    base, cand = paired(8, 0, 30, 2)
    [v] = compare({"t": task_scores("t", base)}, {"t": task_scores("t", cand)}, default_margin=0.1)
    assert v.significant_decrease and not v.significant_increase


def test_documents_pair_when_datasets_reads_date_strings_as_timestamps(tmp_path):
    """pyarrow's JSON reader (HF datasets, which lm-eval reads the exported task with)
    turns a column of ISO-8601 date strings into timestamps, and lm-eval logs them as
    `str(datetime)` ("2024-01-05" -> "2024-01-05 00:00:00", offsets moved to UTC). A
    document with such a field, used by its templates or not, must pair all the same."""
    datasets = pytest.importorskip("datasets")
    docs = [{"question": f"q{i}", "added": f"2024-01-{i + 1:02d}", "at": at, "maybe": m}
            for i, (at, m) in enumerate([("2024-01-05T10:00:00+02:00", "x"), ("2024-01-05 10:00", None),
                                         ("2024-01-05T10Z", "2024-02-30"), ("2024-01-05T10:00:00", "y")])]
    for d in docs:
        if d["maybe"] is None:
            del d["maybe"]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    table = datasets.load_dataset("json", data_files={"test": str(path)}, cache_dir=str(tmp_path / "cache"))["test"]
    assert str(table.features["added"].dtype).startswith("timestamp")  # what lm-eval then sees
    theirs = [json.loads(json.dumps(d, default=str)) for d in table]  # lm-eval's handle_non_serializable
    assert theirs[0]["added"] == "2024-01-01 00:00:00" and theirs[0]["at"] == "2024-01-05 08:00:00"
    assert [doc_key(d) for d in docs] == [doc_key(d) for d in theirs]
    # Strings pyarrow does not read as timestamps stay as they are.
    assert doc_key({"d": "2024-01-05T10:00:00.5"}) != doc_key({"d": "2024-01-05 10:00:00"})
    assert doc_key({"d": "2024-02-30"}) != doc_key({"d": "2024-03-01 00:00:00"})


def test_the_prompts_each_run_was_asked_are_read_per_item(tmp_path):
    """lm-eval logs `prompt_hash` (sha256 of the first request's context, written under
    arguments.gen_args_0.arg_0); ours logs the same hash of the prompt it sent. Items whose
    hashes differ were asked other questions."""
    import hashlib

    from evaluators.gate_scores import other_prompts

    def row(i, prompt):
        return {**lm_eval_row(i, 1.0), "arguments": {"gen_args_0": {"arg_0": prompt, "arg_1": {}}},
                "prompt_hash": hashlib.sha256(prompt.encode()).hexdigest()}

    write_lm_eval_run(tmp_path / "a", "2024-01-01T10-00-00.000001", [row(0, "User:q0"), row(1, "User:q1")])
    write_lm_eval_run(tmp_path / "b", "2024-01-01T10-00-00.000001", [row(0, "User:q0"), row(1, "q1 (last turn)")])
    a, b = load_lm_eval_results(tmp_path / "a")["qa"], load_lm_eval_results(tmp_path / "b")["qa"]
    assert a.prompts[doc_key({"q": 1})][1] == "User:q1"
    assert other_prompts(a, a) == [] and other_prompts(a, b) == [(doc_key({"q": 1}), "User:q1", "q1 (last turn)")]
    unlogged = msgspec.structs.replace(a, prompts={})
    assert other_prompts(unlogged, b) == []  # a run that did not log prompts says nothing
