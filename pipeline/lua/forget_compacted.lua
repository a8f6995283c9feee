-- Forget compacted items' own records and take them out of their batch's done set, counting
-- them in the batch's `done_compacted` instead (they stay done: a compacted item never moves
-- again). Run twice on the same items, it counts nothing twice.
-- KEYS: batch done-set, batch hash, then each item's hash. ARGV: the batch field counting its
-- compacted items (`done_compacted`), then the items' ids, in KEYS[3..]'s order. Returns how
-- many left the done set.
local gone = 0
for n = 2, #ARGV do
  redis.call('DEL', KEYS[n + 1])
  gone = gone + redis.call('SREM', KEYS[1], ARGV[n])
end
if gone > 0 then
  redis.call('HINCRBY', KEYS[2], ARGV[1], gone)
end
return gone
