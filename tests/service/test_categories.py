"""Prompt categories (real HTTP, real Redis): a battle's tags are set from its prompt when it
is dealt, its vote counts into each tag's board and no other, the leaderboard shows the
category boards beside the overall one (saying when a category has too few votes), a
rebuild recounts them identically, and bad or hostile category names get a clear 4xx."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time

import msgspec
import pytest

from arena.battles import Battle
from service.board_cache import board_cache
from service.category_boards import MIN_CATEGORY_VOTES, category_boards
from service.errors import InvalidInput
from service.prompt_categories import LONG_FROM, battle_tags, check_task_type, prompt_tags, task_type_name
from service.store import SyncStore
from tests.redis_fixtures import LiveServer, fresh_board, settings_env
from tests.scripted_openai import ScriptedOpenAI
from tests.service.test_arena import ANSWERS, JUDGES, play, start

# Over LONG_FROM units: each Han character is one.
CHINESE_LONG = "请详细说明秋天的时候树叶为什么会变成黄色和红色，并且解释叶绿素和花青素分别起什么作用。" * 8
ENGLISH_SHORT = "Say hello politely."


def test_tags_come_from_the_prompt_and_the_pool():
    assert len(CHINESE_LONG) >= LONG_FROM
    assert prompt_tags(CHINESE_LONG, task_type="writing", hard=True) == ["task_type=writing", "language=zh", "length=long", "hard"]
    assert prompt_tags(ENGLISH_SHORT) == ["language=latin", "length=short"]
    assert prompt_tags(" ".join(["word"] * 100)) == ["language=latin", "length=medium"]
    assert prompt_tags("Why does this fail?\n```python\nprint(1/0)\n```")[0] == "task_type=coding"
    assert check_task_type("Creative  Writing", "pool") == "creative_writing"
    assert task_type_name("Closed QA / Brainstorm") == "closed_qa_brainstorm" and task_type_name("<>") is None
    for bad in ("<b>bold</b>", "x" * 41, 3):
        with pytest.raises(InvalidInput, match="task_type"):
            check_task_type(bad, "pool line 3")


def _public(criteria_true: int, **extra) -> Battle:
    names = ["specificity", "domain_knowledge", "complexity", "problem_solving", "creativity", "technical_accuracy", "real_world"]
    record = {"model_a": "x", "model_b": "y", "winner": "model_a",
              "conversation_a": [{"role": "user", "content": "写一首关于秋天的诗"}, {"role": "assistant", "content": "..."}],
              "category_tag": {"criteria_v0.1": {n: k < criteria_true for k, n in enumerate(names)},
                               "creative_writing_v0.1": {"creative_writing": True}}, **extra}
    return msgspec.convert(record, Battle)


def test_public_battles_get_the_public_arenas_hard_rule_and_ours_are_checked():
    assert battle_tags(_public(6)) == ["task_type=creative_writing", "language=zh", "length=short", "hard"]
    assert "hard" not in battle_tags(_public(5))
    assert battle_tags(_public(0, conv_metadata={"arena": {"categories": ["length=long", "length=long"]}})) == ["length=long"]
    for bad in (["x"] * 9, ["<script>"], "language=zh", ["length=huge"]):
        with pytest.raises(InvalidInput, match="categories|length takes"):
            battle_tags(_public(0, conv_metadata={"arena": {"categories": bad}}))


@pytest.fixture(scope="module")
def scripted():
    server = ScriptedOpenAI(ANSWERS, JUDGES).start()
    yield server
    server.stop()


@pytest.fixture
def server(settings, scripted):
    srv = start(settings, scripted)
    admin = srv.client(admin=True)
    assert admin.post("/api/arena/active", json={"models": ["alpha", "beta"]}).status_code == 200
    pool = [{"prompt": CHINESE_LONG, "task_type": "Writing", "hard": True, "category": "<i>pool</i>"}]
    r = admin.post("/api/arena/prompts", json={"prompts": pool, "source": "unit"})
    assert r.status_code == 201, r.text
    yield srv
    srv.stop()


def fitted_columns(client, query: str = "", timeout: float = 30.0) -> dict:
    """`/api/leaderboard/categories` once the refresher has fitted every column (a column
    never fitted in the process says `computing` until its next round)."""
    deadline = time.monotonic() + timeout
    while True:
        side = client.get(f"/api/leaderboard/categories{query}").json()
        if not any(c["computing"] for c in side["columns"]) or time.monotonic() > deadline:
            return side
        time.sleep(0.05)


def test_a_chinese_long_battle_counts_into_its_categories_and_no_others(server):
    client = server.client()
    battle, _ = play(client, "a")
    assert "categories" not in battle and "alpha" not in str(battle)  # nothing new shown before the vote
    board = fresh_board(client)
    assert board["n_battles"] == 1
    for tag in ("language=zh", "length=long", "task_type=writing", "hard", "<i>pool</i>"):
        assert fresh_board(client, f"/api/leaderboard?category={tag}")["n_battles"] == 1, tag
    for tag in ("language=latin", "length=short", "length=medium", "task_type=coding"):
        r = client.get("/api/leaderboard", params={"category": tag})
        assert r.status_code == 200 and r.json()["n_battles"] == 0, tag

    play(client, "b", prompt=ENGLISH_SHORT)  # typed: pool category "typed", tags from its text
    assert fresh_board(client)["n_battles"] == 2
    expected = {"language=zh": 1, "length=long": 1, "hard": 1, "language=latin": 1, "length=short": 1, "typed": 1}
    for tag, n in expected.items():
        assert fresh_board(client, f"/api/leaderboard?category={tag}")["n_battles"] == n, tag
    exported = server.client(admin=True).get("/api/battles/export").json()
    assert exported[0]["conv_metadata"]["arena"]["categories"] == ["task_type=writing", "language=zh", "length=long", "hard"]

    side = fitted_columns(client)
    columns = {c["category"]: c for c in side["columns"]}
    assert side["columns"][0]["category"] is None and side["columns"][0]["n_battles"] == 2 and side["columns"][0]["enough"]
    assert set(side["models"]) == {"alpha", "beta"} and set(side["columns"][0]["cells"]) == {"alpha", "beta"}
    zh = columns["language=zh"]
    assert (zh["dimension"], zh["value"], zh["n_battles"], zh["enough"], zh["cells"]) == ("language", "zh", 1, False, {})
    assert columns["<i>pool</i>"]["dimension"] == "category"
    only = fitted_columns(client, "?by=length")["columns"]
    assert [c["category"] for c in only] == [None, "length=long", "length=short"]

    page = client.get("/leaderboard")
    assert page.status_code == 200 and 'id="by-category"' in page.text and 'data-category="language=zh"' in page.text
    assert "too few votes" in page.text and "Language: Chinese" in page.text and "Hard prompts" in page.text
    assert "&lt;i&gt;pool&lt;/i&gt;" in page.text and "<i>pool</i>" not in page.text
    zh_page = client.get("/leaderboard", headers={"Accept-Language": "zh-CN"}).text
    assert "分类别评分" in zh_page and "语言: 中文" in zh_page and "投票太少" in zh_page


def test_bad_and_hostile_categories_get_a_clear_4xx(server):
    client, admin = server.client(), server.client(admin=True)
    play(client, "a")
    r = client.get("/api/leaderboard", params={"category": "length=huge"})
    assert r.status_code == 422 and "length takes short|medium|long" in r.json()["detail"]
    r = client.get("/api/leaderboard", params={"category": "nosuch"})
    assert r.status_code == 404 and "no vote is in it" in r.json()["detail"] and "language=zh" in r.json()["detail"]
    assert client.get("/api/leaderboard/status", params={"category": "nosuch"}).status_code == 404
    assert client.get("/api/leaderboard", params={"category": "x" * 500}).status_code == 422
    r = client.get("/api/leaderboard", params={"category": "language=zh", "source": "unit"})
    assert r.status_code == 422 and "not both" in r.json()["detail"]  # tags are not counted per source
    assert client.get("/api/leaderboard/categories", params={"by": "colour"}).status_code == 422
    hostile = '"><script>alert(1)</script>'
    page = client.get("/leaderboard", params={"category": hostile})
    assert page.status_code == 404 and "<script>alert(1)" not in page.text and "&lt;script&gt;alert(1)" in page.text
    assert 'id="by-category"' in page.text  # the unfiltered boards are still shown
    for record, field in (({"prompt": "x", "category": "language=zh"}, "category"), ({"prompt": "x", "task_type": "a<b>"}, "task_type"),
                          ({"prompt": "x", "hard": "yes"}, "hard"), ({"prompt": "x", "category": "x" * 300}, "category")):
        r = admin.post("/api/arena/prompts", json={"prompts": [record]})
        assert r.status_code == 422 and field in r.json()["detail"] and "prompts[0]" in r.json()["detail"], r.text


@pytest.fixture
def store(settings):
    s = SyncStore(settings.redis_url, settings.key_prefix)
    yield s
    s.close()


def _slice_votes(rng: random.Random, n: int, winner_bias: str, tags: list[str]) -> list[dict]:
    return [{"model_a": "m1", "model_b": "m2", "reviewer": f"r{k % 3}", "categories": tags,
             "winner": winner_bias if rng.random() < 0.85 else ("model_b" if winner_bias == "model_a" else "model_a")}
            for k in range(n)]


def test_each_category_has_its_own_board_and_a_rebuild_recounts_them_identically(store, settings):
    rng = random.Random(0)
    votes = (_slice_votes(rng, 30, "model_a", ["language=zh", "length=long"])
             + _slice_votes(rng, 30, "model_b", ["language=latin", "length=short"])
             + _slice_votes(rng, MIN_CATEGORY_VOTES - 1, "model_a", ["hard"]))
    rng.shuffle(votes)
    store.record_observations(votes, board="human")

    def side_by_side() -> dict:
        return msgspec.to_builtins(store._run(category_boards(store.store, "human")))

    before = side_by_side()
    columns = {c["category"]: c for c in before["columns"]}
    assert columns[None]["n_battles"] == len(votes)
    zh, latin = columns["language=zh"], columns["language=latin"]
    assert zh["enough"] and zh["n_battles"] == 30 and zh["cells"]["m1"]["rank_ub"] == 1 and zh["cells"]["m2"]["rank_ub"] == 2
    assert latin["enough"] and latin["cells"]["m2"]["rank_ub"] == 1 and latin["cells"]["m1"]["rank_ub"] == 2
    assert zh["cells"]["m1"]["ci_low"] > zh["cells"]["m2"]["ci_high"]
    assert columns["length=long"]["cells"] == zh["cells"]  # the same votes, the same board
    assert not columns["hard"]["enough"] and columns["hard"]["cells"] == {} and columns["hard"]["n_battles"] == MIN_CATEGORY_VOTES - 1

    out = subprocess.run([sys.executable, "-m", "service.cli", "ratings", "rebuild"], env=settings_env(settings),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and f"{len(votes)} human votes" in out.stdout, out.stderr
    board_cache(store.store).entries.clear()  # refit from the rebuilt aggregates, not from this process's last fits
    assert side_by_side() == before


def test_ratings_of_one_category_of_a_public_dump_through_the_cli(tmp_path):
    """`arena ratings FILE --category TAG` on the public 140k schema: `hard` from its
    criteria labels, language and length from the prompt; a category no battle is in, or
    a malformed one, is a one-line error."""
    rows = []
    for k in range(12):
        hard = k % 3 == 0  # 4 hard battles, won by x; the others won by y
        record = msgspec.to_builtins(_public(7 if hard else 2))
        record.update(id=str(k), winner="model_a" if hard else "model_b", timestamp="2024-05-01T10:00:00")
        rows.append(json.dumps(record, ensure_ascii=False))
    path = tmp_path / "arena-140k.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")

    def ratings(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "service.cli", "ratings", str(path), "--bootstrap", "0", *args],
                              capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})

    hard = ratings("--category", "hard", "--json")
    assert hard.returncode == 0, hard.stderr
    assert [(r["model"], r["votes"]) for r in json.loads(hard.stdout)] == [("x", 4), ("y", 4)]
    everything = json.loads(ratings("--json").stdout)
    assert everything[0]["model"] == "y" and everything[0]["votes"] == 12
    assert json.loads(ratings("--category", "language=zh", "--json").stdout)[0]["votes"] == 12
    none = ratings("--category", "language=ko")
    assert none.returncode == 1 and "no battle in" in none.stderr and "hard (4)" in none.stderr
    bad = ratings("--category", "length=huge")
    assert bad.returncode == 1 and "length takes short|medium|long" in bad.stderr and "Traceback" not in bad.stderr


def test_judge_verdicts_count_into_their_prompts_categories(settings, scripted):
    from tests.service.test_judging import judge

    srv = start(settings, scripted, worker=True)
    try:
        admin = srv.client(admin=True)
        prompts = [{"prompt": CHINESE_LONG, "reference": "The answer is 4.", "hard": True}]
        judge(admin, judge="reference", candidates=["alpha", "beta"], prompts=prompts)
        for tag, n in (("language=zh", 2), ("length=long", 2), ("hard", 2), ("language=latin", 0)):
            assert fresh_board(admin, f"/api/leaderboard?board=judge&category={tag}")["n_battles"] == n, tag
        page = admin.get("/leaderboard?by_board=judge")
        assert page.status_code == 200 and "Ratings by category · LLM / reference judges" in page.text
        assert 'data-category="language=zh"' in page.text
        wrong = admin.get("/leaderboard?by_board=robot")
        assert wrong.status_code == 422 and "expected one of human, judge" in wrong.text
    finally:
        srv.stop()


def test_an_odd_stored_category_does_not_take_the_boards_down_and_import_refuses_one():
    """A pool category that looks like a tag with an impossible value (`hard=1`, stored
    before pool categories were checked) is a plain pool category to the boards; an import
    that would bring one in is refused in one line."""
    from arena.battles import Battle
    from service.battles import from_battle
    from service.category_boards import dimension_of

    assert dimension_of("hard=1") == ("category", "hard=1")
    assert dimension_of("language=zh") == ("language", "zh")
    row = {"model_a": "x", "model_b": "y", "winner": "model_a", "question_id": "q", "tstamp": 1.0,
           "conversation_a": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}],
           "conversation_b": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "b"}],
           "conv_metadata": {"arena": {"category": "hard=1"}}}
    with pytest.raises(InvalidInput, match="hard=1"):
        from_battle(msgspec.convert(row, Battle))
    row["conv_metadata"] = {"arena": {"category": "hard"}}  # the hard-prompts tag is not a pool category
    with pytest.raises(InvalidInput, match="hard-prompts tag"):
        from_battle(msgspec.convert(row, Battle))
    row["conv_metadata"] = {"arena": {"category": "geography"}}
    assert from_battle(msgspec.convert(row, Battle))[1]["category"] == "geography"


def _import_record(k: int, categories=None, same_model: bool = False) -> dict:
    record = {"model_a": "x", "model_b": "x" if same_model else "y", "winner": "model_a", "question_id": f"q{k}",
              "tstamp": 1.0 + k, "conversation_a": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}],
              "conversation_b": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "b"}],
              "conv_metadata": {"arena": {"reviewer": "r1", "categories": categories or ["language=latin", "length=short"]}}}
    return record


def test_import_skips_a_bad_categories_record_and_names_its_place_in_the_file(settings, tmp_path, store):
    """A file of good battles with one whose `categories` is bad: without --skip-invalid
    nothing is imported and the error names the record's line; with it the good ones land,
    the bad one is named by its line in the file (records the reader skipped counted), and
    the votes already stored stay. The same through HTTP, by the record's index."""
    store.record_observations([_import_record(100), _import_record(101)], board="human")

    def human_votes() -> int:
        return store.aggregate_summary().votes.get("human", 0)

    bad = _import_record(5, categories=["not a tag"])
    lines = [_import_record(1), None, _import_record(3, same_model=True), _import_record(4), bad, _import_record(6)]
    path = tmp_path / "battles.jsonl"
    path.write_text("\n".join("" if r is None else json.dumps(r) for r in lines) + "\n")
    env = settings_env(settings)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "service.cli", "battles", "import", str(path), *args],
                              env=env, capture_output=True, text=True, timeout=120)

    clean = tmp_path / "clean.jsonl"  # no record the reader refuses: our own check is what fails
    clean.write_text("\n".join(json.dumps(r) for r in (_import_record(1), bad, _import_record(6))) + "\n")
    out = subprocess.run([sys.executable, "-m", "service.cli", "battles", "import", str(clean)],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert "line 2: conv_metadata.arena: categories: 'not a tag' is not a category tag" in out.stderr
    assert "--skip-invalid" in out.stderr and human_votes() == 2

    out = cli("--skip-invalid")
    assert out.returncode == 0, out.stderr
    assert "imported 3 battles (3 human); skipped 2 invalid" in out.stdout
    assert "skipped line 3: field `model_b`" in out.stderr
    assert "skipped line 5: conv_metadata.arena: categories: 'not a tag'" in out.stderr
    assert human_votes() == 5

    srv = LiveServer(settings).start()
    try:
        admin = srv.client(admin=True)
        body = [r for r in lines if r is not None]  # the array index of the bad one is 3
        clean_body = [r for r in body if r["model_b"] != "x"]  # the bad one at index 2
        refused = admin.post("/api/battles/import", content=msgspec.json.encode(clean_body))
        assert refused.status_code == 422 and "record 2: conv_metadata.arena: categories" in refused.json()["detail"]
        assert human_votes() == 5
        done = admin.post("/api/battles/import?skip_invalid=true", content=msgspec.json.encode(body))
        assert done.status_code == 201, done.text
        result = done.json()
        assert result["imported"] == 3 and result["skipped"] == 2
        assert [e.split(":")[0] for e in result["errors"]] == ["record 1", "record 3"]
        assert human_votes() == 8
    finally:
        srv.stop()


def test_a_pool_category_named_hard_is_refused_so_the_hard_board_holds_hard_prompts_only(server):
    """Pool categories and tags name boards in one namespace: a pool category `hard` would
    count its (not hard) prompts on the hard-prompts board. Writing one is refused in one
    line; the hard board counts only the prompts marked `"hard": true`."""
    client, admin = server.client(), server.client(admin=True)
    r = admin.post("/api/arena/prompts", json={"prompts": [{"prompt": ENGLISH_SHORT, "category": "hard"}]})
    assert r.status_code == 422, r.text
    assert "prompts[0]: category 'hard' is the hard-prompts tag; set \"hard\": true" in r.json()["detail"]
    r = admin.post("/api/arena/prompts", json={"prompts": [{"prompt": ENGLISH_SHORT, "category": "Hard"}]})
    assert r.status_code == 201, r.text  # another name is a pool category of its own
    played = [play(client, "a")[0]["prompt"] for _ in range(4)]
    while all(p == ENGLISH_SHORT for p in played) and len(played) < 40:  # the draw may miss the hard prompt
        played.append(play(client, "a")[0]["prompt"])
    hard = fresh_board(client, "/api/leaderboard?category=hard")

    def battles_in(category: str) -> int:  # a pool category no vote is in yet is a 404
        r = client.get("/api/leaderboard", params={"category": category})
        assert r.status_code in (200, 404), r.text
        return r.json()["n_battles"] if r.status_code == 200 else 0

    assert hard["n_battles"] == battles_in("<i>pool</i>") == len(played) - played.count(ENGLISH_SHORT) > 0
    assert battles_in("Hard") == played.count(ENGLISH_SHORT)
    columns = {c["category"]: c for c in fitted_columns(client)["columns"]}
    assert columns["hard"]["dimension"] == "hard" and columns["hard"]["n_battles"] == hard["n_battles"]
    if "Hard" in columns:
        assert columns["Hard"]["dimension"] == "category"


def test_the_cli_and_the_service_give_the_same_category_board_on_the_same_votes(settings, tmp_path, store):
    """Votes logged before battles had tags are on the service's overall board only; the
    export says so (`categories: []`), so `arena ratings EXPORT --category TAG` rates the
    votes the service's TAG board rates, though the untagged votes' prompts are Chinese."""
    rng = random.Random(7)
    conversation = [{"role": "user", "content": CHINESE_LONG}, {"role": "assistant", "content": "答"}]
    votes = []
    for k in range(60):
        a, b = rng.sample(["m1", "m2", "m3"], 2)
        vote = {"model_a": a, "model_b": b, "winner": rng.choice(["model_a", "model_b", "tie"]), "reviewer": f"r{k % 4}",
                "question_id": f"q{k}", "conversation_a": conversation, "conversation_b": conversation}
        if k % 3:  # a third logged before tags existed: no `categories`
            vote["categories"] = ["language=zh", "length=long"]
        votes.append(vote)
    store.record_observations(votes, board="human")
    env = settings_env(settings)
    path = tmp_path / "export.json"
    out = subprocess.run([sys.executable, "-m", "service.cli", "battles", "export", str(path)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert sum(r["conv_metadata"]["arena"]["categories"] == [] for r in json.loads(path.read_text())) == 20

    out = subprocess.run([sys.executable, "-m", "service.cli", "ratings", str(path), "--category", "language=zh",
                          "--bootstrap", "0", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    cli = {r["model"]: r for r in json.loads(out.stdout)}
    srv = LiveServer(settings).start()
    try:
        service = fresh_board(srv.client(), "/api/leaderboard?category=language=zh")
    finally:
        srv.stop()
    assert service["n_battles"] == 40 and sum(r["votes"] for r in cli.values()) == 2 * 40
    for row in service["rows"]:
        assert cli[row["model"]]["votes"] == row["votes"], row["model"]
        assert abs(cli[row["model"]]["rating"] - row["rating"]) < 1e-6, row["model"]


def test_a_cold_page_fits_no_category_column_and_the_refresher_fits_each_once(store, settings):
    """Fits counted (`BoardCache.fits`), not timed: with a refresher running, a cold
    `/leaderboard` fits the two overall boards and no category column (each says
    "computing"); the refresher's next round fits the columns, at `CATEGORY_ROUNDS`; then
    votes in one category set refit only the boards they changed."""
    from service.category_boards import CATEGORY_ROUNDS, MAX_COLUMNS

    rng = random.Random(1)
    tag_sets = [["language=zh", "length=long"], ["language=latin", "length=short", "task_type=coding"],
                ["task_type=writing", "language=ja", "length=medium", "hard"], ["language=ko", "length=medium"]]
    votes = [{**v, "category": f"pool{k % 3}"} for k, tags in enumerate(tag_sets * 3)
             for v in _slice_votes(rng, 25, "model_a", tags)]
    store.record_observations(votes, board="human")
    categories = store.aggregate_summary().categories
    assert len(categories) > MAX_COLUMNS  # the table is full

    s = msgspec.structs.replace(settings, board_refresh_s=3600.0)  # one round at start, then none during the test
    srv = LiveServer(s).start()
    try:
        client = srv.client()
        cache = board_cache(srv.app.state.store)
        page = client.get("/leaderboard")
        assert page.status_code == 200 and page.text.count("computing…") == MAX_COLUMNS
        assert cache.fits == 2  # the human and judge boards; no column
        assert len(cache.wanted) == MAX_COLUMNS
    finally:
        srv.stop()

    cache = board_cache(store.store)
    cache.refreshing = True  # as `BoardCache.run` sets it: from here on the refresher fits
    side = store._run(category_boards(store.store, "human"))
    assert cache.fits == 1 and all(c.computing for c in side.columns[1:])
    assert store._run(cache.refresh(store.store)) == MAX_COLUMNS and cache.fits == 1 + MAX_COLUMNS
    side = store._run(category_boards(store.store, "human"))
    assert cache.fits == 1 + MAX_COLUMNS and not any(c.computing for c in side.columns)
    assert {e.view.bootstrap_rounds for k, e in cache.entries.items() if k[1]} == {CATEGORY_ROUNDS}

    # Votes in one set of categories: the overall board and the shown columns they are in.
    store.record_observations([{**v, "category": "pool0"} for v in _slice_votes(rng, 5, "model_b", tag_sets[0])], board="human")
    changed = {None, *tag_sets[0], "pool0"} & {c.category for c in side.columns}
    assert store._run(cache.refresh(store.store)) == len(changed)
    assert cache.fits == 1 + MAX_COLUMNS + len(changed)
