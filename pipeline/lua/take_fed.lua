-- Take steps from the feed's head for one pump to send. See pipeline.due.DueSteps.take_fed.
-- KEYS[1] the feed (a list), KEYS[2] the steps being sent (member -> lease end)
-- ARGV[1] how many at most, ARGV[2] the lease (s): a pump that dies before it has sent what
-- it took leaves them to the next pump once the lease is over (take_due.lua takes them), as
-- for due steps; a step popped from the feed is never held only by a pump's memory.
local taken = redis.call('LPOP', KEYS[1], tonumber(ARGV[1]))
if not taken then
  return {}
end
local now = redis.call('TIME')
local until_s = tonumber(now[1]) + tonumber(now[2]) / 1000000 + tonumber(ARGV[2])
for _, member in ipairs(taken) do
  redis.call('ZADD', KEYS[2], until_s, member)
end
return taken
