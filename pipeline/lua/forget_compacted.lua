-- Forget compacted items' own records and take them out of their batch's done set, counting
-- them in the batch's `done_compacted` instead (they stay done: a compacted item never moves
-- again). Run twice on the same items, it counts nothing twice.
-- KEYS: batch done-set, batch hash, then each item's hash. ARGV: the items' ids, in KEYS[3..]'s
-- order. Returns how many left the done set.
local gone = 0
for n, item_id in ipairs(ARGV) do
  redis.call('DEL', KEYS[n + 2])
  gone = gone + redis.call('SREM', KEYS[1], item_id)
end
if gone > 0 then
  redis.call('HINCRBY', KEYS[2], 'done_compacted', gone)
end
return gone
