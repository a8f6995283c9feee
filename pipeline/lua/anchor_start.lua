-- A start's POST has its answer (or was given up): the provider counted it no later than
-- now, so a start made earlier is recorded at now, in the starts made and in the plan. See
-- pipeline.gates.Gates.anchor_start. KEYS: the plan, the starts made. ARGV: reservation name.
local now = redis.call('TIME')
local now_s = tonumber(now[1]) + tonumber(now[2]) / 1000000
local at = redis.call('ZSCORE', KEYS[2], ARGV[1])
if at and tonumber(at) < now_s then
  local stamp = string.format('%.6f', now_s)
  redis.call('ZADD', KEYS[2], stamp, ARGV[1])
  if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
    redis.call('ZADD', KEYS[1], stamp, ARGV[1])
  end
  return 1
end
return 0
