"""No API answer carries an absolute server path: artifacts are named by ids, files under the
data dir as $ARENA_DATA_DIR/…, a base model's own directory by its name."""

from __future__ import annotations

import time

from service.bases import make_base
from service.domain import Candidate
from service.domain import JobRecord
from service.store import SyncStore
from tests.redis_fixtures import LiveServer


def test_answers_and_errors_name_artifacts_not_server_paths(settings, tmp_path, tiny_base):
    data = str(settings.data_dir)
    store = SyncStore(settings.redis_url, settings.key_prefix)
    outside = str(tiny_base)  # a base model's own directory, outside the data dir
    store.put_base(make_base("b", tiny_base, outside))
    adapter = settings.data_dir / "runs" / "run_0123456789abcdef" / "adapter"
    store.add_candidate(Candidate(name="c", base="b", dataset="d@1", dataset_id="0" * 16, run_id="run_0123456789abcdef",
                                  adapter_dir=str(adapter), config={}, metrics={}, created_at=time.time()))
    job = JobRecord(id="rep_0123456789abcdef", kind="trace", params={"candidate": "c"}, status="failed",
                    error=f"cannot read {data}/features/run_0123456789abcdef/x.npy",
                    result={"report_dir": f"{data}/reports/rep_0123456789abcdef",
                            "paths": {"html": f"{data}/reports/rep_0123456789abcdef/report.html"}})
    store._run(store.store.create_job(job))
    # An eval run from the CLI on a task file: its dataset is the user's file on the server.
    task_file = tmp_path / "private" / "facts.jsonl"
    store._run(store.store.create_job(JobRecord(id="eval_0123456789abcdef", kind="eval", status="queued",
                                                params={"dataset": str(task_file), "task_config": {"dataset": str(task_file)}})))
    store.close()
    srv = LiveServer(settings).start()
    try:
        admin = srv.client(admin=True)
        answers = [admin.get(u) for u in ("/api/candidates/c", "/api/candidates", "/api/jobs/rep_0123456789abcdef",
                                           "/api/reports/rep_0123456789abcdef", "/api/bases", "/reports/rep_0123456789abcdef",
                                           "/api/jobs", "/api/jobs/eval_0123456789abcdef")]
        for r in answers:
            assert r.status_code == 200, (r.url, r.text[:300])
            assert data not in r.text and outside not in r.text and str(task_file) not in r.text, (r.url, r.text[:500])
        assert '"dataset":"facts.jsonl"' in answers[-1].text.replace(" ", "")
        assert "$ARENA_DATA_DIR/runs/run_0123456789abcdef/adapter" in answers[0].text
        assert "$ARENA_DATA_DIR/reports/rep_0123456789abcdef" in answers[2].text
        assert f'"{tiny_base.name}"' in answers[4].text
        r = admin.post("/api/datasets", files={"file": ("x.jsonl", b"not json\n")}, data={"name": "x"})
        assert r.status_code == 422 and data not in r.text
    finally:
        srv.stop()
