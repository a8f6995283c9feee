-- Take one of the account's concurrency slots, or queue for one: the slots held with this
-- one (so at least 1), or 0 when none was free. See pipeline.gates.Gates.acquire_slot.
local now = redis.call('TIME')
local now_s = tonumber(now[1]) + tonumber(now[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_s)
local lease_end = now_s + tonumber(ARGV[3])
if redis.call('ZSCORE', KEYS[1], ARGV[1])
   or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], lease_end, ARGV[1])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
  redis.call('ZREM', KEYS[2], ARGV[1])
  return redis.call('ZCARD', KEYS[1])
end
redis.call('ZADD', KEYS[2], 'NX', now_s, ARGV[1])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
return 0
