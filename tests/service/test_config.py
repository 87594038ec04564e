"""Settings from the environment: the integrity settings parse, fail naming the variable,
and keys never print."""

from __future__ import annotations

import pytest

from service.config import load_settings


def test_integrity_settings_defaults_and_values(monkeypatch):
    for name in ("ARENA_MIN_VOTE_S", "ARENA_API_KEYS", "ARENA_TRUSTED_PROXY_HEADER", "ARENA_TRUSTED_PROXIES",
                 "ARENA_BATTLE_TEMPERATURE", "ARENA_BATTLE_TOP_P", "ARENA_VOTES_PER_MINUTE_PER_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    s = load_settings()
    assert (s.min_vote_s, s.battle_temperature, s.battle_top_p, s.votes_per_minute_per_address) == (2.0, 0.7, 1.0, 60)
    assert s.api_key_list == [] and s.trusted_proxy_list == frozenset()

    monkeypatch.setenv("ARENA_MIN_VOTE_S", "0.5")
    monkeypatch.setenv("ARENA_API_KEYS", "key-1, key-2,,")
    monkeypatch.setenv("ARENA_TRUSTED_PROXY_HEADER", "X-Forwarded-For")
    monkeypatch.setenv("ARENA_TRUSTED_PROXIES", "10.0.0.1, 10.0.0.2")
    s = load_settings()
    assert s.min_vote_s == 0.5 and s.api_key_list == ["key-1", "key-2"]
    assert s.trusted_proxy_list == {"10.0.0.1", "10.0.0.2"}
    assert s.describe()["ARENA_API_KEYS"] == "***"


@pytest.mark.parametrize("env, says", [
    ({"ARENA_MIN_VOTE_S": "soon"}, "ARENA_MIN_VOTE_S='soon': expected a number"),
    ({"ARENA_MIN_VOTE_S": "-1"}, "expected a number >= 0"),
    ({"ARENA_BATTLE_TOP_P": "0"}, "ARENA_BATTLE_TOP_P=0.0: expected a number in (0, 1]"),
    ({"ARENA_TRUSTED_PROXY_HEADER": "X-Forwarded-For"}, "ARENA_TRUSTED_PROXIES is empty"),
])
def test_bad_integrity_settings_name_the_variable(monkeypatch, env, says):
    monkeypatch.delenv("ARENA_TRUSTED_PROXIES", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError) as error:
        load_settings()
    assert says in str(error.value)
