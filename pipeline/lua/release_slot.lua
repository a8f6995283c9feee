-- Give a slot back, give the turn up, and name the waiters to wake. See
-- pipeline.gates.Gates.release_slot. KEYS: slots, waiters, turn. ARGV: member to release
-- (or ''), limit, max concurrent, turn lease ms, member giving the turn up (or ''), most
-- queue places filled in order.
local now = redis.call('TIME')
local now_s = tonumber(now[1]) + tonumber(now[2]) / 1000000
if ARGV[1] ~= '' then redis.call('ZREM', KEYS[1], ARGV[1]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_s)
if ARGV[5] ~= '' and redis.call('GET', KEYS[3]) == ARGV[5] then redis.call('DEL', KEYS[3]) end
local held = redis.call('ZCARD', KEYS[1])
local free = tonumber(ARGV[2]) - held
if free <= 0 then return {} end
-- As many as the provider starts at once go together; one more, to its queue, takes the turn
-- (with more places free in its queue than are filled in order, all go together).
local at_once = math.min(free, math.max(0, tonumber(ARGV[3]) - held))
if free - at_once > tonumber(ARGV[6]) then at_once = free end
local woken = {}
if at_once > 0 then woken = redis.call('ZRANGE', KEYS[2], 0, at_once - 1) end
if free > #woken and redis.call('EXISTS', KEYS[3]) == 0 then
  local next_in_line = redis.call('ZRANGE', KEYS[2], #woken, #woken)
  if next_in_line[1] then
    redis.call('SET', KEYS[3], next_in_line[1], 'PX', ARGV[4])
    table.insert(woken, next_in_line[1])
  end
end
if #woken > 0 then redis.call('ZREM', KEYS[2], unpack(woken)) end
return woken
