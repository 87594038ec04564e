"""The Lua scripts that log and count a vote, and the rules they enforce.

Every rule on a human vote lives in ONE fragment (`_vote_checks_lua`) that both vote
scripts run before they append, so a rule holds atomically with the append and the count:
first vote wins, the battle's own reviewer only, no excluded reviewer, no vote sooner than
the minimum time, and the per-reviewer and per-address rate limits.
"""

from __future__ import annotations

import msgspec

from service.errors import Conflict, Forbidden, NotFound, RateLimited
from service.store.aggregate_scripts import COUNT_VOTE_LUA


def _vote_checks_lua(*, reviewer: int, now: int, min_wait: int, limit: int, window: int, address_limit: int) -> str:
    """The checks every vote script makes after finding its battle, in this order, each
    with its refusal code:

    - a battle keeps its first vote (-2 and that vote's id);
    - a battle dealt to a reviewer takes only their vote (-5);
    - a battle whose answers are still being written (or failed) takes no vote yet (-9);
    - an excluded reviewer's vote is refused, so it is never counted anywhere (-6);
    - a vote sooner than the minimum time after the battle was dealt is refused (-7 and the
      seconds left; minimum 0 = none);
    - a reviewer's votes, then a client address's votes, are rate limited (-3 / -8 and the
      seconds left; limit 0 = none).

    KEYS: 1 battle, 2 voted flag, 5 reviewer rate counter, 6 address rate counter,
    7 excluded reviewers. The arguments name the ARGV index of each value."""
    return f"""
if redis.call('EXISTS', KEYS[2]) == 1 then return {{-2, redis.call('GET', KEYS[2])}} end
local voter = ARGV[{reviewer}]
local owner = redis.call('HGET', KEYS[1], 'reviewer')
if owner and owner ~= '' and owner ~= voter then return {{-5, ''}} end
if redis.call('HEXISTS', KEYS[1], 'answering') == 1 then return {{-9, ''}} end
if voter ~= '' and redis.call('SISMEMBER', KEYS[7], voter) == 1 then return {{-6, ''}} end
local min_wait = tonumber(ARGV[{min_wait}])
if min_wait > 0 then
  local dealt = tonumber(redis.call('HGET', KEYS[1], 'created_at') or '')
  if dealt and tonumber(ARGV[{now}]) < dealt + min_wait then
    return {{-7, string.format('%.1f', dealt + min_wait - tonumber(ARGV[{now}]))}}
  end
end
local function over_limit(key, limit, code)
  if limit > 0 then
    local n = redis.call('INCR', key)
    if n == 1 then redis.call('EXPIRE', key, tonumber(ARGV[{window}])) end
    if n > limit then return {{code, tostring(redis.call('TTL', key))}} end
  end
end
local limited = over_limit(KEYS[5], tonumber(ARGV[{limit}]), -3) or over_limit(KEYS[6], tonumber(ARGV[{address_limit}]), -8)
if limited then return limited end
"""


class VoteRules(msgspec.Struct, frozen=True, kw_only=True):
    """The limits a vote script enforces (0 = none); `address` is the client's address."""

    rate_limit: int = 0
    rate_window_s: int = 60
    min_vote_s: float = 0.0
    address: str | None = None
    address_limit: int = 0


def raise_refused_vote(status: int, value: str, rules: VoteRules) -> None:
    """The error for a vote script's refusal codes (see `_vote_checks_lua`, and -1 for no
    battle); nothing for other codes."""
    if status == -1:
        raise NotFound("no such battle (unknown id, or it expired)")
    if status == -2:
        raise Conflict("this battle already has a vote; the first vote counts")
    if status == -3:
        raise RateLimited(f"too many votes: the limit is {rules.rate_limit} per {rules.rate_window_s} s; try again in {value} s")
    if status == -5:
        raise Forbidden("this battle was dealt to another reviewer: only they can vote on it; ask for your own battle")
    if status == -6:
        raise Forbidden("this reviewer's votes are no longer counted: an admin excluded them")
    if status == -7:
        raise RateLimited(f"too fast: a vote counts only {rules.min_vote_s:g} s after the answers are shown, "
                          f"so read both answers; try again in {value} s")
    if status == -9:
        raise Conflict("this battle's answers are not complete yet: vote once both answers are shown in full")
    if status == -8:
        raise RateLimited(f"too many votes from this address: the limit is {rules.address_limit} per "
                          f"{rules.rate_window_s} s; try again in {value} s")


# Each script logs a vote (XADD) and counts it into the leaderboards' aggregates
# (`service.store.aggregate_scripts.count_vote`) in the same call.
# KEYS: battle, voted flag, stream, current aggregates generation, reviewer rate, address rate, excluded reviewers
# ARGV: vote JSON, count field, voted-flag TTL, rate limit (0 = none), rate window (s), board, reviewer,
#       now, minimum time to vote (s), address rate limit, aggregates prefix
VOTE_LUA = COUNT_VOTE_LUA + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, ''} end
""" + _vote_checks_lua(reviewer=7, now=8, min_wait=9, limit=4, window=5, address_limit=10) + """local id = redis.call('XADD', KEYS[3], '*', 'v', ARGV[1], 'c', ARGV[2], 'b', ARGV[6], 'r', ARGV[7])
redis.call('SET', KEYS[2], id, 'EX', tonumber(ARGV[3]))
count_vote(aggregates_root(KEYS[4], ARGV[11], KEYS[3]), ARGV[6], ARGV[2], cjson.decode(ARGV[1]), ARGV[7], false)
return {1, id}
"""

# A vote on a battle stored with its vote template (`put_battle(..., vote_base=...)`): the
# same checks and writes as VOTE_LUA, but the vote record is assembled here from the
# battle's static part and the vote's own fields, so a vote costs one round trip. The
# aggregates read the battle's small `agg` record (models, category, source, question)
# rather than decoding the whole vote.
# KEYS: as VOTE_LUA
# ARGV: choice, vote fields JSON, tstamp, voted-flag TTL, rate limit, rate window, board, reviewer,
#       minimum time to vote (s), address rate limit, aggregates prefix
BATTLE_VOTE_LUA = COUNT_VOTE_LUA + """
local b = redis.call('HMGET', KEYS[1], 'vote_base', 'created_at', 'model_a', 'model_b', 'count:' .. ARGV[1], 'agg')
if not b[1] or not b[5] then
  if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, ''} end
  if redis.call('HEXISTS', KEYS[1], 'answering') == 0 then return {-4, ''} end
end
""" + _vote_checks_lua(reviewer=8, now=3, min_wait=9, limit=5, window=6, address_limit=10) + """local waited = math.max(0, tonumber(ARGV[3]) - tonumber(b[2]))
local vote = string.sub(b[1], 1, -2) .. ',' .. string.sub(ARGV[2], 2, -2) .. ',"time_to_vote_s":' .. string.format('%.3f', waited) .. '}'
local id = redis.call('XADD', KEYS[3], '*', 'v', vote, 'c', b[5], 'b', ARGV[7], 'r', ARGV[8])
redis.call('SET', KEYS[2], id, 'EX', tonumber(ARGV[4]))
local v
if b[6] then
  v = cjson.decode(b[6])
  v.winner = ({a = 'model_a', b = 'model_b', tie = 'tie', both_bad = 'tie (bothbad)'})[ARGV[1]]
else
  v = cjson.decode(vote)
end
count_vote(aggregates_root(KEYS[4], ARGV[11], KEYS[3]), ARGV[7], b[5], v, ARGV[8], false)
return {1, id, b[3], b[4]}
"""

# An observation by an excluded reviewer is logged but not counted, as the rebuild would.
# KEYS: stream, current aggregates generation, excluded reviewers
# ARGV: vote JSON, count field, board, reviewer, aggregates prefix
OBSERVATION_LUA = COUNT_VOTE_LUA + """
local id = redis.call('XADD', KEYS[1], '*', 'v', ARGV[1], 'c', ARGV[2], 'b', ARGV[3], 'r', ARGV[4])
local excluded = ARGV[4] ~= '' and redis.call('SISMEMBER', KEYS[3], ARGV[4]) == 1
count_vote(aggregates_root(KEYS[2], ARGV[5], KEYS[1]), ARGV[3], ARGV[2], cjson.decode(ARGV[1]), ARGV[4], excluded)
return id
"""
