-- Writes back what a gateway's `local` fallback admitted while Redis was unreachable (see
-- fallback-ledger.ts), so that the shared budget counts those requests once Redis decides again.
--
-- KEYS[i]       the bucket of policy i (value: its TAT, µs on Redis's clock)
-- ARGV[4i-3]    seed: how long (µs) the bucket still had until full when the outage began, as
--               this gateway last heard from Redis; restores it if Redis lost its data
-- ARGV[4i-2]    advance: the shared time (µs) the requests this gateway admitted locally cost
-- ARGV[4i-1]    emission interval of the policy (µs)
-- ARGV[4i]      burst of the policy
-- then, as in gcra.lua, the gateway's call log, its fence, this call's number and the number
-- acknowledged (KEYS[n+1], KEYS[n+2], ARGV[4n+1], ARGV[4n+2]): a batch whose answer was lost is
-- applied at most once, and the gateway learns whether it was
-- returns       per bucket, ms until it is full again (0: full), as gcra.lua's reset; { -1 }
--               when the call is fenced
--
-- new TAT = max(TAT, now + seed) + advance, at most now + interval × burst: the seed is the same
-- figure for every gateway (hence max, not a sum), the advances are each gateway's own (summed
-- as each gateway adds its own), and no shared bucket is ever further ahead than an empty one.
local n, log, seq = #KEYS, nil, nil
if #ARGV < 4 * n then
  n = n - 2
  log, seq = KEYS[n + 1], tonumber(ARGV[4 * n + 1])
  if seq <= (tonumber(redis.call('GET', KEYS[n + 2])) or 0) then return { -1 } end
  -- Logged before the buckets: a write refused (out of memory) then leaves nothing applied.
  redis.call('ZADD', log, seq, seq)
  redis.call('ZREMRANGEBYSCORE', log, '-inf', ARGV[4 * n + 2])
  redis.call('PEXPIRE', log, 86400000)
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local full_in = {}
for i = 1, n do
  local seed = tonumber(ARGV[4 * i - 3])
  local advance = tonumber(ARGV[4 * i - 2])
  local interval = tonumber(ARGV[4 * i - 1])
  local burst = tonumber(ARGV[4 * i])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now + seed then tat = now + seed end
  tat = tat + advance
  local cap = now + interval * burst
  if tat > cap then tat = cap end
  full_in[i] = 0
  if tat > now then
    full_in[i] = math.ceil((tat - now) / 1000)
    redis.call('SET', KEYS[i], string.format('%.0f', tat), 'PX', full_in[i])
  end
end
return full_in
