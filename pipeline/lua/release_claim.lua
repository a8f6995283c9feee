-- Drop a pair's claim if this owner still holds it unfinished. KEYS: content hash. ARGV: owner.
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] and redis.call('HGET', KEYS[1], 'state') == 'claimed' then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
