-- Move an item if its state is allowed and its fence holds; keep the batch's done-set (its
-- final items but the compacted ones, which the batch hash counts as `done_compacted`).
-- KEYS: item hash, batch done-set, batch hash. ARGV: allowed states (JSON), new state,
-- fields (JSON), 1 when the new state is final, item id, fence fields (JSON), the batch
-- field counting its compacted items (`done_compacted`).
-- Returns {ok, state, done, total}. The batch hash keeps how many items are in each state
-- (`n:<state>`), moved here with the item, so a batch's status never reads its items.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {0, '', 0, 0} end
local allowed = cjson.decode(ARGV[1])
local ok = false
for _, s in ipairs(allowed) do if s == state then ok = true end end
if not ok then return {0, state, 0, 0} end
for k, v in pairs(cjson.decode(ARGV[6])) do
  if (redis.call('HGET', KEYS[1], k) or '') ~= v then return {0, state, 0, 0} end
end
local write = {'state', ARGV[2]}
for k, v in pairs(cjson.decode(ARGV[3])) do
  write[#write + 1] = k
  write[#write + 1] = v
end
redis.call('HSET', KEYS[1], unpack(write))
if state ~= ARGV[2] then
  redis.call('HINCRBY', KEYS[3], 'n:' .. state, -1)
  redis.call('HINCRBY', KEYS[3], 'n:' .. ARGV[2], 1)
end
if ARGV[4] == '1' then
  redis.call('SADD', KEYS[2], ARGV[5])
else
  if redis.call('SREM', KEYS[2], ARGV[5]) == 1 then
    redis.call('HSET', KEYS[3], 'state', 'running')
  end
end
local done = redis.call('SCARD', KEYS[2])
  + tonumber(redis.call('HGET', KEYS[3], ARGV[7]) or '0')
local total = tonumber(redis.call('HGET', KEYS[3], 'item_count') or '0')
return {1, ARGV[2], done, total}
