-- Keep steps until they are due, on Redis's clock. See pipeline.due.DueSteps.schedule.
-- KEYS[1] the due steps; ARGV: member, countdown (s), member, countdown, ...
-- Of two copies of one step the earlier stays (ZADD LT): they would do the same work.
local now = redis.call('TIME')
local now_s = tonumber(now[1]) + tonumber(now[2]) / 1000000
for i = 1, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], 'LT', now_s + tonumber(ARGV[i + 1]), ARGV[i])
end
return #ARGV / 2
