-- Reserve a start within the per-minute limit. See pipeline.gates.Gates.reserve_start.
-- KEYS: the plan (reservation -> its planned time, or its start once made), the starts made
-- (reservation -> the moment the provider counted it by: when it passed, then its answer).
-- ARGV: reservation name, starts allowed per window, window s.
-- Returns {1, "0"} when the start may go now (it is recorded as made), else {0, seconds}.
local now = redis.call('TIME')
local now_s = tonumber(now[1]) + tonumber(now[2]) / 1000000
local name = ARGV[1]
local limit = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local function exact(x) return string.format('%.6f', x) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. exact(now_s - window))
-- A start made exactly one window ago has left (the provider's window is that long).
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', exact(now_s - window))

-- The plan: one window after the start `limit` places before this one.
local at = tonumber(redis.call('ZSCORE', KEYS[1], name))
if at then
  -- Asked again (at its time, or by a redelivered task): the starts before it may have
  -- moved later since (each is recorded again at its POST's answer).
  for _ = 1, limit + 1 do
    local rank = redis.call('ZRANK', KEYS[1], name)
    if rank < limit then break end
    local before = redis.call('ZRANGE', KEYS[1], rank - limit, rank - limit, 'WITHSCORES')
    local due = tonumber(before[2]) + window
    if due <= at then break end
    at = due
    redis.call('ZADD', KEYS[1], exact(at), name)
  end
else
  -- New: after every reservation already made too (first asked, first started).
  at = now_s
  local count = redis.call('ZCARD', KEYS[1])
  if count >= limit then
    local kth = redis.call('ZRANGE', KEYS[1], -limit, -limit, 'WITHSCORES')
    at = math.max(at, tonumber(kth[2]) + window)
  end
  if count > 0 then
    local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
    at = math.max(at, tonumber(last[2]))
  end
end

-- A plan due within a millisecond is due (a countdown can come back a hair early).
if at - now_s <= 0.001 then at = now_s end

-- What decides: the starts made, wherever their answers put them. An answer can move a
-- start past reservations planned after it (POSTs in flight together), so the plan's order
-- does not say which starts share a window. Room for this one means the `limit`-th newest
-- of the others has left the window.
local others = redis.call('ZCARD', KEYS[2])
local own_rank = redis.call('ZRANK', KEYS[2], name)
if own_rank then others = others - 1 end
if others >= limit then
  local index = others - limit
  if own_rank and own_rank <= index then index = index + 1 end
  local leaving = redis.call('ZRANGE', KEYS[2], index, index, 'WITHSCORES')
  at = math.max(at, tonumber(leaving[2]) + window)
end

local passed = at <= now_s
if passed then
  at = now_s
  redis.call('ZADD', KEYS[2], exact(now_s), name)
end
redis.call('ZADD', KEYS[1], exact(at), name)
-- Kept while any reservation is ahead, and two windows after it.
local furthest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local ttl_s = math.max(0, tonumber(furthest[2]) - now_s) + window * 2 + 60
redis.call('PEXPIRE', KEYS[1], math.ceil(ttl_s * 1000))
redis.call('PEXPIRE', KEYS[2], math.ceil((window * 2 + 60) * 1000))
if passed then return {1, '0'} end
return {0, exact(at - now_s)}
