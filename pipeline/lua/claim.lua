-- Who pays for a pair: reuse a completed output, wait for its owner, or own it.
-- KEYS: content hash. ARGV: owner, 1 to force, TTL s. Returns {kind, owner, output_key}.
local state = redis.call('HGET', KEYS[1], 'state')
local owner = redis.call('HGET', KEYS[1], 'owner')
if ARGV[2] ~= '1' and state == 'completed' then
  return {'reuse', owner, redis.call('HGET', KEYS[1], 'output_key') or ''}
end
if ARGV[2] ~= '1' and state == 'claimed' and owner ~= ARGV[1] then
  return {'wait', owner, ''}
end
redis.call('HSET', KEYS[1], 'state', 'claimed', 'owner', ARGV[1], 'output_key', '')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return {'own', ARGV[1], ''}
