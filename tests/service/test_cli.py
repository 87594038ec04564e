"""The `arena` command as a user runs it: a subprocess, embedded Redis, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from service.cli import COMMANDS


def arena(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service.cli.__main__", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def embedded_env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["ARENA_DATA_DIR"] = str(tmp_path / "data")
    return env


def test_help_lists_every_command_with_a_description():
    out = arena("--help").stdout
    for name, (_, _, description) in COMMANDS.items():
        assert name in out and description.split()[0] in out


def test_every_command_has_help():
    for name in COMMANDS:
        result = arena(name, "--help")
        assert result.returncode == 0, (name, result.stderr)


def test_config_prints_effective_settings(tmp_path):
    env = embedded_env(tmp_path) | {"ARENA_PORT": "9123", "ARENA_ADMIN_TOKEN": "s3cret"}
    result = arena("config", "--json", env=env)
    values = json.loads(result.stdout)
    assert values["ARENA_PORT"] == "9123"
    assert values["ARENA_ADMIN_TOKEN"] == "***"
    assert values["REDIS_URL"] == ""
    bad = arena("config", env=env | {"ARENA_PORT": "eighty"})
    assert bad.returncode == 1 and bad.stderr.strip() == "error: ARENA_PORT='eighty': expected an integer"


def test_datasets_in_embedded_mode_persist_between_commands(tmp_path):
    env = embedded_env(tmp_path)
    data = tmp_path / "qa.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) for i in range(10)))
    added = arena("data", "add", str(data), "--name", "qa", env=env)
    assert added.returncode == 0, added.stderr
    assert "added qa@1" in added.stdout and "10 records" in added.stdout
    # The server that command started has been stopped; the next command finds the data on disk.
    assert not (tmp_path / "data" / "redis" / "server.json").exists()
    listed = arena("data", "list", "--json", env=env)
    assert json.loads(listed.stdout)[0]["name"] == "qa"
    split = arena("data", "split", "qa", "--test-fraction", "0.2", "--seed", "1", env=env)
    assert "2 held out" in split.stdout
    shown = arena("data", "show", "qa@1", "--limit", "1", "--json", env=env)
    assert json.loads(shown.stdout)["dataset"]["split"]["seed"] == 1
    # A group with a list command lists when run alone, as its help says ("arena data" = "arena data list").
    alone, listed = arena("data", env=env), arena("data", "list", env=env)
    assert alone.returncode == 0 and alone.stdout == listed.stdout and "latest @1" in alone.stdout
    assert "Commands:" in arena("data", "--help", env=env).stdout
    # The list's options work there too ("arena data --json" was "No such option", exit 2).
    alone, listed = arena("data", "--json", env=env), arena("data", "list", "--json", env=env)
    assert alone.returncode == 0 and alone.stdout == listed.stdout and json.loads(alone.stdout)


def test_bad_input_is_one_line_and_non_zero(tmp_path):
    env = embedded_env(tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "completion": "a"}\n{"prompt": "q2"}\n')
    result = arena("data", "add", str(bad), "--name", "bad", env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["error: bad.jsonl: line 2: missing field 'completion'"]
    missing = arena("data", "add", str(tmp_path / "nope.jsonl"), "--name", "x", env=env)
    assert missing.returncode == 1 and "no such file" in missing.stderr
    unknown = arena("data", "show", "nothere", env=env)
    assert unknown.returncode == 1 and "no dataset named 'nothere'" in unknown.stderr


def test_with_redis_url_the_service_uses_that_redis_not_an_embedded_one(tmp_path):
    """REDIS_URL mode: a separately started server stands in for an external Redis."""
    import redis

    from service.redis_server import EmbeddedRedis

    external = EmbeddedRedis(tmp_path / "external")
    url = external.start()
    try:
        env = embedded_env(tmp_path) | {"REDIS_URL": url, "ARENA_KEY_PREFIX": "shared-test"}
        data = tmp_path / "qa.jsonl"
        data.write_text(json.dumps({"prompt": "q", "completion": "a"}))
        assert arena("data", "add", str(data), "--name", "qa", env=env).returncode == 0
        assert not (tmp_path / "data" / "redis").exists()  # no embedded server was started
        client = redis.Redis.from_url(url)
        assert client.smembers("shared-test:datasets") == {b"qa"}
        assert not [k for k in client.scan_iter("arena:*")]  # everything under the configured prefix
        client.close()
    finally:
        external.stop()
