-- Give a slot back and name the waiters to wake. See pipeline.gates.Gates.release_slot.
local now = redis.call('TIME')
local now_s = tonumber(now[1]) + tonumber(now[2]) / 1000000
if ARGV[1] ~= '' then redis.call('ZREM', KEYS[1], ARGV[1]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_s)
local free = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[1])
if free <= 0 then return {} end
local woken = redis.call('ZRANGE', KEYS[2], 0, free - 1)
if #woken > 0 then redis.call('ZREM', KEYS[2], unpack(woken)) end
return woken
