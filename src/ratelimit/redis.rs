//! The Redis backend: every applicable limit of a request in one atomic Lua script (GCRA on
//! Redis's own clock, so replicas agree whatever their clocks say), one round trip.

use super::quota::{Quota, QuotaVerdict, Window};
use super::{Limit, StoreError, Verdict};
use crate::config::gateway::{OnStoreError, RedisStore};
use crate::state::redis::{hash_tag, RedisPool};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// ARGV[1]: the number of limits, n. KEYS: one per limit, then one per quota. ARGV after
/// the first: per limit, its interval (µs) and burst; then per quota, its limit and when
/// its counter may expire (Unix ms). Returns per limit: admitted (0/1), remaining, wait
/// (µs); then per quota: admitted (0/1), its count with this request when admitted.
/// State is written only when every limit and every quota admits; each limit's key
/// expires once its state is indistinguishable from a fresh one, each quota's counter
/// after its period.
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
local out, tats, all = {}, {}, true
for i = 1, n do
  local interval = tonumber(ARGV[2 * i])
  local burst = tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local late = tat - now - interval * (burst - 1)
  if late > 0 then
    all = false
    out[#out + 1] = 0; out[#out + 1] = 0; out[#out + 1] = late
  else
    local new = tat + interval
    tats[i] = new
    out[#out + 1] = 1
    out[#out + 1] = math.floor((now + interval * burst - new) / interval)
    out[#out + 1] = new - now
  end
end
local q = 2 * n + 2
local used = {}
for j = 1, #KEYS - n do
  local count = tonumber(redis.call('GET', KEYS[n + j])) or 0
  used[j] = count
  if count >= tonumber(ARGV[q + 2 * (j - 1)]) then all = false end
end
if all then
  for i = 1, n do
    redis.call('SET', KEYS[i], string.format('%.0f', tats[i]), 'PX', math.ceil((tats[i] - now) / 1000) + 1)
  end
  for j = 1, #KEYS - n do
    used[j] = redis.call('INCR', KEYS[n + j])
    redis.call('PEXPIREAT', KEYS[n + j], ARGV[q + 2 * (j - 1) + 1])
  end
end
for j = 1, #KEYS - n do
  out[#out + 1] = (used[j] < tonumber(ARGV[q + 2 * (j - 1)]) or all) and 1 or 0
  out[#out + 1] = used[j]
end
return out
"#;

/// One client's limits and quotas of a request (keys that share a cluster slot).
type Group<'a> = (Vec<(&'a Limit, &'a str)>, Vec<(&'a Quota, &'a str)>);

/// Undoes one admitted request: KEYS are limit keys then quota keys, ARGV[1] the number of
/// limits, then each limit's interval (µs). A limit's arrival time moves back one interval
/// (its expiry kept); a quota's counter goes down by one.
const REFUND: &str = r#"
local n = tonumber(ARGV[1])
for i = 1, n do
  local tat = tonumber(redis.call('GET', KEYS[i]))
  local ttl = redis.call('PTTL', KEYS[i])
  if tat and ttl > 0 then
    redis.call('SET', KEYS[i], string.format('%.0f', tat - tonumber(ARGV[1 + i])), 'PX', ttl)
  end
end
for j = n + 1, #KEYS do
  if redis.call('EXISTS', KEYS[j]) == 1 then redis.call('DECR', KEYS[j]) end
end
return 1
"#;

/// A quota's counter outlives its period by this much: replicas whose clocks differ a
/// little still find it.
const QUOTA_GRACE: Duration = Duration::from_secs(3600);

/// Rate limits on the shared store's Redis connections.
pub struct RedisBackend {
    pool: Arc<RedisPool>,
    pub on_error: OnStoreError,
    prefix: String,
    script: redis::Script,
    refund: redis::Script,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("pool", &self.pool)
            .field("on_error", &self.on_error)
            .finish()
    }
}

impl RedisBackend {
    pub fn new(pool: Arc<RedisPool>, cfg: &RedisStore) -> RedisBackend {
        RedisBackend {
            pool,
            on_error: cfg.on_error,
            prefix: cfg.prefix.clone(),
            script: redis::Script::new(SCRIPT),
            refund: redis::Script::new(REFUND),
        }
    }

    /// The Redis key of `limit` for client key `key`: readable, the same on every replica,
    /// and tagged with the client key, so that all of one client's keys share a Redis
    /// Cluster slot ([`hash_tag`]; a long or odd key becomes its hash there).
    pub fn key_name(&self, limit: &Limit, key: &str) -> String {
        format!("{}{}:{}", self.prefix, limit.name, hash_tag(key))
    }

    /// The Redis key of `quota`'s counter in period `window` for client key `key`.
    pub fn quota_key(&self, quota: &Quota, window: &Window, key: &str) -> String {
        format!(
            "{}{}:{}:{}",
            self.prefix,
            quota.name,
            window.id,
            hash_tag(key)
        )
    }

    /// Every limit and quota of a request: all admit and are counted, or none is. One
    /// script run decides them all, except on a Redis Cluster when the request's keys
    /// belong to different clients (a route limit by address beside a plan by consumer):
    /// their keys live in different slots, so each client's run in turn, and if one
    /// refuses, what the others counted is given back.
    pub async fn check_with(
        &self,
        items: &[(&Limit, &str)],
        quotas: &[(&Quota, &str)],
        now: SystemTime,
    ) -> Result<(Vec<Verdict>, Vec<QuotaVerdict>), StoreError> {
        let mut clients: Vec<&str> = items
            .iter()
            .map(|(_, k)| *k)
            .chain(quotas.iter().map(|(_, k)| *k))
            .collect();
        clients.sort_unstable();
        clients.dedup();
        if clients.len() <= 1 || !self.pool.is_cluster() {
            return self.run(items, quotas, now).await;
        }
        let mut verdicts = vec![None; items.len()];
        let mut counted = vec![None; quotas.len()];
        let mut taken: Vec<Group> = Vec::new();
        let mut all = true;
        for client in clients {
            let (li, lim): (Vec<usize>, Vec<(&Limit, &str)>) = items
                .iter()
                .enumerate()
                .filter(|(_, (_, k))| *k == client)
                .map(|(i, x)| (i, *x))
                .unzip();
            let (qi, quo): (Vec<usize>, Vec<(&Quota, &str)>) = quotas
                .iter()
                .enumerate()
                .filter(|(_, (_, k))| *k == client)
                .map(|(i, x)| (i, *x))
                .unzip();
            let (v, c) = self.run(&lim, &quo, now).await?;
            let admitted = v.iter().all(|v| v.admitted) && c.iter().all(|c| c.admitted);
            for (i, v) in li.into_iter().zip(v) {
                verdicts[i] = Some(v);
            }
            for (i, c) in qi.into_iter().zip(c) {
                counted[i] = Some(c);
            }
            if !admitted {
                all = false;
                break;
            }
            taken.push((lim, quo));
        }
        if !all {
            for (lim, quo) in &taken {
                // Best effort: a refund that fails leaves a client charged for one
                // request it did not make, never admits one it should not.
                let _ = self.refund(lim, quo, now).await;
            }
        }
        // Groups after a refusal were not asked: they neither admitted nor counted.
        let verdicts = verdicts
            .into_iter()
            .map(|v| {
                v.unwrap_or(Verdict {
                    admitted: true,
                    remaining: 0,
                    wait: Duration::ZERO,
                })
            })
            .collect();
        let counted = counted
            .into_iter()
            .zip(quotas)
            .map(|(c, (q, _))| {
                c.unwrap_or(QuotaVerdict {
                    admitted: true,
                    limit: q.requests,
                    used: 0,
                    until_reset: Window::of(q.per, now).until_reset(now),
                })
            })
            .collect();
        Ok((verdicts, counted))
    }

    /// One script run over keys that share a slot (or any keys on one server).
    async fn run(
        &self,
        items: &[(&Limit, &str)],
        quotas: &[(&Quota, &str)],
        now: SystemTime,
    ) -> Result<(Vec<Verdict>, Vec<QuotaVerdict>), StoreError> {
        let mut call = self.script.prepare_invoke();
        call.arg(items.len());
        for (limit, key) in items {
            call.key(self.key_name(limit, key));
        }
        for (limit, _) in items {
            let interval = limit.spec.interval().as_micros().max(1) as u64;
            call.arg(interval).arg(limit.spec.burst);
        }
        let windows: Vec<Window> = quotas.iter().map(|(q, _)| Window::of(q.per, now)).collect();
        for ((quota, key), window) in quotas.iter().zip(&windows) {
            call.key(self.quota_key(quota, window, key));
            let expire = (window.resets_at + QUOTA_GRACE)
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            call.arg(quota.requests).arg(expire);
        }
        let out: Vec<i64> = self.pool.invoke(&call).await?;
        if out.len() != 3 * items.len() + 2 * quotas.len() {
            return Err(StoreError::Failed(format!(
                "unexpected script answer of {} values",
                out.len()
            )));
        }
        let (limits, counts) = out.split_at(3 * items.len());
        let verdicts = limits
            .chunks_exact(3)
            .map(|c| Verdict {
                admitted: c[0] == 1,
                remaining: c[1].max(0) as u64,
                wait: Duration::from_micros(c[2].max(0) as u64),
            })
            .collect();
        let counted = counts
            .chunks_exact(2)
            .zip(quotas.iter().zip(&windows))
            .map(|(c, ((q, _), w))| QuotaVerdict {
                admitted: c[0] == 1,
                limit: q.requests,
                used: c[1].max(0) as u64,
                until_reset: w.until_reset(now),
            })
            .collect();
        Ok((verdicts, counted))
    }

    /// Gives back one request to limits and quotas that counted it.
    async fn refund(
        &self,
        items: &[(&Limit, &str)],
        quotas: &[(&Quota, &str)],
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let mut call = self.refund.prepare_invoke();
        call.arg(items.len());
        for (limit, key) in items {
            call.key(self.key_name(limit, key));
            call.arg(limit.spec.interval().as_micros().max(1) as u64);
        }
        for (quota, key) in quotas {
            call.key(self.quota_key(quota, &Window::of(quota.per, now), key));
        }
        self.pool.invoke::<i64>(&call).await.map(|_| ())
    }

    /// What each quota counted for `key` in `windows` (one read, nothing counted).
    pub async fn quota_counts(
        &self,
        quotas: &[Arc<Quota>],
        windows: &[Window],
        key: &str,
    ) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::with_capacity(quotas.len());
        for (q, w) in quotas.iter().zip(windows) {
            let raw = self.pool.get(&self.quota_key(q, w, key)).await?;
            let n = raw.and_then(|b| std::str::from_utf8(&b).ok()?.parse().ok());
            out.push(n.unwrap_or(0));
        }
        Ok(out)
    }
}
