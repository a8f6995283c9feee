-- Reserve a start time within the per-minute limit (a log of reservations).
-- See pipeline.gates.Gates.reserve_start for KEYS and ARGV.
local now = redis.call('TIME')
local now_s = tonumber(now[1]) + tonumber(now[2]) / 1000000
local limit = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. tostring(now_s - window))
local mine = redis.call('ZSCORE', KEYS[1], ARGV[1])
if mine then
  -- Asked again (at its time, or by a redelivered task): the starts before it may have
  -- moved later since (each is anchored at its POST's answer), so it keeps a window after
  -- the start `limit` places before it, moving later itself if it must.
  local at = tonumber(mine)
  for _ = 1, limit + 1 do
    local rank = redis.call('ZRANK', KEYS[1], ARGV[1])
    if rank < limit then break end
    local before = redis.call('ZRANGE', KEYS[1], rank - limit, rank - limit, 'WITHSCORES')
    local due = tonumber(before[2]) + window
    if due <= at then break end
    at = due
    redis.call('ZADD', KEYS[1], at, ARGV[1])
  end
  return tostring(at - now_s)
end
local at = now_s
local count = redis.call('ZCARD', KEYS[1])
if count >= limit then
  local kth = redis.call('ZRANGE', KEYS[1], -limit, -limit, 'WITHSCORES')
  at = math.max(at, tonumber(kth[2]) + window)
end
if count > 0 then
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  at = math.max(at, tonumber(last[2]))
end
redis.call('ZADD', KEYS[1], at, ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(window * 2 + 60))
return tostring(at - now_s)
