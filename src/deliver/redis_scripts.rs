//! The Lua scripts of the Redis delivery queue ([`super::redis`]): each state change of a
//! message is one script, so it is atomic and one round trip.
//!
//! Every key lives under one base, `{prefix}{deliver}`, so all of them share one hash tag
//! and one Redis Cluster slot: a script may touch any of them, including keys it builds
//! from a stored route or id (`base .. ':msg:' .. id`), which therefore need not all be
//! passed in `KEYS` (the first key routes the script to the slot's master).
//!
//! A message is a hash `base:msg:<id>`: `data` (the `Message` as JSON, dropped once
//! delivered), `route`, `status`, `attempts`, `token` (the stream entry id of the lease in
//! progress), `err` (last error), `next_at` (Unix ms of the next attempt while waiting).
//! Due messages are entries (`id` = the delivery id) of the stream `base:stream`, read
//! through one consumer group; waiting retries are in the ZSET `base:delayed` (score = due
//! Unix ms); dead letters in `base:dead` and `base:dead:<route>` (score = when they died);
//! `base:depth:<route>` counts the route's messages not yet delivered or dead.

use redis::Script;

/// Creates the consumer group (and the stream), from the stream's first entry so that
/// messages accepted before it existed are read too. An existing group is fine.
/// KEYS: stream. ARGV: group.
const ENSURE_GROUP: &str = r#"
local ok = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
if type(ok) == 'table' and ok.err and not string.find(ok.err, 'BUSYGROUP') then
  return redis.error_reply(ok.err)
end
return 1
"#;

/// Stores a message as queued and due now, unless its route is full (0). An id already
/// known is left as it is (1): accepting twice must not queue twice.
/// KEYS: msg, stream, depth. ARGV: id, route, data, max_queued.
const ACCEPT: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
if tonumber(redis.call('GET', KEYS[3]) or '0') >= tonumber(ARGV[4]) then return 0 end
redis.call('HSET', KEYS[1], 'data', ARGV[3], 'route', ARGV[2], 'status', 'queued', 'attempts', 0)
redis.call('XADD', KEYS[2], '*', 'id', ARGV[1])
redis.call('INCR', KEYS[3])
return 1
"#;

/// Leases the next message to a worker: first due retries go back into the stream (a
/// bounded batch), then an entry leased longer than the claim time is taken over, else a
/// new entry is read. Entries whose message is gone, or not in the state the entry implies
/// (a leftover of some earlier failure), are acknowledged, deleted and skipped. Returns
/// `{entry id, attempt, data}` or nil. Non-blocking: scripts cannot wait.
/// KEYS: stream, delayed. ARGV: base, group, worker, now ms, claim after ms, batch.
const NEXT: &str = r#"
local stream, delayed = KEYS[1], KEYS[2]
local base, group, worker = ARGV[1], ARGV[2], ARGV[3]
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', ARGV[4], 'LIMIT', 0, tonumber(ARGV[6]))
for _, id in ipairs(due) do
  if redis.call('HGET', base .. ':msg:' .. id, 'status') == 'queued' then
    redis.call('XADD', stream, '*', 'id', id)
  end
  redis.call('ZREM', delayed, id)
end

local function take(entry, claimed)
  local eid, fields = entry[1], entry[2]
  local id = fields and fields[2]
  if id then
    local key = base .. ':msg:' .. id
    local r = redis.call('HMGET', key, 'status', 'token', 'data')
    local live
    if claimed then
      live = r[1] == 'delivering' and r[2] == eid
    else
      live = r[1] == 'queued'
    end
    if live and r[3] then
      local n = redis.call('HINCRBY', key, 'attempts', 1)
      redis.call('HSET', key, 'status', 'delivering', 'token', eid)
      redis.call('HDEL', key, 'next_at')
      return {eid, n, r[3]}
    end
  end
  redis.call('XACK', stream, group, eid)
  redis.call('XDEL', stream, eid)
  return nil
end

-- COUNT 1 scans at most 10 pending entries per call: follow the cursor (bounded).
local cursor = '0-0'
for _ = 1, 100 do
  local r = redis.call('XAUTOCLAIM', stream, group, worker, ARGV[5], cursor, 'COUNT', 1)
  cursor = r[1]
  for _, e in ipairs(r[2]) do
    if e then
      local got = take(e, true)
      if got then return got end
    end
  end
  if cursor == '0-0' then break end
end

for _ = 1, 10 do
  local r = redis.call('XREADGROUP', 'GROUP', group, worker, 'COUNT', 1, 'STREAMS', stream, '>')
  local e = r and r[1] and r[1][2][1]
  if not e then return false end
  local got = take(e, false)
  if got then return got end
end
return false
"#;

/// Whether the lease (token, attempt) still holds the message: a lease taken over by
/// another worker, or finished, changes nothing.
macro_rules! held {
    () => {
        r#"
local h = redis.call('HMGET', KEYS[1], 'status', 'token', 'attempts')
if h[1] ~= 'delivering' or h[2] ~= ARGV[2] or h[3] ~= ARGV[3] then return 0 end
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[2])
"#
    };
}

/// Delivered: out of the stream and the depth; the record stays for a while, without its
/// body. KEYS: msg, stream, depth. ARGV: group, token, attempt, keep ms.
const DELIVERED: &str = concat!(
    held!(),
    r#"
redis.call('HSET', KEYS[1], 'status', 'delivered')
redis.call('HDEL', KEYS[1], 'data', 'token', 'err', 'next_at')
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if redis.call('DECR', KEYS[3]) <= 0 then redis.call('DEL', KEYS[3]) end
return 1
"#
);

/// Failed, due again at `at`: out of the stream, into the delayed set (still counted).
/// KEYS: msg, stream, delayed. ARGV: group, token, attempt, at, error, id.
const RETRY_LATER: &str = concat!(
    held!(),
    r#"
redis.call('HSET', KEYS[1], 'status', 'queued', 'err', ARGV[5], 'next_at', ARGV[4])
redis.call('HDEL', KEYS[1], 'token')
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[6])
return 1
"#
);

/// Failed for good: out of the stream and the depth, into the dead sets.
/// KEYS: msg, stream, depth, dead, dead of the route. ARGV: group, token, attempt, error,
/// now ms, id.
const DEAD: &str = concat!(
    held!(),
    r#"
redis.call('HSET', KEYS[1], 'status', 'dead', 'err', ARGV[4])
redis.call('HDEL', KEYS[1], 'token', 'next_at')
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[6])
redis.call('ZADD', KEYS[5], ARGV[5], ARGV[6])
if redis.call('DECR', KEYS[3]) <= 0 then redis.call('DEL', KEYS[3]) end
return 1
"#
);

/// A record's fields. KEYS: msg.
const STATUS: &str = r#"
return redis.call('HMGET', KEYS[1], 'route', 'status', 'attempts', 'err', 'next_at')
"#;

/// The newest dead letters of a dead set: `{id, route, status, attempts, err, next_at}`
/// each. KEYS: dead set. ARGV: base, limit (at least 1).
const DEAD_LETTERS: &str = r#"
local out = {}
for _, id in ipairs(redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)) do
  local r = redis.call('HMGET', ARGV[1] .. ':msg:' .. id, 'route', 'status', 'attempts', 'err', 'next_at')
  if r[1] then
    table.insert(out, {id, r[1], r[2], r[3], r[4], r[5]})
  end
end
return out
"#;

/// Dead → queued and due now, attempts starting over (the last error is kept for the
/// record); 0 if not dead. KEYS: msg, stream, dead. ARGV: base, id.
const REQUEUE: &str = r#"
local r = redis.call('HMGET', KEYS[1], 'status', 'route')
if r[1] ~= 'dead' then return 0 end
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('ZREM', ARGV[1] .. ':dead:' .. r[2], ARGV[2])
redis.call('HSET', KEYS[1], 'status', 'queued', 'attempts', 0)
redis.call('HDEL', KEYS[1], 'next_at', 'token')
redis.call('XADD', KEYS[2], '*', 'id', ARGV[2])
redis.call('INCR', ARGV[1] .. ':depth:' .. r[2])
return 1
"#;

/// Forgets a dead letter; 0 if not dead. KEYS: msg, dead. ARGV: base, id.
const REMOVE: &str = r#"
local r = redis.call('HMGET', KEYS[1], 'status', 'route')
if r[1] ~= 'dead' then return 0 end
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREM', ARGV[1] .. ':dead:' .. r[2], ARGV[2])
redis.call('DEL', KEYS[1])
return 1
"#;

/// A route's depth and dead count. KEYS: depth, dead of the route.
const DEPTH: &str = r#"
return {tonumber(redis.call('GET', KEYS[1]) or '0'), redis.call('ZCARD', KEYS[2])}
"#;

/// Forgets consumers of the group that hold no pending entry and were idle longer than
/// ARGV[2] ms: the names of replicas that stopped or restarted (a worker's name carries its
/// host and process id, so every restart adds new ones). A consumer with pending entries is
/// kept: deleting it would drop them from the group's pending list, where `XAUTOCLAIM`
/// finds them. At most ARGV[3] a call. KEYS: stream. ARGV: group, idle ms, max. Returns
/// how many were removed.
const PRUNE: &str = r#"
local list = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if type(list) ~= 'table' or list.err then return 0 end
local idle_ms, max, n = tonumber(ARGV[2]), tonumber(ARGV[3]), 0
for _, c in ipairs(list) do
  if n >= max then break end
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if tonumber(f['pending']) == 0 and tonumber(f['idle']) > idle_ms then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    n = n + 1
  end
end
return n
"#;

/// The scripts, hashed once.
pub struct Scripts {
    pub ensure_group: Script,
    pub accept: Script,
    pub next: Script,
    pub delivered: Script,
    pub retry_later: Script,
    pub dead: Script,
    pub status: Script,
    pub dead_letters: Script,
    pub requeue: Script,
    pub remove: Script,
    pub depth: Script,
    pub prune: Script,
}

impl Scripts {
    pub fn new() -> Scripts {
        Scripts {
            ensure_group: Script::new(ENSURE_GROUP),
            accept: Script::new(ACCEPT),
            next: Script::new(NEXT),
            delivered: Script::new(DELIVERED),
            retry_later: Script::new(RETRY_LATER),
            dead: Script::new(DEAD),
            status: Script::new(STATUS),
            dead_letters: Script::new(DEAD_LETTERS),
            requeue: Script::new(REQUEUE),
            remove: Script::new(REMOVE),
            depth: Script::new(DEPTH),
            prune: Script::new(PRUNE),
        }
    }
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts::new()
    }
}
