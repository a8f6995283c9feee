-- Give back an item's reservation (it will not be paid). KEYS: budget hashes..., item hash.
local item = KEYS[#KEYS]
if redis.call('HGET', item, 'settled') == '1' then return 0 end
local held = tonumber(redis.call('HGET', item, 'reserved_micros') or '0')
if held == 0 then return 0 end
for i = 1, #KEYS - 1 do redis.call('HINCRBY', KEYS[i], 'reserved_micros', 0 - held) end
redis.call('HSET', item, 'reserved_micros', 0, 'reserved_in', '')
return 1
