-- A start's POST has its answer (or was given up): the provider counted it no later than
-- now, so the start is recorded at now if it was reserved earlier. See
-- pipeline.gates.Gates.anchor_start. KEYS: the start log. ARGV: reservation name.
local now = redis.call('TIME')
local now_s = tonumber(now[1]) + tonumber(now[2]) / 1000000
local at = redis.call('ZSCORE', KEYS[1], ARGV[1])
if at and tonumber(at) < now_s then
  redis.call('ZADD', KEYS[1], now_s, ARGV[1])
  return 1
end
return 0
