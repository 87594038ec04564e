"""Datasets over real HTTP on loopback."""

import json

from service.store import SyncStore

GOOD = b'{"instruction": "Say hi.", "input": "", "output": "Hi."}\n{"instruction": "Say bye.", "input": "", "output": "Bye."}\n'


def upload(client, raw, name="greet", filename="d.jsonl", **form):
    return client.post("/api/datasets", files={"file": (filename, raw, "application/jsonl")}, data={"name": name, **form})


def test_health_reports_redis(live_server):
    r = live_server.client().get("/health")
    assert r.status_code == 200
    assert r.json()["redis"]["ok"] is True


def test_writes_need_the_admin_token(live_server):
    r = upload(live_server.client(), GOOD)
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "admin token" in r.json()["detail"]
    r = upload(live_server.client(), GOOD, headers=None) if False else live_server.client().post(
        "/api/datasets", headers={"Authorization": "Bearer wrong"}, files={"file": ("d.jsonl", GOOD)}, data={"name": "x"})
    assert r.status_code == 401


def test_upload_list_show_records(live_server):
    admin = live_server.client(admin=True)
    r = upload(admin, GOOD)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["created"] is True and body["dataset"]["record_count"] == 2 and body["dataset"]["format"] == "alpaca"
    again = upload(admin, GOOD)
    assert again.json()["created"] is False and again.json()["dataset"]["id"] == body["dataset"]["id"]

    listed = live_server.client(admin=True).get("/api/datasets").json()
    assert [d["name"] for d in listed] == ["greet"]
    shown = live_server.client(admin=True).get("/api/datasets/greet").json()
    assert len(shown["versions"]) == 1
    page = live_server.client(admin=True).get("/api/datasets/greet/records", params={"offset": 1, "limit": 5}).json()
    assert page["total"] == 2 and page["records"][0]["index"] == 1
    assert page["records"][0]["messages"][-1]["content"] == "Bye."


def test_bad_upload_is_a_clear_400_and_stores_nothing(live_server):
    admin = live_server.client(admin=True)
    assert upload(admin, GOOD).status_code == 201
    bad = GOOD + b'{"instruction": "x", "input": "", "output": ""}\n'
    r = upload(admin, bad)
    assert r.status_code == 422
    assert "line 3" in r.json()["detail"] and "'output' is empty" in r.json()["detail"]
    r = upload(admin, GOOD, name="../etc/passwd")
    assert r.status_code == 422 and "not valid" in r.json()["detail"]
    r = upload(admin, b"\xff\xfe", name="greet")
    assert r.status_code == 422 and "UTF-8" in r.json()["detail"]
    shown = live_server.client(admin=True).get("/api/datasets/greet").json()
    assert len(shown["versions"]) == 1  # the good version is still the only one


def test_oversized_upload_is_413(settings):
    from msgspec.structs import replace

    from tests.redis_fixtures import LiveServer

    server = LiveServer(replace(settings, max_upload_bytes=200)).start()
    try:
        raw = b"\n".join(json.dumps({"prompt": f"q{i}", "completion": "a"}).encode() for i in range(50))
        r = upload(server.client(admin=True), raw)
        assert r.status_code == 413
    finally:
        server.stop()


def test_unknown_dataset_is_404_problem(live_server):
    r = live_server.client(admin=True).get("/api/datasets/nope")
    assert r.status_code == 404 and "no dataset named 'nope'" in r.json()["detail"]
    r = live_server.client(admin=True).get("/api/datasets/nope/records", params={"limit": 0})
    assert r.status_code == 422


def test_split_over_http(live_server):
    admin = live_server.client(admin=True)
    lines = b"\n".join(json.dumps({"prompt": f"q{i}", "completion": "a"}).encode() for i in range(20))
    upload(admin, lines, name="qa")
    r = admin.post("/api/datasets/qa/split", json={"test_fraction": 0.25, "seed": 1})
    assert r.status_code == 200
    assert len(r.json()["dataset"]["split"]["test_indices"]) == 5
    store = SyncStore(live_server.settings.redis_url, live_server.settings.key_prefix)
    try:
        assert store.resolve_dataset("qa@1").split.seed == 1
    finally:
        store.close()


def _parquet(table) -> bytes:
    import io

    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def test_a_parquet_bomb_is_413_and_stores_nothing(settings):
    """A few kilobytes of Parquet (one long string, dictionary-encoded, in every row) decode
    to far more than the upload limit: refused before the rows are read into memory."""
    import pyarrow as pa
    from msgspec.structs import replace

    from tests.redis_fixtures import LiveServer

    server = LiveServer(replace(settings, max_upload_bytes=1_000_000)).start()
    try:
        admin = server.client(admin=True)
        rows = 20_000
        bomb = _parquet(pa.table({"instruction": pa.array(["x" * 2000] * rows).dictionary_encode(), "output": pa.array(["y"] * rows)}))
        assert len(bomb) < 20_000  # 40 MB of text once decoded
        r = upload(admin, bomb, name="bomb", filename="bomb.parquet")
        assert r.status_code == 413, r.text
        assert "decode to more than 1000000 bytes" in r.json()["detail"]
        assert admin.get("/api/datasets").json() == []
        assert not list(settings.data_dir.glob("datasets/*.jsonl"))
        # A real Parquet dataset under the limit (chat records with a metadata column) still loads.
        chat = [[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}] for i in range(500)]
        ok = upload(admin, _parquet(pa.table({"messages": chat, "source": ["s"] * 500})), name="chat", filename="chat.parquet")
        assert ok.status_code == 201, ok.text
        assert ok.json()["dataset"]["record_count"] == 500 and ok.json()["dataset"]["format"] == "chat"
    finally:
        server.stop()


def test_a_number_too_long_for_python_is_422_naming_the_line(live_server):
    """`json.loads` refuses an integer of more than 4300 digits with a plain ValueError (not
    a JSONDecodeError): the upload names the line, as any other bad JSON."""
    admin = live_server.client(admin=True)
    assert upload(admin, GOOD).status_code == 201
    number = b"9" * 5000
    r = upload(admin, GOOD + b'{"instruction": "q", "output": "a", "n": ' + number + b"}\n")
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == "d.jsonl: line 3, column 42: a number with more than 4300 digits"
    r = upload(admin, b'[{"instruction": "q",\n "output": "a", "n": ' + number + b"}]", filename="d.json")
    assert r.status_code == 422 and r.json()["detail"].startswith("d.json: line 2, column 22: a number with more than"), r.text
    assert len(admin.get("/api/datasets/greet").json()["versions"]) == 1


def test_a_lone_surrogate_escape_is_422_naming_the_record_over_http_and_the_cli(live_server, tmp_path):
    """`"\\ud800"` is valid JSON that decodes to no Unicode text: `json.loads` takes it, the
    record's hash could not encode it (a 500, a traceback in the CLI). Refused up front."""
    from tests.service.test_cli import arena, embedded_env

    admin = live_server.client(admin=True)
    assert upload(admin, GOOD).status_code == 201
    r = upload(admin, GOOD + b'{"instruction": "q\\ud800", "output": "a"}\n')
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == ("d.jsonl: line 3: field 'instruction': \\ud800 is half of a UTF-16 surrogate pair "
                                  "without its other half: not Unicode text")
    r = upload(admin, b'[{"instruction": "q", "output": "a"},\n {"instruction": "q", "output": "\\udc80"}]', filename="d.json")
    assert r.status_code == 422 and r.json()["detail"].startswith("d.json: record 1 (line 2): field 'output': \\udc80"), r.text
    # A pair written as two escapes is one character, and stays what it was.
    r = upload(admin, b'{"instruction": "emoji \\ud83d\\ude00", "output": "a"}\n', name="emoji")
    assert r.status_code == 201, r.text
    assert admin.get("/api/datasets/emoji/records").json()["records"][0]["messages"][0]["content"] == "emoji \U0001F600"
    assert len(admin.get("/api/datasets/greet").json()["versions"]) == 1

    bad = tmp_path / "lone.jsonl"
    bad.write_bytes(b'{"instruction": "\\ud800", "output": "a"}\n')
    result = arena("data", "add", str(bad), "--name", "lone", env=embedded_env(tmp_path))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip() == ("error: lone.jsonl: line 1: field 'instruction': \\ud800 is half of a UTF-16 "
                                     "surrogate pair without its other half: not Unicode text")


def test_the_same_file_uploaded_twice_at_once_is_one_version(settings):
    """Two uploads of one file under one name at the same moment: one version, created once;
    the other gets it back. (The check for identical content ran before the WATCH, so both
    registered it: the version list named it twice and the later number overwrote the
    earlier version's record, e.g. versions 1, 2, 5, 4, 5.)"""
    import asyncio
    import time

    from service.domain import DatasetVersion
    from service.store import Store

    async def main():
        stores = [Store.from_url(settings.redis_url, settings.key_prefix) for _ in range(4)]
        made = [DatasetVersion(id=f"{i:016x}", name="race", version=0, source_filename="r.jsonl", format="alpaca",
                               record_count=1, created_at=time.time()) for i in (1, 1, 2, 2)]
        added = await asyncio.gather(*(s.add_dataset_version(d) for s, d in zip(stores, made)))
        versions = await stores[0].list_dataset_versions("race")
        for s in stores:
            await s.close()
        return added, versions

    added, versions = asyncio.run(main())
    assert sorted(created for _, created in added) == [False, False, True, True]
    assert [(v.version, v.id) for v in versions] == [(1, versions[0].id), (2, versions[1].id)]
    assert {v.id for v in versions} == {f"{1:016x}", f"{2:016x}"}
    assert {(d.id, d.version) for d, _ in added} == {(v.id, v.version) for v in versions}
