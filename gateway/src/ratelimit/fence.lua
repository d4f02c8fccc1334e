-- Settles a gateway's calls whose answers were lost (redis-gcra.ts): from now on every call
-- numbered up to ARGV[1] is refused unapplied (gcra.lua, reconcile.lua), however late it lands,
-- and the reply says which of them had been applied. Running it twice answers the same.
--
-- KEYS[1]   the gateway's call log (numbers of the admitting calls applied, not yet acknowledged)
-- KEYS[2]   its fence
-- ARGV[1]   the number of the last call the gateway sent
-- returns   the numbers in the log up to ARGV[1]
local fence = tonumber(ARGV[1])
if fence > (tonumber(redis.call('GET', KEYS[2])) or 0) then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', 86400000)
end
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', fence)
