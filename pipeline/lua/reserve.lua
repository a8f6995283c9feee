-- Reserve an item's estimate in every budget at once, or in none.
-- KEYS: budget hashes..., item hash. ARGV: micro-USD, the scope names. Returns 1 or 0.
local item = KEYS[#KEYS]
local held = tonumber(redis.call('HGET', item, 'reserved_micros') or '0')
if held > 0 or redis.call('HGET', item, 'settled') == '1' then return 1 end
local amount = tonumber(ARGV[1])
for i = 1, #KEYS - 1 do
  local limit = redis.call('HGET', KEYS[i], 'limit_micros')
  local reserved = tonumber(redis.call('HGET', KEYS[i], 'reserved_micros') or '0')
  local spent = tonumber(redis.call('HGET', KEYS[i], 'spent_micros') or '0')
  if limit and limit ~= '' and reserved + spent + amount > tonumber(limit) then return 0 end
end
for i = 1, #KEYS - 1 do redis.call('HINCRBY', KEYS[i], 'reserved_micros', amount) end
redis.call('HSET', item, 'reserved_micros', amount, 'reserved_in', ARGV[2])
return 1
