"""The Lua scripts of `turnkit.sessions.redis_store`: each compare-and-set it makes, run atomically
in one round trip. See that module's docstring for the key layout they work on."""

from __future__ import annotations

from typing import Final

__all__ = [
    "APPEND_LOG",
    "EPOCH",
    "LAYOUT_ERROR",
    "LEASE_KEEP_MS",
    "PUT_RECORD",
    "RELEASE_LEASE",
    "RENEW_LEASE",
    "TRY_LEASE",
]

# The error a write script raises when the prefix holds another layout version (then that version).
LAYOUT_ERROR: Final = "TURNKITLAYOUT"
# Every write script first checks the layout version (and writes it into a fresh prefix).
CHECK_LAYOUT: Final = """
local layout = redis.call('GET', KEYS[1])
if layout ~= ARGV[1] then
  if layout then return redis.error_reply('TURNKITLAYOUT ' .. layout) end
  redis.call('SET', KEYS[1], ARGV[1])
end
"""
# A lease key holds `owner|expiry` (ms, by the server's clock) and outlives its expiry by
# `LEASE_KEEP_MS`, so an owner whose lease ran out but was not taken since can still renew it and
# write (its writes are fenced by the owner, which changes only when another turn takes the lease).
# A key of an older turnkit holds the bare owner, and counts as held until its PX expiry.
LEASE_HOLDER: Final = """
local function holder(key)
  local v = redis.call('GET', key)
  if not v then return nil, 0 end
  local sep = string.find(v, '|', 1, true)
  if not sep then return v, math.huge end
  return string.sub(v, 1, sep - 1), tonumber(string.sub(v, sep + 1))
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""
LEASE_KEEP_MS: Final = 600_000
# KEYS: layout, record, head (or the record again), session index (or the record again), lease (or
# the record again), required record (or the record again), the session's record index (or the record).
# ARGV: layout, expected rev, data, nonce, channel, head value ('' for none), session id, lease owner
# ('' for none), '1' when the required record must exist, the record's session ('' for none), the
# record id. The nonce makes a retried call exact: a write that landed but whose reply was lost reads
# as done. With a lease, the write is fenced: -1 unless the owner still holds it. With a required
# record (a new snapshot's parent), -2 unless that record exists.
PUT_RECORD: Final = (
    CHECK_LAYOUT
    + LEASE_HOLDER
    + """
local current = redis.call('HMGET', KEYS[2], 'rev', 'tok')
local rev = tonumber(current[1]) or 0
local expected = tonumber(ARGV[2])
if rev ~= expected then
  if rev == expected + 1 and current[2] == ARGV[4] then return 1 end
  return 0
end
local function given(i) return ARGV[i] ~= nil and ARGV[i] ~= '' end
if given(8) and holder(KEYS[5]) ~= ARGV[8] then return -1 end
if given(9) and redis.call('EXISTS', KEYS[6]) == 0 then return -2 end
redis.call('HSET', KEYS[2], 'rev', expected + 1, 'data', ARGV[3], 'tok', ARGV[4])
if given(10) then
  redis.call('HSET', KEYS[2], 'sess', ARGV[10])
  redis.call('SADD', KEYS[7], ARGV[11])
end
if given(6) then
  redis.call('SET', KEYS[3], ARGV[6])
  redis.call('ZADD', KEYS[4], 0, ARGV[7])
end
redis.call('PUBLISH', ARGV[5], KEYS[2])
return 1
"""
)
# KEYS: layout, log. ARGV: layout, start, retry flag, entries... On a retry, finding exactly these
# entries at `start` means the first try landed (or wrote what this one would have): success.
APPEND_LOG: Final = (
    CHECK_LAYOUT
    + """
local start = tonumber(ARGV[2])
local n = #ARGV - 3
local length = redis.call('LLEN', KEYS[2])
if length ~= start then
  if ARGV[3] ~= '1' or n == 0 or length < start + n then return 0 end
  local got = redis.call('LRANGE', KEYS[2], start, start + n - 1)
  for i = 1, n do
    if got[i] ~= ARGV[i + 3] then return 0 end
  end
  return 1
end
for i = 4, #ARGV, 1000 do
  redis.call('RPUSH', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
return 1
"""
)
# KEYS: lease. ARGV: owner, ttl in ms, keep in ms. Take a free or expired lease, or renew our own.
TRY_LEASE: Final = (
    LEASE_HOLDER
    + """
local now = now_ms()
local owner, expires = holder(KEYS[1])
if owner and owner ~= ARGV[1] and expires > now then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. (now + tonumber(ARGV[2])), 'PX', ARGV[2] + ARGV[3])
return 1
"""
)
# KEYS: lease. ARGV: owner, ttl in ms, keep in ms. Extend a lease only while the owner still holds it.
RENEW_LEASE: Final = (
    LEASE_HOLDER
    + """
local owner = holder(KEYS[1])
if owner ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. (now_ms() + tonumber(ARGV[2])), 'PX', ARGV[2] + ARGV[3])
return 1
"""
)
# KEYS: epoch. ARGV: a new random epoch, kept only if there is none (the data was never, or is no
# longer, there). Returns the epoch.
EPOCH: Final = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
"""
# KEYS: lease. ARGV: owner. Compare-and-delete: only the holder gives a lease up.
RELEASE_LEASE: Final = (
    LEASE_HOLDER
    + """
if holder(KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
)
