-- Turn an item's reservation into its final cost, once.
-- KEYS: budget hashes..., item hash. ARGV: final micro-USD. Returns 1 when settled now.
local item = KEYS[#KEYS]
-- An item whose record is gone (compacted) was settled before: never book it again.
if redis.call('EXISTS', item) == 0 then return 0 end
if redis.call('HGET', item, 'settled') == '1' then return 0 end
local held = tonumber(redis.call('HGET', item, 'reserved_micros') or '0')
local final = tonumber(ARGV[1])
for i = 1, #KEYS - 1 do
  -- (Lua's -0 is not an integer to Redis: skip zero increments)
  if held ~= 0 then redis.call('HINCRBY', KEYS[i], 'reserved_micros', 0 - held) end
  if final ~= 0 then redis.call('HINCRBY', KEYS[i], 'spent_micros', final) end
end
redis.call('HSET', item, 'reserved_micros', 0, 'settled', '1', 'cost_micros', final)
return 1
