-- Per-key limits of one API key, atomically (see limits.rs). KEYS: the GCRA cell (requests per
-- minute), the token bucket (hash b = balance, t = when), the leased slots (zset, score = lease
-- end). Time is Redis's own, so every replica agrees on it.
-- ARGV: op, rpm, tpm, max_concurrent, amount, lease_ms, slot ids...
-- Returns {admitted, refused_by (0 none, 1 max_concurrent, 2 rpm, 3 tpm), wait_ms,
--          rpm_remaining, rpm_until_full_ms, tpm_balance}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op = ARGV[1]
local rpm, tpm, conc = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local amount, lease = tonumber(ARGV[5]), tonumber(ARGV[6])

local function balance()
  local b = redis.call('HMGET', KEYS[2], 'b', 't')
  local bal, at = tonumber(b[1]), tonumber(b[2])
  if not bal then return tpm end
  return math.min(tpm, bal + math.max(0, now - at) * tpm / 60000)
end
local function store(bal)
  redis.call('HSET', KEYS[2], 'b', string.format('%.6f', bal), 't', string.format('%d', now))
  -- Kept until full again (a missing bucket reads as full).
  redis.call('PEXPIRE', KEYS[2], math.ceil((tpm - bal) * 60000 / tpm) + 1000)
end

if op == 'debit' then
  if tpm <= 0 then return {1, 0, 0, 0, 0, 0} end
  local bal = balance() - amount
  store(bal)
  return {1, 0, 0, 0, 0, math.floor(bal)}
elseif op == 'renew' then
  for i = 7, #ARGV do
    redis.call('ZADD', KEYS[3], 'XX', now + lease, ARGV[i])
  end
  redis.call('PEXPIRE', KEYS[3], lease * 2)
  return {1, 0, 0, 0, 0, 0}
elseif op == 'release' then
  redis.call('ZREM', KEYS[3], ARGV[7])
  return {1, 0, 0, 0, 0, 0}
elseif op == 'tokens' then
  if tpm <= 0 then return {1, 0, 0, 0, 0, 0} end
  local bal = balance()
  return {bal > 0 and 1 or 0, 0, 0, 0, 0, math.floor(bal)}
end

-- 'admit' (every limit) or 'request' (requests per minute only).
local full = op == 'admit'
if full and conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= conc then return {0, 1, 1000, 0, 0, 0} end
end
local rpm_remaining, rpm_full = 0, 0
if rpm > 0 then
  local period = 60000 / rpm
  local tat = tonumber(redis.call('GET', KEYS[1])) or now
  if tat < now then tat = now end
  local next_tat = tat + period
  -- Burst = the limit: at most a minute of cells ahead (a hair of slack for float sums).
  if next_tat - now > 60000 + 0.001 then
    return {0, 2, math.max(1, math.ceil(next_tat - now - 60000)), 0, math.ceil(tat - now), 0}
  end
  redis.call('SET', KEYS[1], string.format('%.3f', next_tat), 'PX', math.ceil(next_tat - now) + 1)
  rpm_remaining = math.floor((60000 - (next_tat - now)) / period + 0.000001)
  rpm_full = math.ceil(next_tat - now)
end
local tpm_balance = 0
if full and tpm > 0 then
  local bal = balance()
  if bal <= 0 then
    return {0, 3, math.ceil((1 - bal) * 60000 / tpm), rpm_remaining, rpm_full, math.floor(bal)}
  end
  bal = bal - amount
  store(bal)
  tpm_balance = math.floor(bal)
end
if full and conc > 0 then
  redis.call('ZADD', KEYS[3], now + lease, ARGV[7])
  redis.call('PEXPIRE', KEYS[3], lease * 2)
end
return {1, 0, 0, rpm_remaining, rpm_full, tpm_balance}
