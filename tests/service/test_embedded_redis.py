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
