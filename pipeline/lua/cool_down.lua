-- After a 429: every worker holds off until the later of now+wait and the current end.
-- KEYS: the cool-down, the 429 counter. ARGV: the wait in ms.
local current = redis.call('PTTL', KEYS[1])
local wanted = tonumber(ARGV[1])
if current < wanted then redis.call('SET', KEYS[1], '1', 'PX', wanted) end
redis.call('INCR', KEYS[2])
return 1
