-- Take the steps that are due, for one pump to send. See pipeline.due.DueSteps.take.
-- KEYS[1] the due steps, KEYS[2] the steps being sent (member -> lease end)
-- ARGV[1] how many at most, ARGV[2] the lease (s): a pump that dies before it has sent
-- what it took leaves them to the next pump once the lease is over.
local now = redis.call('TIME')
local now_s = tonumber(now[1]) + tonumber(now[2]) / 1000000
local limit = tonumber(ARGV[1])
local taken = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_s, 'LIMIT', 0, limit)
if #taken < limit then
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_s, 'LIMIT', 0, limit - #taken)
  if #due > 0 then
    redis.call('ZREM', KEYS[1], unpack(due))
    for _, member in ipairs(due) do table.insert(taken, member) end
  end
end
for _, member in ipairs(taken) do
  redis.call('ZADD', KEYS[2], now_s + tonumber(ARGV[2]), member)
end
return taken
