"""The Lua that keeps the leaderboards' aggregates: ONE counting function (`COUNT_VOTE_LUA`)
that every vote script runs in the same call that logs the vote, and that the rebuild
replays over the log, so live counting and recounting cannot disagree.

What a counted vote updates, under its generation's root `<prefix>:agg:<gen>:`, for each
slice it belongs to (`all`, `c=<category>`, `s=<source>`, `cs=<category>\\x1f<source>`, and
`c=<tag>` for each of its category tags, e.g. `c=language=zh`):

- `counts:<board>:<slice>`: pair counts (field `lo\\x1fhi\\x1foutcome`, as `count_field`);
- `elo:<board>:<slice>`: each model's running online Elo (arena.elo's K, scale, base, start);
- `units:judge:<slice>`: the judge board's bootstrap units by kind
  (`lo\\x1fhi\\x1fwins_lo\\x1fwins_hi\\x1fties` → units), a judgement's verdicts being one unit;
- `summary:<slice>`: `votes:<board>` (the votes counted: with the generation, the board's
  version, which the board refresher watches), judge consistency (`both_orders`, `inconsistent`) and the
  judge–human agreement counts as `arena.agreement` makes them (`matched`, `pairs`, `agree`,
  `decisive`, `decisive_pairs`, `agree_decisive`), kept exact per vote from
  `item:<question>\x1f<turn>\x1f<lo>\x1f<hi>` (verdicts per slice, board and winning model or "tie").

Every logged vote, counted or not (an excluded reviewer's observation), also adds its
category and source to the `categories` / `sources` sets (a counted vote its tags too) and its reviewer's human votes to
`reviewers`. The current generation's number is in `<prefix>:agg:current` (absent: "0");
a rebuild counts the whole log into a new generation and switches to it atomically.
"""

from __future__ import annotations

from arena.elo import BASE, INIT_RATING, K, SCALE

#: A judgement's verdicts arrive together (one judging call logs both orders); its unit kind
#: so far is kept this long for the second verdict to join.
JUDGEMENT_TTL_S = 7 * 86400

COUNT_VOTE_LUA = f"""
local SEP = '\\31'
local K, SCALE, BASE, INIT = {K!r}, {SCALE!r}, {BASE!r}, {INIT_RATING!r}

local function text(x) if type(x) == 'string' then return x end return '' end

-- The root of the current generation; the first vote of an empty log starts generation 0,
-- so a store whose votes all went through here is never mistaken for one to rebuild.
local function aggregates_root(gen_key, prefix, stream)
  local gen = redis.call('GET', gen_key)
  if not gen then
    gen = '0'
    if redis.call('XLEN', stream) <= 1 then redis.call('SET', gen_key, gen) end
  end
  return prefix .. gen .. ':'
end

local function slices_of(category, source)
  local s = {{'all'}}
  if category ~= '' then s[#s + 1] = 'c=' .. category end
  if source ~= '' then s[#s + 1] = 's=' .. source end
  if category ~= '' and source ~= '' then s[#s + 1] = 'cs=' .. category .. SEP .. source end
  return s
end

-- A vote's category tags (`categories`, service.prompt_categories): each is one more
-- category slice `c=<tag>` (a tag equal to the pool category is that slice already), and
-- a filter choice. Not crossed with the source.
local function add_tag_slices(root, slices, tags, category)
  if type(tags) ~= 'table' then return end
  for _, tag in ipairs(tags) do
    if type(tag) == 'string' and tag ~= '' and tag ~= category then
      redis.call('SADD', root .. 'categories', tag)
      slices[#slices + 1] = 'c=' .. tag
    end
  end
end

local function update_elo(key, a, b, score)
  local r = redis.call('HMGET', key, a, b)
  local ra, rb = tonumber(r[1]) or INIT, tonumber(r[2]) or INIT
  local delta = K * (score - 1.0 / (1.0 + BASE ^ ((rb - ra) / SCALE)))
  redis.call('HSET', key, a, string.format('%.17g', ra + delta), b, string.format('%.17g', rb - delta))
end

-- One item's share of the agreement sums (as arena.agreement, MT-Bench's counting): every
-- cross pair of a judge verdict and a human verdict on the item is compared; returns
-- matched (0/1), pairs, agreeing pairs, decisive (0/1), decisive pairs, agreeing decisive pairs.
local function agreement_terms(j, h)
  local nj, nh, tj, th, same, same_decisive = 0, 0, 0, 0, 0, 0
  for verdict, n in pairs(j) do nj = nj + n; if verdict == 'tie' then tj = n end end
  for verdict, n in pairs(h) do nh = nh + n; if verdict == 'tie' then th = n end end
  if nj == 0 or nh == 0 then return 0, 0, 0, 0, 0, 0 end
  for verdict, n in pairs(j) do
    local m = h[verdict]
    if m then
      same = same + n * m
      if verdict ~= 'tie' then same_decisive = same_decisive + n * m end
    end
  end
  local decisive = (nj - tj) * (nh - th)
  local any_decisive = 0
  if decisive > 0 then any_decisive = 1 end
  return 1, nj * nh, same, any_decisive, decisive, same_decisive
end

local AGREEMENT_FIELDS = {{'matched', 'pairs', 'agree', 'decisive', 'decisive_pairs', 'agree_decisive'}}

-- `item`: question, turn and pair, so a question asked of several pairs is several items.
-- The item's hash (fields `slice SEP board SEP verdict`) is read and split once, not once a slice.
local function count_agreement(root, slices, board, item, verdict)
  local key = root .. 'item:' .. item
  local raw = redis.call('HGETALL', key)
  local seen = {{}}
  for i = 1, #raw, 2 do
    local s, b, v = string.match(raw[i], '^(.*)\\31([^\\31]*)\\31([^\\31]*)$')  -- a slice name may hold SEP
    if s then
      local per = seen[s]
      if not per then per = {{human = {{}}, judge = {{}}}}; seen[s] = per end
      if per[b] then per[b][v] = tonumber(raw[i + 1]) end
    end
  end
  for _, s in ipairs(slices) do
    local per = seen[s] or {{human = {{}}, judge = {{}}}}
    local j, h = per.judge, per.human
    local before = {{agreement_terms(j, h)}}
    local mine = per[board]
    mine[verdict] = (mine[verdict] or 0) + 1
    redis.call('HINCRBY', key, s .. SEP .. board .. SEP .. verdict, 1)
    local after = {{agreement_terms(j, h)}}
    local summary = root .. 'summary:' .. s
    for k, name in ipairs(AGREEMENT_FIELDS) do
      if after[k] ~= before[k] then redis.call('HINCRBY', summary, name, after[k] - before[k]) end
    end
  end
end

-- Count one logged vote `v` (its decoded fields) of `board` into the aggregates under
-- `root`; `field` is its pair-count field. Returns 1 when counted, 0 when only noted
-- (an excluded reviewer's).
local function count_vote(root, board, field, v, reviewer, excluded)
  local category, source = text(v.category), text(v.source)
  if category ~= '' then redis.call('SADD', root .. 'categories', category) end
  if source ~= '' then redis.call('SADD', root .. 'sources', source) end
  if board == 'human' and reviewer ~= '' then redis.call('HINCRBY', root .. 'reviewers', reviewer, 1) end
  if excluded then return 0 end
  local model_a, model_b, winner = v.model_a, v.model_b, v.winner
  local score = 0.5
  if winner == 'model_a' then score = 1.0 elseif winner == 'model_b' then score = 0.0 end
  local slices = slices_of(category, source)
  add_tag_slices(root, slices, v.categories, category)
  local judgement = text(v.judgement)
  local old_kind, new_kind, first_sight = nil, nil, true
  if board == 'judge' then
    local lo, hi, outcome = string.match(field, '^(.-)\\31(.-)\\31(.*)$')
    local w = {{0, 0, 0}}
    local jkey = root .. 'judgement:' .. judgement
    if judgement ~= '' then
      old_kind = redis.call('GET', jkey)
      if old_kind then
        first_sight = false
        local olo, ohi, x, y, z = string.match(old_kind, '^(.-)\\31(.-)\\31(%d+)\\31(%d+)\\31(%d+)$')
        if olo == lo and ohi == hi then w = {{tonumber(x), tonumber(y), tonumber(z)}} else old_kind = nil end
      end
    end
    if outcome == 'lo' then w[1] = w[1] + 1 elseif outcome == 'hi' then w[2] = w[2] + 1 else w[3] = w[3] + 1 end
    new_kind = lo .. SEP .. hi .. SEP .. w[1] .. SEP .. w[2] .. SEP .. w[3]
    if judgement ~= '' then redis.call('SET', jkey, new_kind, 'EX', {JUDGEMENT_TTL_S}) end
  end
  for _, s in ipairs(slices) do
    redis.call('HINCRBY', root .. 'counts:' .. board .. ':' .. s, field, 1)
    update_elo(root .. 'elo:' .. board .. ':' .. s, model_a, model_b, score)
    local summary = root .. 'summary:' .. s
    redis.call('HINCRBY', summary, 'votes:' .. board, 1)
    if board == 'judge' then
      local units = root .. 'units:judge:' .. s
      if old_kind and redis.call('HINCRBY', units, old_kind, -1) <= 0 then redis.call('HDEL', units, old_kind) end
      redis.call('HINCRBY', units, new_kind, 1)
      if judgement ~= '' and first_sight and (v.consistent == true or v.consistent == false) then
        redis.call('HINCRBY', summary, 'both_orders', 1)
        if v.consistent == false then redis.call('HINCRBY', summary, 'inconsistent', 1) end
      end
    end
  end
  local qid = text(v.question_id)
  if qid ~= '' then
    local verdict = 'tie'
    if winner == 'model_a' then verdict = model_a elseif winner == 'model_b' then verdict = model_b end
    local lo, hi = model_a, model_b
    if hi < lo then lo, hi = model_b, model_a end
    local item = qid .. SEP .. string.format('%d', tonumber(v.turn) or 1) .. SEP .. lo .. SEP .. hi
    count_agreement(root, slices, board, item, verdict)
  end
  return 1
end
"""

# Count the next `count` logged votes after `after` into generation `gen`; when the log
# ends within them, make `gen` current in the same call, so no vote falls between; unless
# a recount started later (a higher generation: a later exclusion) is current already: then
# `gen` is stale (it may count a reviewer excluded since it began) and is returned as the
# generation to drop.
# KEYS: stream, current-generation key, excluded reviewers
# ARGV: aggregates prefix, gen, after ('' = from the start), count
# Returns {done, last id, human counted, judge counted, previous generation}.
REBUILD_CHUNK_LUA = COUNT_VOTE_LUA + """
local root = ARGV[1] .. ARGV[2] .. ':'
local start = '-'
if ARGV[3] ~= '' then start = '(' .. ARGV[3] end
local entries = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', tonumber(ARGV[4]))
local human, judge, last = 0, 0, ARGV[3]
for _, entry in ipairs(entries) do
  last = entry[1]
  local f = {}
  for k = 1, #entry[2], 2 do f[entry[2][k]] = entry[2][k + 1] end
  local board = f['b'] or 'human'
  if (board == 'human' or board == 'judge') and f['c'] and f['v'] then
    local reviewer = f['r'] or ''
    local excluded = reviewer ~= '' and redis.call('SISMEMBER', KEYS[3], reviewer) == 1
    if count_vote(root, board, f['c'], cjson.decode(f['v']), reviewer, excluded) == 1 then
      if board == 'human' then human = human + 1 else judge = judge + 1 end
    end
  end
end
if #entries < tonumber(ARGV[4]) then
  local previous = redis.call('GET', KEYS[2]) or '0'
  if tonumber(previous) > tonumber(ARGV[2]) then return {1, last, human, judge, ARGV[2]} end
  redis.call('SET', KEYS[2], ARGV[2])
  return {1, last, human, judge, previous}
end
return {0, last, human, judge, ''}
"""

# Whether the aggregates exist: 1 when a generation is current (or the log is empty, when
# generation 0 starts now), 0 when votes were logged before aggregates were kept.
# KEYS: current-generation key, stream
ENSURE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
if redis.call('XLEN', KEYS[2]) == 0 then redis.call('SET', KEYS[1], '0'); return 1 end
return 0
"""

# One board's aggregates, read in one atomic step.
# KEYS: current-generation key; ARGV: aggregates prefix, board, slice
# Returns {gen, version, counts, elo, units} (the hashes flat).
READ_BOARD_LUA = """
local gen = redis.call('GET', KEYS[1]) or '0'
local root = ARGV[1] .. gen .. ':'
local board, s = ARGV[2], ARGV[3]
return {gen, redis.call('HGET', root .. 'summary:' .. s, 'votes:' .. board) or '0',
        redis.call('HGETALL', root .. 'counts:' .. board .. ':' .. s),
        redis.call('HGETALL', root .. 'elo:' .. board .. ':' .. s),
        redis.call('HGETALL', root .. 'units:' .. board .. ':' .. s)}
"""

# The versions of some boards. KEYS: current-generation key; ARGV: prefix, then board, slice pairs.
READ_VERSIONS_LUA = """
local gen = redis.call('GET', KEYS[1]) or '0'
local out = {gen}
for i = 2, #ARGV, 2 do
  out[#out + 1] = redis.call('HGET', ARGV[1] .. gen .. ':summary:' .. ARGV[i + 1], 'votes:' .. ARGV[i]) or '0'
end
return out
"""

# A slice's summary, the filters' choices, the votes logged and the reviewers excluded.
# KEYS: current-generation key, stream, excluded reviewers; ARGV: prefix, slice
READ_SUMMARY_LUA = """
local root = ARGV[1] .. (redis.call('GET', KEYS[1]) or '0') .. ':'
return {redis.call('HGETALL', root .. 'summary:' .. ARGV[2]), redis.call('SMEMBERS', root .. 'categories'),
        redis.call('SMEMBERS', root .. 'sources'), redis.call('XLEN', KEYS[2]), redis.call('SCARD', KEYS[3])}
"""

# The reviewers' logged human votes. KEYS: current-generation key; ARGV: prefix
READ_REVIEWERS_LUA = """
return redis.call('HGETALL', ARGV[1] .. (redis.call('GET', KEYS[1]) or '0') .. ':reviewers')
"""
