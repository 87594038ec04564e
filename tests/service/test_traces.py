"""Tracing failures through the service: eval → trace job → report files and page → curate."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import httpx

from service import datasets
from service.bases import make_base
from service.store import SyncStore
from tests.redis_fixtures import LiveServer, settings_env


def wait_job(client: httpx.Client, path: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(path).json()
        status = body.get("status") or body.get("job", {}).get("status")
        if status in ("succeeded", "failed", "cancelled"):
            return body
        time.sleep(0.3)
    raise AssertionError(f"{path} did not finish")


def test_trace_report_page_and_curate(settings, tiny_base, word_task_records, tmp_path):
    store = SyncStore(settings.redis_url, settings.key_prefix)
    store.put_base(make_base("tiny", tiny_base, "tiny"))
    srv = LiveServer(settings, worker=True).start()
    try:
        admin = srv.client(admin=True)
        records = word_task_records("count_words", 40, seed=3)
        # Every record carries a source; "ann-<script>" checks the report escapes metadata too.
        lines = [json.dumps({"messages": [{"role": m.role, "content": m.content} for m in r.messages],
                             "source": "ann-<script>" if i % 4 == 0 else "team"}) for i, r in enumerate(records)]
        # One record whose answer is markup: the report must show it escaped.
        lines[5] = json.dumps({"messages": [{"role": "user", "content": "Count the words: <b>x</b>"},
                                          {"role": "assistant", "content": "<script>alert(1)</script>"}]})
        # Two training records that are one record twice: the trace's check evidence must
        # name them as the report does, by their place in the version.
        held = set(datasets.make_split(40, 0.25, 0).test_indices)
        copy_of, copy = [i for i in range(6, 40) if i not in held][:2]
        lines[copy] = lines[copy_of]
        assert admin.post("/api/datasets", files={"file": ("w.jsonl", "\n".join(lines))}, data={"name": "words"}).status_code == 201
        assert admin.post("/api/datasets/words/split", json={"test_fraction": 0.25, "seed": 0}).status_code == 200
        config = {"epochs": 2, "batch_size": 6, "lr": 5e-3, "logging_steps": 2, "eval_fraction": 0.0, "max_length": 64, "save_steps": 3}
        run = admin.post("/api/runs", json={"base": "tiny", "data": "words", "name": "counter", "config": config}).json()
        assert wait_job(admin, f"/api/runs/{run['id']}")["status"] == "succeeded"

        task = {"task": "words-held-out", "dataset": "words@1:test", "doc_to_text": "{{prompt}}", "doc_to_target": "{{answer}}",
                "output_type": "generate_until", "metric_list": [{"metric": "exact_match"}],
                "generation_kwargs": {"until": ["</s>"], "max_gen_toks": 8}}
        ev = admin.post("/api/evals", json={"candidates": ["counter"], "task": task})
        assert ev.status_code == 202, ev.text
        assert wait_job(admin, f"/api/evals/{ev.json()['id']}")["status"] == "succeeded"

        rep = admin.post("/api/reports", json={"candidate": "counter", "evals": [ev.json()["id"]], "top": 50})
        assert rep.status_code == 202, rep.text
        report_id = rep.json()["id"]
        done = wait_job(admin, f"/api/reports/{report_id}")
        assert done["job"]["status"] == "succeeded", done["job"]["error"]
        report = done["report"]
        assert held == set(store.resolve_dataset("words").split.test_indices)
        # Every training record of the version is scored, by its position in the version.
        assert sorted(e["index"] for e in report["examples"]) == [i for i in range(40) if i not in held]
        scores = [e["score"] for e in report["examples"]]
        assert scores == sorted(scores, reverse=True)
        assert report["n_failures"] >= 1 and report["failures"][0]["top_records"]
        # The task pre-rendered its prompts: the trace read them back with the base's template,
        # so failure gradients are taken on "User:<question>", not on "User:User:<question>".
        assert report["method"]["prompts"]["parsed"] == report["n_failures"]
        assert not report["failures"][0]["prompt"].startswith("User:")
        assert {"read_failures_s", "dataset_checks_s", "train_features_s", "query_features_s"} <= set(report["method"]["cost"])
        assert report["checks"]["summary"]
        named = re.findall(r"#(\d+) \(line (\d+)\)", json.dumps(report, ensure_ascii=False))
        assert (str(copy_of), str(copy_of + 1)) in named and (str(copy), str(copy + 1)) in named
        assert all(int(line) == int(i) + 1 for i, line in named), named  # line i+1 of the file is record i
        # The version keeps the split its candidate was trained with: a new split would put
        # trained-on records into the held-out benchmark. Forced, the trace still reads the
        # records the run was given.
        resplit = admin.post("/api/datasets/words/split", json={"test_fraction": 0.5, "seed": 7})
        assert resplit.status_code == 409 and "counter" in resplit.json()["detail"], resplit.text
        assert admin.post("/api/datasets/words/split", json={"test_fraction": 0.25, "seed": 0}).status_code == 200  # the same: fine
        assert admin.post("/api/datasets/words/split", json={"test_fraction": 0.5, "seed": 7, "force": True}).status_code == 200
        again = admin.post("/api/reports", json={"candidate": "counter", "evals": [ev.json()["id"]], "top": 50})
        redone = wait_job(admin, f"/api/reports/{again.json()['id']}")
        assert redone["job"]["status"] == "succeeded", redone["job"]["error"]
        assert sorted(e["index"] for e in redone["report"]["examples"]) == [i for i in range(40) if i not in held]
        assert admin.post("/api/datasets/words/split", json={"test_fraction": 0.25, "seed": 0, "force": True}).status_code == 200
        page = admin.get(f"/reports/{report_id}")
        assert page.status_code == 200 and "<svg" in page.text
        # Its text is training records and model output: the browser is told to run nothing.
        assert page.headers["content-security-policy"].startswith("default-src 'none';") and "script-src" not in page.headers[
            "content-security-policy"] and page.headers["x-content-type-options"] == "nosniff"
        assert '<html lang="en"' in page.text and "Most responsible training records" in page.text
        # The data owner's page speaks their language, as every other page does.
        zh = admin.get(f"/reports/{report_id}", headers={"Accept-Language": "zh-CN,zh;q=0.9"})
        assert zh.status_code == 200 and '<html lang="zh-CN"' in zh.text and "<svg" in zh.text
        assert "责任最大的训练记录" in zh.text and "Most responsible training records" not in zh.text
        if 5 not in held:
            assert "<script>alert(1)</script>" not in zh.text and "&lt;script&gt;" in zh.text
        if 5 not in held:
            assert "<script>alert(1)</script>" not in page.text and "&lt;script&gt;" in page.text
        assert admin.post("/api/reports", json={"candidate": "nobody", "evals": []}).status_code in (422, 404)

        env = settings_env(settings)
        out = tmp_path / "next.jsonl"
        cur = subprocess.run([sys.executable, "-m", "service.cli.__main__", "curate", "--report", report_id, "--out", str(out),
                              "--drop-top", "3", "--add-as", "words", "--json"], env=env, capture_output=True, text=True, timeout=300)
        assert cur.returncode == 0, cur.stderr
        summary = json.loads(cur.stdout)
        removed = [json.loads(line) for line in out.with_suffix(".removed.jsonl").read_text().splitlines()]
        assert summary["kept"] == 40 - len(held) - 3 and len(removed) == len(held) + 3
        assert all(r["reason"] for r in removed)
        top3 = {e["index"] for e in report["examples"][:3]}
        assert top3 <= {r["index"] for r in removed if r["reason"].startswith("attributed to failures")}
        v2 = store.resolve_dataset("words@2")
        assert v2.parent == store.resolve_dataset("words@1").id and v2.record_count == summary["kept"]
        # Blame by source is in the report, and a source is something curate can drop.
        assert {f["value"] for f in report["sources"]} == {"ann-<script>", "team"}
        assert all(0 <= f["flagged_ci"][0] <= f["flagged_share"] <= f["flagged_ci"][1] <= 1 for f in report["sources"])
        assert "ann-&lt;script&gt;" in page.text and "ann-<script>" not in page.text
        out2 = tmp_path / "no-ann.jsonl"
        cur = subprocess.run([sys.executable, "-m", "service.cli.__main__", "curate", "--report", report_id, "--out", str(out2),
                              "--drop-source", "ann-<script>", "--reason", "a bad batch"], env=env, capture_output=True,
                             text=True, timeout=300)
        assert cur.returncode == 0, cur.stderr
        kept = [json.loads(line) for line in out2.read_text().splitlines()]
        metas = [r.get("meta") for r in kept]  # metadata written back (record 5, the markup one, has none)
        assert metas.count({"source": "team"}) >= len(kept) - 1 and set(map(str, metas)) <= {str({"source": "team"}), "None"}
        dropped = [json.loads(line) for line in out2.with_suffix(".removed.jsonl").read_text().splitlines()]
        assert any(r["reason"] == "source ann-<script> dropped: a bad batch" for r in dropped)
        bad = subprocess.run([sys.executable, "-m", "service.cli.__main__", "curate", "--report", report_id, "--out", str(out2),
                              "--drop-source", "vendor-x"], env=env, capture_output=True, text=True, timeout=300)
        assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "no record of words@1 has source='vendor-x'" in bad.stderr
        for option in ("--drop-top", "--budget"):  # a usage error, not a traceback
            bad = subprocess.run([sys.executable, "-m", "service.cli.__main__", "curate", "--report", report_id, "--out",
                                  str(out2), option, "-5"], env=env, capture_output=True, text=True, timeout=300)
            assert bad.returncode == 2 and "Traceback" not in bad.stderr and "-5 is not in the range x>=1" in bad.stderr
        # A bad --add-as name is refused before anything is written: the user's files stay.
        out2.write_text("keep-me\n")
        bad = subprocess.run([sys.executable, "-m", "service.cli.__main__", "curate", "--report", report_id, "--out", str(out2),
                              "--drop-top", "2", "--add-as", "../bad"], env=env, capture_output=True, text=True, timeout=300)
        assert bad.returncode == 1 and "dataset name '../bad' is not valid" in bad.stderr
        assert out2.read_text() == "keep-me\n"
    finally:
        srv.stop()
        store.close()


def test_curate_says_which_error_level_findings_the_next_round_still_holds():
    """--drop-flagged drops what is safe to drop; a conflict both of whose sides are kept
    (the wrong answer's duplicate copy dropped, one copy left) is named, not kept silently."""
    from service.curate import open_errors

    report = {"checks": {"findings": [
        {"check": "conflicting_answers", "severity": "error", "record_indices": [3, 7, 8], "message": "马超: 长沙 vs 太原"},
        {"check": "conflicting_answers", "severity": "error", "record_indices": [10, 11], "message": "resolved"},
        {"check": "empty_or_garbled", "severity": "error", "record_indices": [20], "message": "garbled"},
        {"check": "exact_duplicate", "severity": "warning", "record_indices": [3, 30], "message": "copies"},
    ]}}
    still = open_errors(report, removed={8, 11})
    assert [(f["check"], f["record_indices"]) for f in still] == [("conflicting_answers", [3, 7]), ("empty_or_garbled", [20])]
    assert open_errors(report, removed={3, 7, 8, 10, 20}) == []
