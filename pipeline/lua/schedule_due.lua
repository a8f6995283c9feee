-- Keep steps until they are due, on Redis's clock. See pipeline.due.DueSteps.schedule.
-- KEYS[1] the due steps, KEYS[2] the pumps' nudge (a list of at most one token)
-- ARGV[1] nudge within (s): a step due sooner than this wakes a pump, which otherwise would
-- see it only at its next regular look, later than the step is due; the nudge's TTL (ms)
-- ARGV[3..]: member, countdown (s), member, countdown, ...
-- Of two copies of one step the earlier stays (ZADD LT): they would do the same work.
local now = redis.call('TIME')
local now_s = tonumber(now[1]) + tonumber(now[2]) / 1000000
local soonest = nil
for i = 3, #ARGV, 2 do
  local countdown = tonumber(ARGV[i + 1])
  redis.call('ZADD', KEYS[1], 'LT', now_s + countdown, ARGV[i])
  if soonest == nil or countdown < soonest then soonest = countdown end
end
if soonest ~= nil and soonest < tonumber(ARGV[1]) then
  redis.call('LPUSH', KEYS[2], '1')
  redis.call('LTRIM', KEYS[2], 0, 0)
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]))
end
return (#ARGV - 2) / 2
