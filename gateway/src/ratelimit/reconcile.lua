-- Writes back what a gateway's `local` fallback admitted while Redis was unreachable (see
-- fallback-ledger.ts), so that the shared budget counts those requests once Redis decides again.
--
-- KEYS[i]       the bucket of policy i (value: its TAT, µs on Redis's clock)
-- ARGV[4i-3]    seed: how long (µs) the bucket still had until full when the outage began, as
--               this gateway last heard from Redis; restores it if Redis lost its data
-- ARGV[4i-2]    advance: the shared time (µs) the requests this gateway admitted locally cost
-- ARGV[4i-1]    emission interval of the policy (µs)
-- ARGV[4i]      burst of the policy
-- returns       the number of buckets written
--
-- new TAT = max(TAT, now + seed) + advance, at most now + interval × burst: the seed is the same
-- figure for every gateway (hence max, not a sum), the advances are each gateway's own (summed
-- as each gateway adds its own), and no shared bucket is ever further ahead than an empty one.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local written = 0
for i = 1, #KEYS do
  local seed = tonumber(ARGV[4 * i - 3])
  local advance = tonumber(ARGV[4 * i - 2])
  local interval = tonumber(ARGV[4 * i - 1])
  local burst = tonumber(ARGV[4 * i])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now + seed then tat = now + seed end
  tat = tat + advance
  local cap = now + interval * burst
  if tat > cap then tat = cap end
  if tat > now then
    redis.call('SET', KEYS[i], string.format('%.0f', tat), 'PX', math.max(1, math.ceil((tat - now) / 1000)))
    written = written + 1
  end
end
return written
