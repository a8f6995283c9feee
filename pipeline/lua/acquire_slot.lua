-- Take one of the account's concurrency slots, or wait in line for one. See
-- pipeline.gates.Gates.acquire_slot. KEYS: slots, waiters, turn. ARGV: member, limit, lease s,
-- key TTL s, max concurrent, place in line ('' for now), turn lease ms, most queue places
-- filled in order.
-- Returns {slots held with this one (0: none taken), a waiter to wake ('' for none)}.
local now = redis.call('TIME')
local now_s = tonumber(now[1]) + tonumber(now[2]) / 1000000
local member, limit, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4])
local place = now_s
if ARGV[6] ~= '' then place = tonumber(ARGV[6]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_s)
local held = redis.call('ZCARD', KEYS[1])
local function take()
  redis.call('ZADD', KEYS[1], now_s + tonumber(ARGV[3]), member)
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('ZREM', KEYS[2], member)
  return {redis.call('ZCARD', KEYS[1]), ''}
end
local function wait_in_line()
  redis.call('ZADD', KEYS[2], 'NX', place, member)
  redis.call('EXPIRE', KEYS[2], ttl)
end
-- Held already (a task run again), or the provider starts it at once: order does not matter.
if redis.call('ZSCORE', KEYS[1], member) or held < tonumber(ARGV[5]) then return take() end
-- Many places free in the provider's queue: filled together (one at a time would not keep up).
if limit - held > tonumber(ARGV[8]) then return take() end
local turn = redis.call('GET', KEYS[3])
if held < limit and (not turn or turn == member) then
  -- Queued at the provider, which starts its queue in the order the POSTs arrived: the
  -- first in line posts, alone, holding the turn until its answer.
  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  local ahead = first[1] and first[1] ~= member
    and (tonumber(first[2]) < place or (tonumber(first[2]) == place and first[1] < member))
  if not ahead then
    redis.call('SET', KEYS[3], member, 'PX', ARGV[7])
    return take()
  end
  redis.call('SET', KEYS[3], first[1], 'PX', ARGV[7])
  redis.call('ZREM', KEYS[2], first[1])
  wait_in_line()
  return {0, first[1]}
end
-- No room (a turn holder finding none gives the turn up: the next freed slot wakes the line).
if turn == member then redis.call('DEL', KEYS[3]) end
wait_in_line()
return {0, ''}
