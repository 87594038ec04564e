"""A large upload is parsed off the event loop: while it is being read, other requests
(health checks, votes, a worker's heartbeats) keep being answered."""

from __future__ import annotations

import json
import threading
import time

from tests.redis_fixtures import LiveServer


def test_a_large_upload_does_not_stall_other_requests(settings):
    record = {"instruction": "Summarise the following text in one sentence.", "input": "lorem ipsum " * 40,
              "output": "A summary."}
    body = "".join(json.dumps({**record, "output": f"A summary {i}."}) + "\n" for i in range(60_000)).encode()
    srv = LiveServer(settings).start()
    try:
        admin, probe = srv.client(admin=True), srv.client()
        done: dict = {}

        def upload() -> None:
            started = time.monotonic()
            r = admin.post("/api/datasets", files={"file": ("big.jsonl", body)}, data={"name": "big"}, timeout=300)
            done.update(status=r.status_code, seconds=time.monotonic() - started)

        thread = threading.Thread(target=upload)
        thread.start()
        gaps = []
        while thread.is_alive():
            started = time.monotonic()
            assert probe.get("/health").status_code == 200
            gaps.append(time.monotonic() - started)
            time.sleep(0.02)
        thread.join()
        assert done["status"] == 201
        # Compared with the upload itself, not with a clock budget: when parsing held the loop,
        # one health check waited for most of the upload.
        assert len(gaps) >= 5 and max(gaps) < done["seconds"] / 3, (max(gaps), done["seconds"], len(gaps))
    finally:
        srv.stop()
