-- GCRA (generic cell rate algorithm) for one request against every policy that applies to it,
-- in one atomic step: either every policy admits the request and records it, or none records
-- it (a request refused by one policy does not use up the others).
--
-- KEYS[i]      the bucket of policy i; its value is the theoretical arrival time (TAT, µs)
-- ARGV[2i-1]   emission interval of policy i: one request is earned back every this many µs
-- ARGV[2i]     burst of policy i: requests admitted at once from an idle client
-- returns      { allowed (1|0), then per policy: remaining, reset ms, retry-after ms }
--   remaining    requests still admitted right after this one
--   reset        until the full burst is available again
--   retry-after  until this policy admits a request again (0 when it admitted this one)
--
-- With a call log (a gateway's numbered calls, redis-gcra.ts: a call whose answer is lost is then
-- counted once, here or in that gateway's fallback, never in both), after the policies:
-- KEYS[n+1]    the gateway's call log: the numbers of the admitting calls applied, not yet acknowledged
-- KEYS[n+2]    its fence: a call numbered up to it is refused unapplied (returns { -1 })
-- ARGV[2n+1]   this call's number
-- ARGV[2n+2]   the gateway has the answers of every call up to this number (dropped from the log)
--
-- The clock is Redis's own (TIME), so gateways with skewed clocks share one timeline. Scripts
-- that call TIME and then write are replicated by effects (the default since Redis 5).
local n, log, seq = #KEYS, nil, nil
if #ARGV < 2 * n then
  n = n - 2
  log, seq = KEYS[n + 1], tonumber(ARGV[2 * n + 1])
  if seq <= (tonumber(redis.call('GET', KEYS[n + 2])) or 0) then return { -1 } end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = { 1 }
local tats = {}
local new_tats = {}
-- Floating-point division of whole multiples can land a hair under an integer.
local EPSILON = 1e-9

for i = 1, n do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local new_tat = tat + interval
  -- The request is admitted if, after it, the bucket is at most `burst` intervals ahead of now:
  -- now - (new_tat - interval * burst), written so that an idle bucket (tat = now) gives
  -- exactly interval * (burst - 1) whatever the rounding of large floating-point times.
  local ahead = (now - tat) + interval * (burst - 1)
  tats[i] = tat
  if ahead < 0 then
    out[1] = 0
    out[3 * i - 1] = 0
    out[3 * i] = math.ceil((tat - now) / 1000)
    out[3 * i + 1] = math.ceil(-ahead / 1000)
  else
    new_tats[i] = new_tat
    out[3 * i - 1] = math.floor(ahead / interval + EPSILON)
    out[3 * i] = math.ceil((new_tat - now) / 1000)
    out[3 * i + 1] = 0
  end
end

if out[1] == 1 then
  if log then
    -- Logged before the buckets: a write refused (out of memory) then leaves nothing applied.
    redis.call('ZADD', log, seq, seq)
    -- A log just created lives a day from its last renewal (below): one left by a gateway gone goes.
    if redis.call('ZCARD', log) == 1 then redis.call('PEXPIRE', log, 86400000) end
  end
  for i = 1, n do
    -- %.0f: tostring() would print 1.7e+15 and lose the microseconds.
    redis.call('SET', KEYS[i], string.format('%.0f', new_tats[i]), 'PX', math.max(1, out[3 * i]))
  end
else
  -- Nothing was recorded: the policies that would have admitted the request still have it.
  for i = 1, n do
    if new_tats[i] then
      out[3 * i - 1] = out[3 * i - 1] + 1
      out[3 * i] = math.ceil((tats[i] - now) / 1000)
    end
  end
end
-- Every 32nd call (each write costs Redis ~1 µs): answered calls leave the log, its day is renewed.
if log and seq % 32 == 0 then
  redis.call('ZREMRANGEBYSCORE', log, '-inf', ARGV[2 * n + 2])
  redis.call('PEXPIRE', log, 86400000)
end
return out
