"""The embedded server: persistence across restarts, reuse, clean stop."""

import redis

from service.redis_server import EmbeddedRedis


def test_data_survives_a_restart(tmp_path):
    server = EmbeddedRedis(tmp_path)
    url = server.start()
    client = redis.Redis.from_url(url)
    client.set("arena:test:key", "kept")
    client.xadd("arena:test:stream", {"v": "1"})
    client.close()
    server.stop()
    assert not server.running()

    again = EmbeddedRedis(tmp_path)
    url = again.start()
    client = redis.Redis.from_url(url)
    assert client.get("arena:test:key") == b"kept"
    assert client.xlen("arena:test:stream") == 1
    client.close()
    again.stop()


def test_a_running_server_is_reused_not_restarted(tmp_path):
    first = EmbeddedRedis(tmp_path)
    url = first.start()
    second = EmbeddedRedis(tmp_path)
    assert second.start() == url
    assert not second.started_here
    first.stop()


def test_the_server_has_a_password_kept_private(tmp_path):
    import os
    import stat

    server = EmbeddedRedis(tmp_path)
    url = server.start()
    try:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        with __import__("pytest").raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=port).ping()
        assert redis.Redis.from_url(url).ping()
        for secret in (server.dir / "password", server.dir / "valkey.conf"):
            assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600, secret
    finally:
        server.stop()


def test_the_server_stops_with_its_last_user_not_its_first(tmp_path):
    import subprocess
    import sys

    first = EmbeddedRedis(tmp_path)
    url = first.acquire()
    # Another process uses it and goes away: the server stays for this one.
    code = ("import sys; from service.redis_server import EmbeddedRedis; s = EmbeddedRedis(sys.argv[1]); "
            "s.acquire(); print(s.release())")
    other = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert other.returncode == 0 and other.stdout.strip() == "False", other.stderr
    assert first.running() and redis.Redis.from_url(url).ping()
    # A user that died without releasing does not keep it alive.
    (first.leases / "999999999-0").touch()
    assert first.release() is True and not first.running()
    assert not first.state_file.exists() and list(first.leases.iterdir()) == []
