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
-- The clock is Redis's own (TIME), so gateways with skewed clocks share one timeline. Scripts
-- that call TIME and then write are replicated by effects (the default since Redis 5).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = #KEYS
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
return out
